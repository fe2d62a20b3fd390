"""Typed, validated views of the ml_collections config (configs/base.py documents every field).

Modules take these frozen dataclasses, not the mutable ConfigDict: they are hashable (Flax module
attributes, jit static args) and every value in them has been checked. A bad value raises
ConfigError naming the field (e.g. `ssa.slope`) and the values that are allowed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

STRATEGIES = ('vanilla', 'ssa', 'constant', 'yarn', 'frequency', 'pts')
TERMS = ('none', 'pos', 'tok', 'pos+tok')
SLOPES = ('exp_exp', 'sigmoid', 'linear')
BACKENDS = ('auto', 'reference', 'xla', 'cudnn', 'splash')
FAMILIES = ('gpt2', 'neox', 'llama')
# Initial slope s0 = exp(-exp(1.5)) (the public release's GPT-2 init); theta_init=None gives it for
# every parametrisation so that slope ablations start from the same function.
DEFAULT_THETA_EXP_EXP = 1.5


class ConfigError(ValueError):
  """A config field has a value the code cannot use; the message names the field."""


def _choice(field: str, value: Any, allowed) -> Any:
  if value not in allowed:
    raise ConfigError(f'{field}={value!r} is not valid; expected one of {list(allowed)}.')
  return value


def _positive(field: str, value, integer=True):
  ok = isinstance(value, int) if integer else isinstance(value, (int, float))
  if not ok or isinstance(value, bool) or value <= 0:
    kind = 'a positive integer' if integer else 'a positive number'
    raise ConfigError(f'{field}={value!r} is not valid; expected {kind}.')
  return value


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Transformer shape and layout (see configs/base.py:model_config for the meaning of fields)."""
  family: str = 'gpt2'
  vocab_size: int = 50257
  vocab_pad_multiple: int = 128
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 4
  head_dim: int = 16
  d_ff: int = 256
  max_len: int = 256
  norm: str = 'layernorm'
  norm_eps: float = 1e-5
  pos_emb: str = 'learned'
  rotary_pct: float = 1.0
  rope_theta: float = 10000.0
  mlp: str = 'gelu'
  gelu_approximate: bool = True
  parallel_residual: bool = False
  use_bias: bool = True
  tie_embeddings: bool = True
  init_std: float = 0.02
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  remat: bool = False
  preset: str = ''

  @property
  def padded_vocab_size(self) -> int:
    m = self.vocab_pad_multiple
    return -(-self.vocab_size // m) * m

  @property
  def rotary_dim(self) -> int:
    """Number of rotated dims per head (even), 0 when pos_emb != 'rope'."""
    if self.pos_emb != 'rope':
      return 0
    return int(self.head_dim * self.rotary_pct) // 2 * 2

  def validate(self) -> 'ModelConfig':
    _choice('model.family', self.family, FAMILIES)
    for f in ('vocab_size', 'vocab_pad_multiple', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads',
              'head_dim', 'd_ff', 'max_len'):
      _positive(f'model.{f}', getattr(self, f))
    if self.n_heads % self.n_kv_heads:
      raise ConfigError(f'model.n_kv_heads={self.n_kv_heads} must divide model.n_heads='
                        f'{self.n_heads} (grouped-query attention).')
    _choice('model.norm', self.norm, ('layernorm', 'rmsnorm'))
    _positive('model.norm_eps', self.norm_eps, integer=False)
    _choice('model.pos_emb', self.pos_emb, ('learned', 'rope', 'none'))
    if not 0.0 < self.rotary_pct <= 1.0:
      raise ConfigError(f'model.rotary_pct={self.rotary_pct!r} must be in (0, 1].')
    if self.pos_emb == 'rope' and self.rotary_dim == 0:
      raise ConfigError(f'model.rotary_pct={self.rotary_pct} x model.head_dim={self.head_dim} '
                        'rotates no dimension; expected at least 2.')
    _choice('model.mlp', self.mlp, ('gelu', 'swiglu'))
    _choice('model.dtype', self.dtype, ('float32', 'bfloat16', 'float16'))
    _choice('model.param_dtype', self.param_dtype, ('float32', 'bfloat16'))
    _positive('model.init_std', self.init_std, integer=False)
    return self


@dataclasses.dataclass(frozen=True)
class SSAConfig:
  """Selective Self-Attention switches (see configs/base.py:ssa_config and SSA_SPEC §1.4)."""
  strategy: str = 'ssa'
  q: str = 'pos+tok'
  k: str = 'none'
  v: str = 'tok'
  combine: str = 'add'
  slope: str = 'exp_exp'
  theta_init: Optional[float] = None
  linear_min_tau: Optional[float] = None
  granularity: str = 'head'
  weight_sharing: bool = True
  phi: str = 'gelu'
  position_reset_at_eos: bool = False
  yarn_train_len: int = 1024
  yarn_context_len: int = 1024
  backend: str = 'auto'

  def validate(self) -> 'SSAConfig':
    _choice('ssa.strategy', self.strategy, STRATEGIES)
    for e in ('q', 'k', 'v'):
      _choice(f'ssa.{e}', getattr(self, e), TERMS)
    _choice('ssa.combine', self.combine, ('add', 'mul'))
    _choice('ssa.slope', self.slope, SLOPES)
    _choice('ssa.granularity', self.granularity, ('head', 'layer'))
    _choice('ssa.phi', self.phi, ('gelu', 'identity'))
    _choice('ssa.backend', self.backend, BACKENDS)
    if not isinstance(self.weight_sharing, bool):
      raise ConfigError(f'ssa.weight_sharing={self.weight_sharing!r}; expected True or False.')
    if self.slope == 'linear' and self.strategy == 'ssa' and self.uses_position_term:
      if self.linear_min_tau is None:
        raise ConfigError('ssa.slope=linear leaves the slope unconstrained, so tau can reach 0 or '
                          'below: set ssa.linear_min_tau to the clamp bound (a number > 0, e.g. '
                          '0.05).')
    if self.linear_min_tau is not None:
      _positive('ssa.linear_min_tau', self.linear_min_tau, integer=False)
    if (self.slope == 'exp_exp' or self.strategy == 'pts') and self.theta_init is not None:
      if self.theta_init > 4.5:
        raise ConfigError(f'ssa.theta_init={self.theta_init} with the exp_exp slope: '
                          'exp(-exp(theta)) underflows in float32 above ~4.6 and theta stops '
                          'learning; expected theta_init <= 4.5.')
    _positive('ssa.yarn_train_len', self.yarn_train_len)
    _positive('ssa.yarn_context_len', self.yarn_context_len)
    if self.strategy == 'ssa' and self.q == self.k == self.v == 'none':
      raise ConfigError("ssa.strategy='ssa' with ssa.q, ssa.k and ssa.v all 'none' scales nothing; "
                        "use ssa.strategy='vanilla' for that.")
    return self

  @property
  def uses_position_term(self) -> bool:
    return self.strategy == 'pts' or (
        self.strategy == 'ssa' and any('pos' in getattr(self, e) for e in 'qkv'))

  def resolved_theta_init(self) -> float:
    """theta at init; None means the value whose slope equals exp(-exp(1.5)) for this slope."""
    if self.theta_init is not None:
      return float(self.theta_init)
    s0 = math.exp(-math.exp(DEFAULT_THETA_EXP_EXP))
    if self.strategy == 'pts' or self.slope == 'exp_exp':
      return DEFAULT_THETA_EXP_EXP
    if self.slope == 'sigmoid':
      return math.log(s0 / (1.0 - s0))
    return s0  # linear


# config.model fields that only the training loop reads (not part of the model's ModelConfig).
TRAIN_ONLY_MODEL_FIELDS = ('init_from',)


def model_config(config) -> ModelConfig:
  """ModelConfig from config.model (a ConfigDict or mapping); unknown fields raise ConfigError."""
  values = dict(config.items()) if hasattr(config, 'items') else dict(config)
  for f in TRAIN_ONLY_MODEL_FIELDS:
    values.pop(f, None)
  return _build(ModelConfig, values, 'model').validate()


def ssa_config(config) -> SSAConfig:
  """SSAConfig from config.ssa (a ConfigDict or mapping); unknown fields raise ConfigError."""
  return _build(SSAConfig, config, 'ssa').validate()


def _build(cls, cd, prefix):
  values = dict(cd.items()) if hasattr(cd, 'items') else dict(cd)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ConfigError(f'Unknown field(s) {[f"{prefix}.{u}" for u in unknown]}; '
                      f'expected fields of {prefix}: {sorted(names)}.')
  return cls(**values)


# ------------------------------------------------------------------ dotted overrides (--set)


def parse_overrides(items) -> dict:
  """['optim.lr=1e-3', ...] -> {'optim.lr': 0.001}: values are Python literals, else strings
  (the last value of a key wins); an item without '=' raises ValueError naming it."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in items or ():
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'--set {item!r}: expected key=value.')
    try:
      out[key.strip()] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key.strip()] = value
  return out


def apply_overrides(config, overrides):
  """Sets each dotted field of the mapping `overrides` in the ConfigDict `config` (in place) and
  returns it; a field the config does not have raises ValueError naming it."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      if p not in node:
        raise ValueError(f'Override {key}={value!r}: the config has no field {key!r}.')
      node = node[p]
    if leaf not in node:
      raise ValueError(f'Override {key}={value!r}: the config has no field {key!r}.')
    with node.ignore_type():  # placeholders (None) take a value; ints where floats are expected
      node[leaf] = value
  return config
