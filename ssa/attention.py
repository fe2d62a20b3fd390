"""Selective Self-Attention: temperature functions and the attention layer (SSA_SPEC §1).

Per head h, with a causal mask M,

    SSA(X) = softmax( (tau_q * Q)(tau_k * K)^T / sqrt(d_h) + M ) (tau_v * V)

where each tau is one float32 scalar per token (and per head). The layer computes the taus, scales
q, k and v by them, and calls ONE attention kernel (ssa/kernels.py): no T x T matrix is needed.

Temperature of one embedding e in {q, k, v} (strategy 'ssa'):

    tau_pos(n)  = 1 + s(theta) * log(n)        n = 1-based absolute position of the token
    tau_tok(x)  = tanh( u^T phi(x W) )          W = W_e of this layer, head h (weight sharing),
                                                or ONE new D x (H*d_h) matrix per layer shared by
                                                the q, k, v token terms (no sharing; a key/value
                                                head sums u^T phi over its group of query heads)
    tau         = tau_pos + tau_tok             combine='add'  (a missing term counts as 1 / 0)
    tau         = tau_pos * (1 + tau_tok)       combine='mul'

s(theta) = exp(-exp(theta)) | sigmoid(theta) | theta ('linear', tau then clamped to >=
ssa.linear_min_tau). With weight sharing the token term reads the layer's own projection of the
token (x W_e + b_e, before rotary embedding). u starts at 0, so tau_tok = 0 at init and SSA with a
negligible slope is the identity on a pretrained model.

Strategy baselines (they scale the query only): 'constant' tau = c (learned, init 1), 'yarn'
tau = 0.1 ln(T/T_train) + 1 (fixed, T = ssa.yarn_context_len), 'frequency' tau = 1 + tanh(a z + b)
with z the token's standardised unigram log-frequency (table in the 'constants' collection) and a,
b learned (init 0), 'pts' = the public release: position term only on q, exp_exp, one theta per
layer, so logits become logit * (1 + exp(-exp(theta)) log n).

Parameters: theta and u have one entry per head (granularity 'head') or one shared by the heads of
the layer ('layer'). All temperature parameters live in submodules named tau_q / tau_k / tau_v
(TEMPERATURE_PREFIX), which is how the optimizer and the parameter report find them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa import kernels
from ssa.config_lib import ModelConfig, SSAConfig

TEMPERATURE_PREFIX = 'tau_'
Partitioned = nn.with_logical_partitioning


@dataclasses.dataclass(frozen=True)
class TemperatureSpec:
  """How the temperature of one embedding (q, k or v) is computed."""
  kind: str                 # 'ssa' | 'constant' | 'yarn' | 'frequency'
  terms: str = 'pos+tok'    # for kind 'ssa': 'pos' | 'tok' | 'pos+tok'
  slope: str = 'exp_exp'
  theta_init: float = 1.5
  min_tau: Optional[float] = None
  granularity: str = 'head'
  combine: str = 'add'
  weight_sharing: bool = True
  phi: str = 'gelu'
  yarn_factor: float = 1.0


def temperature_specs(ssa: SSAConfig) -> dict[str, TemperatureSpec]:
  """The temperature of each scaled embedding ('q', 'k', 'v') under this config; absent = 1."""
  if ssa.strategy == 'vanilla':
    return {}
  if ssa.strategy == 'pts':
    return {'q': TemperatureSpec('ssa', terms='pos', slope='exp_exp',
                                 theta_init=ssa.resolved_theta_init(), granularity='layer')}
  if ssa.strategy == 'constant':
    return {'q': TemperatureSpec('constant', granularity=ssa.granularity)}
  if ssa.strategy == 'frequency':
    return {'q': TemperatureSpec('frequency', granularity=ssa.granularity)}
  if ssa.strategy == 'yarn':
    factor = 0.1 * math.log(max(ssa.yarn_context_len / ssa.yarn_train_len, 1.0)) + 1.0
    return {'q': TemperatureSpec('yarn', yarn_factor=factor)}
  specs = {}
  for e in ('q', 'k', 'v'):
    terms = getattr(ssa, e)
    if terms != 'none':
      specs[e] = TemperatureSpec(
          'ssa', terms=terms, slope=ssa.slope, theta_init=ssa.resolved_theta_init(),
          min_tau=ssa.linear_min_tau if ssa.slope == 'linear' else None,
          granularity=ssa.granularity, combine=ssa.combine, weight_sharing=ssa.weight_sharing,
          phi=ssa.phi)
  return specs


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
  """Standardised unigram log-frequencies z[v] for the 'frequency' strategy.

  z = (log(count + 1) - mean) / std over the vocabulary (add-one smoothing; tokens never seen get
  the smallest value). Load the result into variables['constants']['token_log_freq'].
  """
  counts = np.asarray(counts, dtype=np.float64)
  if counts.ndim != 1 or counts.size > vocab_size:
    raise ValueError(f'counts must be a vector of at most {vocab_size} entries, got shape '
                     f'{counts.shape}.')
  full = np.zeros(vocab_size)
  full[:counts.size] = counts
  logf = np.log(full + 1.0)
  return ((logf - logf.mean()) / (logf.std() + 1e-8)).astype(np.float32)


class Temperature(nn.Module):
  """tau [B, T, H] (float32) of one embedding of one layer; see the module docstring."""
  spec: TemperatureSpec
  n_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, feat_BTFD, n_BT, log_freq_BT=None):
    """feat_BTFD: float32 token features for the token term, F = n_heads * G (G > 1 when the
    features come from the layer's new shared matrix and this embedding has fewer heads)."""
    spec, H = self.spec, self.n_heads
    B, T = n_BT.shape
    nh = H if spec.granularity == 'head' else 1
    axes = ('heads',) if nh == H else (None,)

    def per_head(name, init, shape, axes_):
      p = self.param(name, Partitioned(init, axes_), shape, jnp.float32)
      return jnp.broadcast_to(p, (H,) + shape[1:])

    if spec.kind == 'yarn':
      return jnp.full((B, T, H), spec.yarn_factor, jnp.float32)
    if spec.kind == 'constant':
      c_H = per_head('c', nn.initializers.ones, (nh,), axes)
      return jnp.broadcast_to(c_H, (B, T, H))
    if spec.kind == 'frequency':
      a_H = per_head('a', nn.initializers.zeros, (nh,), axes)
      b_H = per_head('b', nn.initializers.zeros, (nh,), axes)
      if log_freq_BT is None:
        raise ValueError("The 'frequency' strategy needs the token log-frequency table.")
      return 1.0 + jnp.tanh(a_H * log_freq_BT[..., None].astype(jnp.float32) + b_H)
    if spec.kind != 'ssa':
      raise ValueError(f'Unknown temperature kind {spec.kind!r}.')

    tau_BTH = jnp.ones((B, T, H), jnp.float32)
    if 'pos' in spec.terms:
      theta_H = per_head('theta', nn.initializers.constant(spec.theta_init), (nh,), axes)
      log_n_BT = jnp.log(n_BT.astype(jnp.float32))
      tau_BTH = 1.0 + slope(theta_H, spec.slope) * log_n_BT[..., None]
    if 'tok' in spec.terms:
      F = feat_BTFD.shape[2]
      G = F // H
      nf = F if spec.granularity == 'head' else 1
      u = self.param('u', Partitioned(nn.initializers.zeros, (axes[0], 'head_dim')),
                     (nf, self.head_dim), jnp.float32)
      u_FD = jnp.broadcast_to(u, (F, self.head_dim))
      h_BTFD = nn.gelu(feat_BTFD, approximate=False) if spec.phi == 'gelu' else feat_BTFD
      f_BTF = jnp.einsum('BTFD,FD->BTF', h_BTFD, u_FD)
      tok_BTH = jnp.tanh(f_BTF.reshape(B, T, H, G).sum(-1))
      tau_BTH = tau_BTH + tok_BTH if spec.combine == 'add' else tau_BTH * (1.0 + tok_BTH)
    if spec.min_tau is not None:
      tau_BTH = jnp.maximum(tau_BTH, spec.min_tau)
    return tau_BTH


class Attention(nn.Module):
  """Multi-head / grouped-query causal self-attention with SSA temperatures and a kv-cache.

  Call arguments:
    x_BTD: input.
    index_BT: absolute 0-based position of each token in its sequence (kv-cache slot in decoding).
    n_BT: 1-based position used by the temperature position terms (index + 1, or the position
      inside the packed document when ssa.position_reset_at_eos).
    rope_pos_BT: positions fed to the rotary embedding (ignored unless model.pos_emb == 'rope').
    segment_ids_BT: optional packed-document ids (training / scoring only).
    log_freq_BT: per-token standardised log-frequency ('frequency' strategy only).
    decode: read and write the kv-cache (collection 'cache').
    capture: use the reference kernel and sow probabilities in 'intermediates'.
    logit_scaling: compute SSA by scaling the T x T logits (the spec's formula, for verification).
  """
  cfg: ModelConfig
  ssa: SSAConfig

  @nn.compact
  def __call__(self, x_BTD, index_BT, n_BT, rope_pos_BT, segment_ids_BT=None, log_freq_BT=None,
               decode=False, capture=False, logit_scaling=False):
    cfg = self.cfg
    H, K, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    init = nn.initializers.normal(cfg.init_std)

    def proj(name, heads, head_axis):
      return nn.DenseGeneral(
          (heads, D), use_bias=cfg.use_bias, dtype=dtype, param_dtype=pdtype, name=name,
          kernel_init=Partitioned(init, ('embed', head_axis, 'head_dim')),
          bias_init=Partitioned(nn.initializers.zeros, (head_axis, 'head_dim')))(x_BTD)

    raw = {'q': proj('q_proj', H, 'heads'), 'k': proj('k_proj', K, 'kv_heads'),
           'v': proj('v_proj', K, 'kv_heads')}

    # Temperatures, float32, one scalar per token and head. Token-term features: the layer's
    # own projection (weight sharing) or ONE new D x (H*D_h) matrix per layer shared by q, k, v.
    specs = temperature_specs(self.ssa)
    shared_feat = None
    if any(s.kind == 'ssa' and 'tok' in s.terms and not s.weight_sharing for s in specs.values()):
      w_DHK = self.param(TEMPERATURE_PREFIX + 'w', Partitioned(init, ('embed', 'heads', 'head_dim')),
                         (cfg.d_model, H, D), jnp.float32)
      shared_feat = jnp.einsum('BTD,DHK->BTHK', x_BTD.astype(jnp.float32), w_DHK)
    taus = {}
    for e, spec in specs.items():
      feat = raw[e].astype(jnp.float32) if shared_feat is None else shared_feat
      taus[e] = Temperature(spec, H if e == 'q' else K, D, name=TEMPERATURE_PREFIX + e)(
          feat, n_BT, log_freq_BT)
      self.sow('intermediates', f'temperature_{e}', taus[e])

    q, k, v = raw['q'], raw['k'], raw['v']
    if cfg.pos_emb == 'rope':
      q = apply_rope(q, rope_pos_BT, cfg.rotary_dim, cfg.rope_theta)
      k = apply_rope(k, rope_pos_BT, cfg.rotary_dim, cfg.rope_theta)

    if logit_scaling:  # verification path: unscaled q, k, v, temperatures on the logits matrix
      if decode:
        raise ValueError('logit_scaling is a verification path without kv-cache decoding.')
      out_BTHD = logit_scaled_attention(q, k, v, taus, segment_ids_BT)
    else:
      q, k, v = (_scale(t, taus.get(e)) for e, t in (('q', q), ('k', k), ('v', v)))
      mask = None
      if decode:
        if segment_ids_BT is not None:
          raise ValueError('segment_ids are not supported in kv-cache decoding.')
        k, v, mask = self._update_cache(k, v, index_BT)
      backend = 'reference' if capture else kernels.resolve_backend(self.ssa.backend, dtype)
      out = kernels.attention(q, k, v, backend=backend, segment_ids=segment_ids_BT, mask=mask,
                              return_probs=capture)
      if capture:
        out, probs_BHTS = out
        self.sow('intermediates', 'attention_probs', probs_BHTS)
      out_BTHD = out
    return nn.DenseGeneral(
        cfg.d_model, axis=(-2, -1), use_bias=cfg.use_bias, dtype=dtype, param_dtype=pdtype,
        name='o_proj', kernel_init=Partitioned(init, ('heads', 'head_dim', 'embed')),
        bias_init=Partitioned(nn.initializers.zeros, ('embed',)))(out_BTHD.astype(dtype))

  def _update_cache(self, k_BTKD, v_BTKD, index_BT):
    """Write this step's (pre-scaled) keys/values at their absolute slots; mask = slots <= index.

    The cache length is fixed by the token array the cache was initialised with
    (ssa.model.init_cache); decoding past it is not checked inside jit.
    """
    initialised = self.has_variable('cache', 'k')
    k_var = self.variable('cache', 'k', jnp.zeros, k_BTKD.shape, k_BTKD.dtype)
    v_var = self.variable('cache', 'v', jnp.zeros, v_BTKD.shape, v_BTKD.dtype)
    if not initialised:  # init call: shapes only
      return k_BTKD, v_BTKD, kernels.make_mask(None, k_BTKD.shape[1])
    start = index_BT[0, 0]
    k_var.value = jax.lax.dynamic_update_slice(k_var.value, k_BTKD.astype(k_var.value.dtype),
                                               (0, start, 0, 0))
    v_var.value = jax.lax.dynamic_update_slice(v_var.value, v_BTKD.astype(v_var.value.dtype),
                                               (0, start, 0, 0))
    S = k_var.value.shape[1]
    mask_B1TS = (jnp.arange(S)[None, None, None, :] <= index_BT[:, None, :, None])
    return k_var.value, v_var.value, mask_B1TS


def _scale(t_BTHD, tau_BTH):
  """t * tau (tau broadcast over the head dim), computed in float32, returned in t's dtype."""
  if tau_BTH is None:
    return t_BTHD
  return (t_BTHD.astype(jnp.float32) * tau_BTH[..., None]).astype(t_BTHD.dtype)


def logit_scaled_attention(q_BTHD, k_BTKD, v_BTKD, taus, segment_ids_BT=None):
  """The spec's formula applied literally: logits_ij * tau_q,i * tau_k,j; probs @ (tau_v * V).

  O(T^2) memory; used only to verify that pre-scaling q, k, v is the same computation.
  """
  B, T, H, D = q_BTHD.shape
  K = k_BTKD.shape[2]
  G = H // K
  k_BTHD, v_BTHD = jnp.repeat(k_BTKD, G, axis=2), jnp.repeat(v_BTKD, G, axis=2)
  logits_BHTS = jnp.einsum('BTHD,BSHD->BHTS', q_BTHD.astype(jnp.float32),
                           k_BTHD.astype(jnp.float32)) / math.sqrt(D)
  if 'q' in taus:
    logits_BHTS = logits_BHTS * jnp.swapaxes(taus['q'], 1, 2)[..., :, None]
  if 'k' in taus:
    logits_BHTS = logits_BHTS * jnp.repeat(jnp.swapaxes(taus['k'], 1, 2), G, 1)[..., None, :]
  mask = kernels.make_mask(segment_ids_BT, T)
  probs_BHTS = jax.nn.softmax(jnp.where(mask, logits_BHTS, -jnp.inf), axis=-1)
  v_BTHD = v_BTHD.astype(jnp.float32)
  if 'v' in taus:
    v_BTHD = v_BTHD * jnp.repeat(taus['v'], G, axis=2)[..., None]
  return jnp.einsum('BHTS,BSHD->BTHD', probs_BHTS, v_BTHD).astype(q_BTHD.dtype)


def apply_rope(x_BTHD, pos_BT, rotary_dim: int, base: float):
  """Rotary embedding on the first `rotary_dim` dims of each head (GPT-NeoX / HF Llama layout:
  the rotated dims are split in two halves, rotate_half style)."""
  half = rotary_dim // 2
  inv_freq = 1.0 / (base ** (np.arange(0, rotary_dim, 2, dtype=np.float32) / rotary_dim))
  ang_BTF = pos_BT.astype(jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(ang_BTF)[:, :, None, :], jnp.sin(ang_BTF)[:, :, None, :]
  x = x_BTHD.astype(jnp.float32)
  x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)
  return rotated.astype(x_BTHD.dtype)
