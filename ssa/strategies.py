"""Temperature strategies: ONE registered entry per value of `ssa.strategy` (docs/ssa.md §1.4).

An entry says everything the rest of the code asks about a strategy:

    specs(ssa)         which embeddings ('q', 'k', 'v') it scales and how: {e: TemperatureSpec};
                       an embedding left out has temperature 1. Specs carry the SSAConfig they
                       were derived from; no switch is declared again.
    temperature(...)   the function computing tau [B, T, H] of one embedding of one layer; it
                       creates its parameters inside the calling Temperature module (ssa/attention.py)
    check(ssa)         the cross-field checks of the ssa.* fields it reads (raise ConfigError
                       naming the field)
    token_table        None, or a data statistic the strategy needs: a function (unigram counts
                       of the train split, vocab size) -> per-token float32 table, stored in the
                       'constants' collection as TOKEN_TABLE and read by the temperature function

The model (ssa/attention.py, ssa/model.py), training (ssa/statistics.py), export
(ssa/convert/export.py) and the config checks (ssa/config_lib.py) ask `get(name)` for these;
no module outside this one tests a strategy's name.

Adding a baseline: write its temperature function and register one entry at the end of this file,
e.g. a learned per-layer constant on the keys,

    register(Strategy(
        'constant_k', 'tau_k = c (learned, init 1), the query and value unscaled',
        specs=lambda ssa: {'k': TemperatureSpec('constant_k', 'none', ssa)},
        temperature=_constant_temperature))

and add one row to tests/ssa_testlib.py VARIANTS; every model, export and equivalence test then
covers it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa.errors import ConfigError

# Name of the per-token table in variables['constants'] (strategies with a token_table).
TOKEN_TABLE = 'token_log_freq'
Partitioned = nn.with_logical_partitioning


@dataclasses.dataclass(frozen=True)
class TemperatureSpec:
  """How the temperature of one embedding is computed: the strategy whose `temperature`
  function computes it, the terms it uses (strategy 'ssa': 'pos' | 'tok' | 'pos+tok'), and the
  SSAConfig every other switch is read from."""
  strategy: str
  terms: str
  ssa: Any  # ssa.config_lib.SSAConfig (frozen, hashable)

  @property
  def own_features(self) -> bool:
    """True when the token term reads the layer's new shared matrix (no weight sharing)."""
    return 'tok' in self.terms and not self.ssa.weight_sharing


def _no_check(ssa) -> None:
  del ssa


@dataclasses.dataclass(frozen=True)
class Strategy:
  """One registered temperature strategy (see the module docstring)."""
  name: str
  doc: str
  specs: Callable[[Any], dict]
  temperature: Optional[Callable] = None
  check: Callable[[Any], None] = _no_check
  token_table: Optional[Callable[[np.ndarray, int], np.ndarray]] = None


_REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
  if strategy.name in _REGISTRY:
    raise ValueError(f'Temperature strategy {strategy.name!r} is registered twice.')
  _REGISTRY[strategy.name] = strategy
  return strategy


def names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get(name: str) -> Strategy:
  """The entry of `name`, or ConfigError naming ssa.strategy and the registered names."""
  if name not in _REGISTRY:
    raise ConfigError(f'ssa.strategy={name!r} is not valid; expected one of {list(_REGISTRY)}.')
  return _REGISTRY[name]


def temperature_specs(ssa) -> dict[str, TemperatureSpec]:
  """{embedding: TemperatureSpec} of this config (absent embeddings have temperature 1)."""
  return get(ssa.strategy).specs(ssa)


def token_table(ssa) -> Optional[Callable[[np.ndarray, int], np.ndarray]]:
  """The data statistic the strategy of `ssa` needs (see the module docstring), or None."""
  return get(ssa.strategy).token_table


# ----------------------------------------------------------------------------- building blocks

def slope(theta, kind: str):
  """s(theta): the log-n slope of the position term."""
  if kind == 'exp_exp':
    return jnp.exp(-jnp.exp(theta))
  if kind == 'sigmoid':
    return jax.nn.sigmoid(theta)
  if kind == 'linear':
    return theta
  raise ValueError(f'Unknown slope parametrisation {kind!r}.')


def log_frequency_table(counts, vocab_size: int) -> np.ndarray:
  """Standardised unigram log-frequencies z[v] (the 'frequency' strategy's token table).

  z = (log(count + 1) - mean) / std over the vocabulary (add-one smoothing; tokens never seen get
  the smallest value).
  """
  counts = np.asarray(counts, dtype=np.float64)
  if counts.ndim != 1 or counts.size > vocab_size:
    raise ValueError(f'counts must be a vector of at most {vocab_size} entries, got shape '
                     f'{counts.shape}.')
  full = np.zeros(vocab_size)
  full[:counts.size] = counts
  logf = np.log(full + 1.0)
  return ((logf - logf.mean()) / (logf.std() + 1e-8)).astype(np.float32)


# Initial slope s0 = exp(-exp(1.5)) (the public release's GPT-2 init); theta_init=None gives it for
# every parametrisation so that slope ablations start from the same function.
DEFAULT_THETA_EXP_EXP = 1.5
# Above this theta, exp(-exp(theta)) underflows in float32 and theta stops learning.
MAX_EXP_EXP_THETA = 4.5


def initial_theta(theta_init: Optional[float], slope_kind: str) -> float:
  """theta at init; None means the value whose slope equals exp(-exp(1.5)) for this slope."""
  if theta_init is not None:
    return float(theta_init)
  s0 = math.exp(-math.exp(DEFAULT_THETA_EXP_EXP))
  if slope_kind == 'exp_exp':
    return DEFAULT_THETA_EXP_EXP
  if slope_kind == 'sigmoid':
    return math.log(s0 / (1.0 - s0))
  return s0  # linear


def _per_head(mdl, name: str, init, granularity: str):
  """A parameter with one entry per head ('head') or one shared by the layer ('layer'),
  broadcast to [H]."""
  H = mdl.n_heads
  nh = H if granularity == 'head' else 1
  axes = ('heads',) if nh == H else (None,)
  p = mdl.param(name, Partitioned(init, axes), (nh,), jnp.float32)
  return jnp.broadcast_to(p, (H,))


def position_term(mdl, n_BT, *, slope_kind: str, theta_init: float, granularity: str):
  """1 + s(theta) log n  [B, T, H] (n = 1-based position)."""
  theta_H = _per_head(mdl, 'theta', nn.initializers.constant(theta_init), granularity)
  log_n_BT = jnp.log(n_BT.astype(jnp.float32))
  return 1.0 + slope(theta_H, slope_kind) * log_n_BT[..., None]


def token_term(mdl, feat_BTFD, *, phi: str, granularity: str):
  """tanh(u^T phi(features))  [B, T, H]; F = H * G feature heads, a head sums over its G."""
  B, T, F, _ = feat_BTFD.shape
  H = mdl.n_heads
  nf = F if granularity == 'head' else 1
  axis = 'heads' if granularity == 'head' else None
  u = mdl.param('u', Partitioned(nn.initializers.zeros, (axis, 'head_dim')),
                (nf, mdl.head_dim), jnp.float32)
  u_FD = jnp.broadcast_to(u, (F, mdl.head_dim))
  h_BTFD = nn.gelu(feat_BTFD, approximate=False) if phi == 'gelu' else feat_BTFD
  # u^T phi(.) per feature head as a multiply + reduce over D (one loop fusion on CPU; an einsum
  # here lowers to a batched dot over F that transposes [B, T, F, D] forward and backward), on
  # [B*T, F, D]: with B=1 XLA-CPU's backward (u's gradient, a sum over B and T) was 3-4x slower
  # on the 4-d shape (9.3 vs 2.6 ms at [1, 1024, 12, 64], README "Measured results")
  f_NF = jnp.sum(h_BTFD.reshape(B * T, F, -1) * u_FD, axis=-1)
  return jnp.tanh(f_NF.reshape(B, T, H, F // H).sum(-1))


# ----------------------------------------------------------------------------- temperature functions
# Each: (Temperature module, spec, token features [B,T,F,D] float32, n [B,T], token table
# values [B,T] or None) -> tau [B, T, H] float32.

def _ssa_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  del table_BT
  s = spec.ssa
  B, T = n_BT.shape
  tau_BTH = jnp.ones((B, T, mdl.n_heads), jnp.float32)
  if 'pos' in spec.terms:
    tau_BTH = position_term(mdl, n_BT, slope_kind=s.slope, theta_init=s.resolved_theta_init(),
                            granularity=s.granularity)
  if 'tok' in spec.terms:
    tok_BTH = token_term(mdl, feat_BTFD, phi=s.phi, granularity=s.granularity)
    tau_BTH = tau_BTH + tok_BTH if s.combine == 'add' else tau_BTH * (1.0 + tok_BTH)
  if s.slope == 'linear' and s.linear_min_tau is not None:
    tau_BTH = jnp.maximum(tau_BTH, s.linear_min_tau)
  return tau_BTH


def _pts_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  """The public release's position-only scaling: exp_exp slope, one theta per layer."""
  del feat_BTFD, table_BT
  return position_term(mdl, n_BT, slope_kind='exp_exp',
                       theta_init=initial_theta(spec.ssa.theta_init, 'exp_exp'),
                       granularity='layer')


def _constant_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  del feat_BTFD, table_BT
  c_H = _per_head(mdl, 'c', nn.initializers.ones, spec.ssa.granularity)
  return jnp.broadcast_to(c_H, n_BT.shape + (mdl.n_heads,))


def yarn_factor(ssa) -> float:
  """YaRN's attention temperature 0.1 ln(T / T_train) + 1 (1 when T <= T_train)."""
  return 0.1 * math.log(max(ssa.yarn_context_len / ssa.yarn_train_len, 1.0)) + 1.0


def _yarn_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  del feat_BTFD, table_BT
  return jnp.full(n_BT.shape + (mdl.n_heads,), yarn_factor(spec.ssa), jnp.float32)


def _frequency_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  del feat_BTFD, n_BT
  a_H = _per_head(mdl, 'a', nn.initializers.zeros, spec.ssa.granularity)
  b_H = _per_head(mdl, 'b', nn.initializers.zeros, spec.ssa.granularity)
  if table_BT is None:
    raise ValueError("The 'frequency' strategy needs the token log-frequency table.")
  return 1.0 + jnp.tanh(a_H * table_BT[..., None].astype(jnp.float32) + b_H)


# ----------------------------------------------------------------------------- field checks

def _check_ssa(s) -> None:
  if s.q == s.k == s.v == 'none':
    raise ConfigError("ssa.strategy='ssa' with ssa.q, ssa.k and ssa.v all 'none' scales nothing; "
                      "use ssa.strategy='vanilla' for that.")
  if s.slope == 'linear' and any('pos' in getattr(s, e) for e in 'qkv') and (
      s.linear_min_tau is None):
    raise ConfigError('ssa.slope=linear leaves the slope unconstrained, so tau can reach 0 or '
                      'below: set ssa.linear_min_tau to the clamp bound (a number > 0, e.g. '
                      '0.05).')


def _check_pts(s) -> None:
  if s.theta_init is not None and s.theta_init > MAX_EXP_EXP_THETA:
    raise ConfigError(f'ssa.theta_init={s.theta_init} with the exp_exp slope: '
                      'exp(-exp(theta)) underflows in float32 above ~4.6 and theta stops '
                      f'learning; expected theta_init <= {MAX_EXP_EXP_THETA}.')


def _ssa_specs(s) -> dict[str, TemperatureSpec]:
  return {e: TemperatureSpec('ssa', getattr(s, e), s) for e in ('q', 'k', 'v')
          if getattr(s, e) != 'none'}


# ----------------------------------------------------------------------------- the registry

register(Strategy('vanilla', 'no temperature (standard attention)', specs=lambda s: {}))
register(Strategy(
    'ssa', 'Selective Self-Attention: ssa.q / ssa.k / ssa.v terms (position, token or both), '
    'ssa.slope, ssa.combine, ssa.granularity, ssa.weight_sharing, ssa.phi',
    specs=_ssa_specs, temperature=_ssa_temperature, check=_check_ssa))
register(Strategy(
    'constant', 'tau_q = c, learned, init 1 (per head or per layer: ssa.granularity)',
    specs=lambda s: {'q': TemperatureSpec('constant', 'none', s)},
    temperature=_constant_temperature))
register(Strategy(
    'yarn', 'tau_q = 0.1 ln(ssa.yarn_context_len / ssa.yarn_train_len) + 1, fixed',
    specs=lambda s: {'q': TemperatureSpec('yarn', 'none', s)}, temperature=_yarn_temperature))
register(Strategy(
    'frequency', 'tau_q = 1 + tanh(a z + b), z = standardised unigram log-frequency of the token '
    '(counted on train batches), a and b learned (init 0)',
    specs=lambda s: {'q': TemperatureSpec('frequency', 'none', s)},
    temperature=_frequency_temperature, token_table=log_frequency_table))
register(Strategy(
    'pts', "the public release's position term on q only: exp_exp slope, one theta per layer",
    specs=lambda s: {'q': TemperatureSpec('pts', 'pos', s)}, temperature=_pts_temperature,
    check=_check_pts))
