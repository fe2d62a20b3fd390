"""Selective Self-Attention: temperature functions and the attention layer (docs/ssa.md §1).

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

Which embeddings a strategy scales and the temperature functions themselves (these formulas, and
the baselines constant / yarn / frequency / pts) are the registered entries of ssa/strategies.py;
this layer asks them for the specs and computes what they say.

Parameters: theta and u have one entry per head (granularity 'head') or one shared by the heads of
the layer ('layer'). All temperature parameters live in submodules named tau_q / tau_k / tau_v
(TEMPERATURE_PREFIX), which is how the optimizer and the parameter report find them.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa import kernels
from ssa import strategies
from ssa.config_lib import ModelConfig, SSAConfig

TEMPERATURE_PREFIX = 'tau_'
Partitioned = nn.with_logical_partitioning


class Temperature(nn.Module):
  """tau [B, T, H] (float32) of one embedding of one layer, computed by the temperature function
  of the spec's registered strategy (ssa/strategies.py), whose parameters live in this module."""
  spec: strategies.TemperatureSpec
  n_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, feat_BTFD, n_BT, token_table_BT=None):
    """feat_BTFD: float32 token features for the token term, F = n_heads * G (G > 1 when the
    features come from the layer's new shared matrix and this embedding has fewer heads)."""
    fn = strategies.get(self.spec.strategy).temperature
    return fn(self, self.spec, feat_BTFD, n_BT, token_table_BT)


class Attention(nn.Module):
  """Multi-head / grouped-query causal self-attention with SSA temperatures and a kv-cache.

  Call arguments:
    x_BTD: input.
    index_BT: absolute 0-based position of each token in its sequence (kv-cache slot in decoding).
    n_BT: 1-based position used by the temperature position terms (index + 1, or the position
      inside the packed document when ssa.position_reset_at_eos).
    rope_pos_BT: positions fed to the rotary embedding (ignored unless model.pos_emb == 'rope').
    segment_ids_BT: optional packed-document ids (training / scoring only).
    token_table_BT: per-token value of the strategy's token table (ssa/strategies.py; e.g. the
      standardised log-frequency of 'frequency'), or None.

  Attributes `decode` (read and write the kv-cache, collection 'cache') and `capture` (use the
  reference kernel and sow probabilities in 'intermediates') are static per call of the model.
  The attention itself is the method `mix`; tests verify it against the spec's logit-scaling
  formula by intercepting that method (tests/ssa_testlib.py), not through a call argument.
  """
  cfg: ModelConfig
  ssa: SSAConfig
  decode: bool = False
  capture: bool = False

  @nn.compact
  def __call__(self, x_BTD, index_BT, n_BT, rope_pos_BT, segment_ids_BT=None, token_table_BT=None):
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
    specs = strategies.temperature_specs(self.ssa)
    shared_feat = None
    if any(s.own_features for s in specs.values()):
      w_DHK = self.param(TEMPERATURE_PREFIX + 'w', Partitioned(init, ('embed', 'heads', 'head_dim')),
                         (cfg.d_model, H, D), jnp.float32)
      shared_feat = jnp.einsum('BTD,DHK->BTHK', x_BTD.astype(jnp.float32), w_DHK)
    taus = {}
    for e, spec in specs.items():
      feat = raw[e].astype(jnp.float32) if shared_feat is None else shared_feat
      taus[e] = Temperature(spec, H if e == 'q' else K, D, name=TEMPERATURE_PREFIX + e)(
          feat, n_BT, token_table_BT)
      self.sow('intermediates', f'temperature_{e}', taus[e])

    q, k, v = raw['q'], raw['k'], raw['v']
    if cfg.pos_emb == 'rope':
      q = apply_rope(q, rope_pos_BT, cfg.rotary_dim, cfg.rope_theta)
      k = apply_rope(k, rope_pos_BT, cfg.rotary_dim, cfg.rope_theta)

    if self.decode and segment_ids_BT is not None:
      raise ValueError('segment_ids are not supported in kv-cache decoding.')
    out_BTHD = self.mix(q, k, v, taus, segment_ids_BT, index_BT)
    return nn.DenseGeneral(
        cfg.d_model, axis=(-2, -1), use_bias=cfg.use_bias, dtype=dtype, param_dtype=pdtype,
        name='o_proj', kernel_init=Partitioned(init, ('heads', 'head_dim', 'embed')),
        bias_init=Partitioned(nn.initializers.zeros, ('embed',)))(out_BTHD.astype(dtype))

  def mix(self, q_BTHD, k_BTKD, v_BTKD, taus, segment_ids_BT, index_BT):
    """softmax((tau_q q)(tau_k k)^T / sqrt(d_h)) (tau_v v): scales q, k, v by their temperatures
    (float32) and calls one attention kernel (ssa/kernels.py), through the kv-cache when decoding."""
    q, k, v = (_scale(t, taus.get(e)) for e, t in (('q', q_BTHD), ('k', k_BTKD), ('v', v_BTKD)))
    q_positions = None
    if self.decode:
      k, v, q_positions = self._update_cache(k, v, index_BT)
    backend = ('reference' if self.capture else
               kernels.resolve_backend(self.ssa.backend, jnp.dtype(self.cfg.dtype),
                                       decode=self.decode))
    out = kernels.attention(q, k, v, backend=backend, segment_ids=segment_ids_BT,
                            q_positions=q_positions, return_probs=self.capture)
    if self.capture:
      out, probs_BHTS = out
      self.sow('intermediates', 'attention_probs', probs_BHTS)
    return out

  def _update_cache(self, k_BTKD, v_BTKD, index_BT):
    """Write this step's (pre-scaled) keys/values at their absolute slots; returns the cache's
    keys and values and the query positions (slot j is visible iff j <= position).

    The cache length is fixed by the token array the cache was initialised with
    (ssa.model.init_cache); decoding past it is not checked inside jit.
    """
    initialised = self.has_variable('cache', 'k')
    k_var = self.variable('cache', 'k', jnp.zeros, k_BTKD.shape, k_BTKD.dtype)
    v_var = self.variable('cache', 'v', jnp.zeros, v_BTKD.shape, v_BTKD.dtype)
    if not initialised:  # init call: shapes only (causal over the given tokens)
      return k_BTKD, v_BTKD, index_BT
    start = index_BT[0, 0]
    k_var.value = jax.lax.dynamic_update_slice(k_var.value, k_BTKD.astype(k_var.value.dtype),
                                               (0, start, 0, 0))
    v_var.value = jax.lax.dynamic_update_slice(v_var.value, v_BTKD.astype(v_var.value.dtype),
                                               (0, start, 0, 0))
    return k_var.value, v_var.value, index_BT


def _scale(t_BTHD, tau_BTH):
  """t * tau (tau broadcast over the head dim), computed in float32, returned in t's dtype."""
  if tau_BTH is None:
    return t_BTHD
  return (t_BTHD.astype(jnp.float32) * tau_BTH[..., None]).astype(t_BTHD.dtype)


def logit_scaled_attention(q_BTHD, k_BTKD, v_BTKD, taus, segment_ids_BT=None):
  """The spec's formula applied literally: logits_ij * tau_q,i * tau_k,j; probs @ (tau_v * V).

  O(T^2) memory; used only to verify that pre-scaling q, k, v is the same computation (tests put
  it in place of Attention.mix with flax's method interception, tests/ssa_testlib.py).
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
