"""The config's one declaration of the model and SSA fields, its typed views, and its one check.

    mcfg, scfg = validate(config, mesh)     # every field check; ConfigError names the field
    mcfg = model_config(config.model)       # ModelConfig (frozen, checked)
    scfg = ssa_config(config.ssa)           # SSAConfig (frozen, checked, incl. the strategy's own checks)

ModelConfig and SSAConfig below declare the fields of config.model and config.ssa (defaults and
meaning); configs/base.py builds those sections from them and declares the other sections.
Modules take these frozen dataclasses, not the mutable ConfigDict: they are hashable (Flax module
attributes, jit static args) and every value in them has been checked. A bad value raises
ConfigError naming the field (e.g. `ssa.slope`) and the values that are allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
from typing import Any, Optional

import ml_collections

import jax

from ssa import kernels
from ssa import sharding
from ssa import strategies
from ssa.errors import ConfigError

TERMS = ('none', 'pos', 'tok', 'pos+tok')
SLOPES = ('exp_exp', 'sigmoid', 'linear')
BACKENDS = ('auto',) + kernels.BACKENDS
FAMILIES = ('gpt2', 'neox', 'llama')
OPTIMIZERS = ('adamw', 'adam', 'sgd')
SCHEDULES = ('cosine', 'constant')
OPTIM_MODES = ('full', 'temperature_only')
DATA_SPLITS = ('process', 'global')
INIT_FROM_PREFIXES = ('hf:', 'gguf:', 'ssa:')
DEFAULT_THETA_EXP_EXP = strategies.DEFAULT_THETA_EXP_EXP

__all__ = ['ConfigError', 'ModelConfig', 'SSAConfig', 'model_config', 'ssa_config', 'validate',
           'config_dict', 'parse_overrides', 'apply_overrides']


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


def _optional(kind: type):
  """A field whose default is None but that takes a `kind` value (--config.x=value works)."""
  return dataclasses.field(default=None, metadata={'placeholder': kind})


# The two typed sections below are the ONE declaration of config.model and config.ssa: their
# defaults and comments are the fields' documentation, configs/base.py builds its ConfigDict
# sections from them (config_dict), and model_config / ssa_config read them back, checked.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Transformer shape and family switches (defaults = gpt2-tiny; presets in configs/presets.py)."""
  preset: str = ''               # name of the preset these values came from (informational)
  family: str = 'gpt2'           # 'gpt2' | 'neox' | 'llama': sets the block layout below via presets
  vocab_size: int = 50257        # tokenizer vocabulary size (logits are returned for exactly this many)
  vocab_pad_multiple: int = 128  # embedding table rows rounded up to a multiple of this (speed); 1 = off
  d_model: int = 64              # residual stream width D
  n_layers: int = 2              # number of Transformer blocks
  n_heads: int = 4               # query heads H
  n_kv_heads: int = 4            # key/value heads (< n_heads = grouped-query attention; must divide n_heads)
  head_dim: int = 16             # per-head width d_h
  d_ff: int = 256                # MLP hidden width
  max_len: int = 256             # maximum sequence length (learned position table size; kv-cache length)
  norm: str = 'layernorm'        # 'layernorm' | 'rmsnorm'
  norm_eps: float = 1e-5         # epsilon of the norms
  pos_emb: str = 'learned'       # 'learned' (absolute table) | 'rope' (rotary) | 'none'
  rotary_pct: float = 1.0        # fraction of head_dim that is rotated (Pythia: 0.25)
  rope_theta: float = 10000.0    # rotary base frequency
  mlp: str = 'gelu'              # 'gelu' (up, GELU, down) | 'swiglu' (gate*up, SiLU, down)
  gelu_approximate: bool = True  # tanh GELU (GPT-2 'gelu_new') if True, exact erf GELU (Pythia) if False
  parallel_residual: bool = False  # x + attn(ln1 x) + mlp(ln2 x) (GPT-NeoX) instead of sequential blocks
  use_bias: bool = True          # biases in attention and MLP projections (GPT-2, Pythia)
  tie_embeddings: bool = True    # output head = input embedding transposed
  init_std: float = 0.02         # std of the normal init of weights
  dtype: str = 'float32'         # compute dtype ('float32' | 'bfloat16'); temperatures are always float32
  param_dtype: str = 'float32'   # parameter storage dtype
  remat: bool = False            # rematerialise each block in the backward pass (memory for compute)

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
  """Selective Self-Attention switches (docs/ssa.md §1.4). Defaults = the paper's final SSA."""
  strategy: str = 'ssa'          # a strategy registered in ssa/strategies.py (strategies.names(); docs/ssa.md §1.4)
  # Fields from here to `phi` configure strategy='ssa' (pts uses q='pos', exp_exp, per layer, fixed).
  q: str = 'pos+tok'             # query temperature terms: 'none' | 'pos' | 'tok' | 'pos+tok'
  k: str = 'none'                # key temperature terms (ablation only): 'none' | 'pos' | 'tok' | 'pos+tok'
  v: str = 'tok'                 # value temperature terms: 'none' | 'pos' | 'tok' | 'pos+tok'
  combine: str = 'add'           # 'add': tau_pos + tanh(f) | 'mul': tau_pos * (1 + tanh(f))
  slope: str = 'exp_exp'         # log-n slope s(theta): 'exp_exp' exp(-exp(theta)) | 'sigmoid' | 'linear'
  theta_init: Optional[float] = _optional(float)      # initial theta; None = the value giving s = exp(-exp(1.5)) for every slope
  linear_min_tau: Optional[float] = _optional(float)  # slope='linear' only (required there): tau is clamped to >= this (> 0)
  granularity: str = 'head'      # 'head': theta and u per head | 'layer': one theta and one u per layer
  weight_sharing: bool = True    # token term reuses W_q / W_k / W_v (True) or one new D x (H*d_h) matrix per layer shared by q, k, v (False)
  phi: str = 'gelu'              # nonlinearity of the token term: 'gelu' | 'identity'
  position_reset_at_eos: bool = False  # n restarts at 1 at each packed-document boundary (needs segment_ids)
  yarn_train_len: int = 1024     # strategy='yarn': training context length T_train
  yarn_context_len: int = 1024   # strategy='yarn': target context length T; tau = 0.1 ln(T/T_train) + 1
  backend: str = 'auto'          # attention kernel: 'auto' (splash on TPU, cudnn for 16-bit GPU, else flash) | 'flash' | 'reference' | 'xla' | 'cudnn' | 'splash'

  def validate(self) -> 'SSAConfig':
    """The ssa.* field checks, then the checks of the strategy's registered entry."""
    entry = strategies.get(self.strategy)
    for e in ('q', 'k', 'v'):
      _choice(f'ssa.{e}', getattr(self, e), TERMS)
    _choice('ssa.combine', self.combine, ('add', 'mul'))
    _choice('ssa.slope', self.slope, SLOPES)
    _choice('ssa.granularity', self.granularity, ('head', 'layer'))
    _choice('ssa.phi', self.phi, ('gelu', 'identity'))
    _choice('ssa.backend', self.backend, BACKENDS)
    if not isinstance(self.weight_sharing, bool):
      raise ConfigError(f'ssa.weight_sharing={self.weight_sharing!r}; expected True or False.')
    if self.linear_min_tau is not None:
      _positive('ssa.linear_min_tau', self.linear_min_tau, integer=False)
    if self.slope == 'exp_exp' and self.theta_init is not None and (
        self.theta_init > strategies.MAX_EXP_EXP_THETA):
      raise ConfigError(f'ssa.theta_init={self.theta_init} with the exp_exp slope: '
                        'exp(-exp(theta)) underflows in float32 above ~4.6 and theta stops '
                        f'learning; expected theta_init <= {strategies.MAX_EXP_EXP_THETA}.')
    _positive('ssa.yarn_train_len', self.yarn_train_len)
    _positive('ssa.yarn_context_len', self.yarn_context_len)
    entry.check(self)
    return self

  def resolved_theta_init(self) -> float:
    """theta at init for ssa.slope; None means the value whose slope is exp(-exp(1.5))."""
    return strategies.initial_theta(self.theta_init, self.slope)


# config.model fields that only the training loop reads (not part of the model's ModelConfig).
TRAIN_ONLY_MODEL_FIELDS = ('init_from',)


def config_dict(cls) -> ml_collections.ConfigDict:
  """A ConfigDict section with the fields and defaults of the dataclass `cls` (fields whose
  default is None become placeholders of their declared type, settable from the command line)."""
  d = ml_collections.ConfigDict()
  for f in dataclasses.fields(cls):
    if 'placeholder' in f.metadata:
      d[f.name] = ml_collections.config_dict.placeholder(f.metadata['placeholder'])
    else:
      d[f.name] = f.default
  return d


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


# ------------------------------------------------------------------ the one validate


def validate(config, mesh: Optional[jax.sharding.Mesh] = None) -> tuple[ModelConfig, SSAConfig]:
  """Every check of a training config that needs no data and no parameters, in one place:
  the typed views (model, ssa and the strategy's own checks), train, init_from, the optimizer,
  the mesh rules and, given the mesh, how the batch splits over it. Raises ConfigError naming the
  field; returns (ModelConfig, SSAConfig)."""
  check_finite(config)
  mcfg, scfg = model_config(config.model), ssa_config(config.ssa)
  _check_train(config)
  _check_data(config.data)
  _check_checkpoint(config.checkpoint)
  _check_optim(config.optim, config.train.num_steps)
  rules = sharding.logical_rules(config.mesh)
  if mesh is not None:
    _check_batch(config, mesh, rules)
  return mcfg, scfg


def check_finite(config, prefix: str = '') -> None:
  """ConfigError naming the first float field (or element of a tuple field) that is NaN or
  infinite: no field of the project means anything at NaN/inf (lr, eps, theta_init, ...)."""
  for key, value in config.items():
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      check_finite(value, name + '.')
      continue
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
      if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f'{name}={value!r} is not a finite number; expected a finite value.')


def seed_field(field: str, value) -> int:
  """A seed: an integer in [0, 2**32 - 1] (the range grain and numpy accept)."""
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
    raise ConfigError(f'{field}={value!r} is not valid; expected an integer in [0, 2**32 - 1].')
  return value


def _nonnegative_int(field: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f'{field}={value!r} is not valid; expected an integer >= 0.')
  return value


def _check_train(config) -> None:
  t = config.train
  seed_field('seed', config.seed)
  _choice('train.data_split', t.data_split, DATA_SPLITS)
  ev = t.eval_every
  if ev is not None and (isinstance(ev, bool) or not isinstance(ev, int) or ev < -1):
    raise ConfigError(f'train.eval_every={ev!r} is not valid; expected an integer >= 0 '
                      '(0 = only at the end) or -1 (never).')
  for f in ('num_steps', 'log_every'):
    v = t[f]
    if not isinstance(v, int) or v < 1:
      raise ConfigError(f'train.{f}={v!r}; expected a positive integer.')
  n = t.get('summary_sample_tokens', 0)
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ConfigError(f'train.summary_sample_tokens={n!r}; expected an integer >= 0 (0 = no '
                      'sample in the end-of-run summary).')
  if config.data.seq_len > config.model.max_len and config.model.pos_emb == 'learned':
    raise ConfigError(f'data.seq_len={config.data.seq_len} exceeds model.max_len='
                      f'{config.model.max_len} (learned position table).')
  init_from = config.model.get('init_from', '') or ''
  if not isinstance(init_from, str) or (init_from and not any(
      init_from.startswith(p) and len(init_from) > len(p) for p in INIT_FROM_PREFIXES)):
    raise ConfigError(f'model.init_from={init_from!r} is not valid; expected \'\' '
                      "(random init), 'hf:PATH_OR_REPO', 'gguf:PATH' or 'ssa:DIR'.")
  if (jax.process_count() > 1 and config.data.eval_batches is None and
      t.eval_every is not None and t.eval_every >= 0):
    raise ConfigError('data.eval_batches=None with several processes: hosts could run '
                      'different numbers of eval steps and hang; set data.eval_batches.')


def _check_data(d) -> None:
  seed_field('data.seed', d.seed)
  _positive('data.batch_size', d.batch_size)
  _positive('data.seq_len', d.seq_len)
  _positive('data.num_threads', d.num_threads)
  if d.eval_batches is not None:  # 0 would log a loss of 0 and a perplexity of 1.0
    _positive('data.eval_batches', d.eval_batches)
  if d.num_epochs is not None:
    _positive('data.num_epochs', d.num_epochs)


def _check_checkpoint(k) -> None:
  _nonnegative_int('checkpoint.every', k.every)
  _nonnegative_int('checkpoint.keep', k.keep)
  for f in ('async_save', 'restore', 'fallback', 'overwrite'):
    if f in k and not isinstance(k[f], bool):
      raise ConfigError(f'checkpoint.{f}={k[f]!r}; expected True or False.')
  if k.get('allow_changes') and not isinstance(k.allow_changes, str):
    raise ConfigError(f'checkpoint.allow_changes={k.allow_changes!r}; expected a comma-separated '
                      "string of fields (e.g. 'optim.lr,data.batch_size') or '*'.")


ADAM_FAMILY = ('adam', 'adamw')


def _check_optim(o, num_steps: int) -> None:
  _choice('optim.mode', o.mode, OPTIM_MODES)
  _choice('optim.optimizer', o.optimizer, OPTIMIZERS)
  _choice('optim.tau_optimizer', o.tau_optimizer, OPTIMIZERS)
  decay_steps = o.decay_steps or num_steps
  for kind_field, lr_field in (('schedule', 'lr'), ('tau_schedule', 'tau_lr')):
    kind, lr = o[kind_field], o[lr_field]
    _choice(f'optim.{kind_field}', kind, SCHEDULES)
    if not isinstance(lr, (int, float)) or lr < 0:
      raise ConfigError(f'learning rate {lr!r} for optim.{kind_field}: expected a number >= 0.')
    warmup = int(o.warmup_steps or 0)
    if kind == 'cosine' and decay_steps <= warmup:
      raise ConfigError(f'optim.decay_steps (or train.num_steps)={decay_steps} must exceed '
                        f'optim.warmup_steps={warmup} for the cosine schedule.')
  if o.clip_norm and o.clip_norm < 0:
    raise ConfigError(f'optim.clip_norm={o.clip_norm!r}; expected a positive number, 0 or None.')
  adam = o.optimizer in ADAM_FAMILY or (o.temperature_group and o.tau_optimizer in ADAM_FAMILY)
  if adam:
    if not isinstance(o.eps, (int, float)) or o.eps <= 0:
      raise ConfigError(f'optim.eps={o.eps!r}: Adam divides by sqrt(v) + eps, and a parameter '
                        'whose gradient is 0 (e.g. an unused embedding row) then gets 0/0 = NaN; '
                        'expected eps > 0 (default 1e-8).')
    for f in ('b1', 'b2'):
      if not isinstance(o[f], (int, float)) or not 0.0 <= o[f] < 1.0:
        raise ConfigError(f'optim.{f}={o[f]!r} is not valid; expected a number in [0, 1).')
  for f in ('weight_decay', 'tau_weight_decay', 'min_lr_ratio'):
    if not isinstance(o[f], (int, float)) or o[f] < 0:
      raise ConfigError(f'optim.{f}={o[f]!r} is not valid; expected a number >= 0.')


def _check_batch(config, mesh, rules) -> None:
  """The global batch splits over the mesh's batch axes, the micro-batches and the processes."""
  b, m = config.data.batch_size, config.train.micro_batches
  if not isinstance(m, int) or m < 1:
    raise ConfigError(f'train.micro_batches={m!r}; expected a positive integer.')
  k = sharding.batch_divisor(mesh, rules)
  if b % (k * m):
    raise ConfigError(
        f'data.batch_size={b} is not divisible by the batch-sharding mesh axes '
        f'{dict(rules).get("batch")} (size {k}) x train.micro_batches={m} = {k * m}; each device '
        f'must hold a whole number of rows of every micro-batch. Mesh shape: {dict(mesh.shape)}.')
  if b % jax.process_count():
    raise ConfigError(f'data.batch_size={b} is not divisible by the number of JAX processes '
                      f'({jax.process_count()}).')


# ------------------------------------------------------------------ dotted overrides (--set)


def parse_overrides(items) -> dict:
  """['optim.lr=1e-3', ...] -> {'optim.lr': 0.001}: values are Python literals, else strings
  (the last value of a key wins); an item without '=' raises ValueError naming it."""
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


def all_fields(config, prefix: str = '') -> list[str]:
  """Every dotted leaf field name of the ConfigDict `config` ('optim.lr', ...)."""
  out = []
  for key, value in config.items():
    if hasattr(value, 'items'):
      out += all_fields(value, f'{prefix}{key}.')
    else:
      out.append(f'{prefix}{key}')
  return out


def unknown_field_error(config, key: str, what: str) -> ConfigError:
  """ConfigError for a field `key` the config does not have, naming the closest fields."""
  close = difflib.get_close_matches(key, all_fields(config), n=3, cutoff=0.6)
  hint = f'; did you mean {" or ".join(close)}?' if close else ''
  section = key.rpartition('.')[0]
  if not close and section and section in config:
    hint = f'; fields of {section}: {sorted(config[section].keys())}'
  return ConfigError(f'{what}: the config has no field {key!r}{hint}')


_BOOL_STRINGS = {'true': True, 'false': False, '1': True, '0': False}


def _coerce(key: str, value, kind: type):
  """`value` as the declared type `kind` of field `key` (ConfigError if it cannot be)."""
  if value is None or kind is type(None) or kind is None:
    return value
  if kind is bool:
    if isinstance(value, str) and value.lower() in _BOOL_STRINGS:
      return _BOOL_STRINGS[value.lower()]
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
  elif kind is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
  elif kind in (tuple, list):
    if isinstance(value, (tuple, list)):
      return kind(value)
  elif kind is str:
    if isinstance(value, str):
      return value
  else:
    return value
  raise ConfigError(f'--set {key}={value!r}: expected a value of type {kind.__name__} for '
                    f'{key}, got {type(value).__name__}.')


def apply_overrides(config, overrides):
  """Sets each dotted field of the mapping `overrides` in the ConfigDict `config` (in place) and
  returns it. Values are checked against the field's declared type the way --config.* flags
  are (an int where a float is declared is converted; 'true'/'false' strings set bool fields);
  an unknown field or a value of the wrong type raises ConfigError naming the field."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      if p not in node or not hasattr(node[p], 'items'):
        raise unknown_field_error(config, key, f'--set {key}={value!r}')
      node = node[p]
    if leaf not in node or hasattr(node[leaf], 'items'):
      raise unknown_field_error(config, key, f'--set {key}={value!r}')
    value = _coerce(key, value, node.get_type(leaf))
    with node.ignore_type():  # the type was checked above (placeholders: None -> value)
      node[leaf] = value
  return config
