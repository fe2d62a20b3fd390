"""Attention kernels behind one function, all taking PRE-SCALED q, k, v.

SSA multiplies q, k and v by per-token scalars (the temperatures, ssa/attention.py), so any standard
attention kernel computes it; no T x T matrix is materialised except by the `reference` backend,
which exists to return probabilities for statistics and plots.

    out_BTHD = attention(q_BTHD, k_BSKD, v_BSKD, backend=..., segment_ids=..., mask=...)

Shapes: B batch, T query length, S key length, H query heads, K key/value heads (K divides H:
grouped-query attention), D head dim. Masking is causal (query i sees keys j <= i) and, when
`segment_ids` [B, T] are given, restricted to the same packed document. For kv-cache decoding the
caller passes an explicit boolean `mask` [B, 1, T, S] instead (ssa/attention.py builds it from the
absolute positions).

Backends: `flash` (ssa/flash.py: blockwise online-softmax attention in pure JAX with a
recomputing custom VJP; O(T) memory, masks computed per block, GQA without repeating k/v; every
platform), `reference` (einsum + softmax in float32; can return probabilities), `xla`
(jax.nn.dot_product_attention, implementation='xla'; materialises [T, S] logits and, with
segment ids, a [B, 1, T, S] mask), `cudnn` (same API, implementation='cudnn', NVIDIA GPU only,
bf16/fp16), `splash` (Pallas splash attention, TPU only, imported lazily).
`auto` picks splash on TPU (flash when decoding with the kv-cache, which splash cannot), cudnn on
GPU for 16-bit dtypes, flash otherwise. A backend the platform lacks raises BackendError; nothing
is swapped silently.

For kv-cache decoding the caller passes `q_positions` [B, T] (the absolute positions of the
queries): key slot j is visible to query i iff j <= q_positions[i] (flash computes this per
block; the other backends get it as a [B, 1, T, S] mask).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from ssa import flash
from ssa.errors import ConfigError

BACKENDS = ('flash', 'reference', 'xla', 'cudnn', 'splash')


class BackendError(ConfigError):
  """The requested attention backend cannot run on this platform or with these arguments."""


def resolve_backend(backend: str, dtype, platform: Optional[str] = None,
                    decode: bool = False) -> str:
  """Concrete backend for `backend` ('auto' or a name) on `platform` (default: jax's default);
  decode: the call reads the kv-cache."""
  platform = platform or jax.default_backend()
  if backend == 'auto':
    if platform == 'tpu' and not decode:
      return 'splash'
    if platform == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
      return 'cudnn'
    return 'flash'
  if backend not in BACKENDS:
    raise BackendError(f'ssa.backend={backend!r} is not valid; expected one of '
                       f"{['auto', *BACKENDS]}.")
  if backend == 'cudnn' and platform != 'gpu':
    raise BackendError(f"ssa.backend='cudnn' needs an NVIDIA GPU, but JAX's platform is "
                       f"{platform!r}; use 'xla' or 'auto'.")
  if backend == 'splash' and platform != 'tpu':
    raise BackendError(f"ssa.backend='splash' needs a TPU, but JAX's platform is {platform!r}; "
                       "use 'xla' or 'auto'.")
  return backend


def make_mask(segment_ids_BT: Optional[jax.Array], T: int) -> jax.Array:
  """Boolean [B|1, 1, T, T] causal mask, restricted to equal segment ids when given."""
  causal_TT = jnp.tril(jnp.ones((T, T), dtype=jnp.bool_))
  if segment_ids_BT is None:
    return causal_TT[None, None]
  same_BTT = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  return (same_BTT & causal_TT)[:, None]


def attention(q_BTHD, k_BSKD, v_BSKD, *, backend: str = 'xla',
              segment_ids: Optional[jax.Array] = None, mask: Optional[jax.Array] = None,
              q_positions: Optional[jax.Array] = None, scale: Optional[float] = None,
              return_probs: bool = False):
  """Causal (segment-masked) multi-head attention of pre-scaled q, k, v.

  Args:
    q_BTHD, k_BSKD, v_BSKD: queries, keys, values (already multiplied by their temperatures).
    backend: a concrete backend name (see resolve_backend).
    segment_ids: optional [B, T] packed-document ids; attention never crosses documents.
    mask: optional explicit boolean mask [B, 1, T, S] (True = attend); replaces the
      causal/segment mask (not for flash).
    q_positions: optional [B, T] absolute query positions for kv-cache decoding: key slot j is
      visible iff j <= q_positions (replaces the causal mask; no segment ids).
    scale: logit scale, default 1/sqrt(D).
    return_probs: also return the probabilities [B, H, T, S] (reference backend only).

  Returns:
    out_BTHD, or (out_BTHD, probs_BHTS) when return_probs.
  """
  B, T, H, D = q_BTHD.shape
  K = k_BSKD.shape[2]
  if H % K:
    raise ValueError(f'{H} query heads are not a multiple of {K} key/value heads.')
  scale = D ** -0.5 if scale is None else scale
  if return_probs and backend != 'reference':
    raise BackendError(f'Attention probabilities are only returned by the reference backend, '
                       f'not {backend!r}.')
  S = k_BSKD.shape[1]
  if backend == 'flash':
    if mask is not None:
      raise BackendError('The flash backend computes its mask per block; pass q_positions '
                         '(kv-cache decoding) or segment_ids, not an explicit mask.')
    if q_positions is None:
      pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
      return flash.flash_attention(q_BTHD, k_BSKD, v_BSKD, q_pos_BT=pos, kv_pos_BS=pos,
                                   q_seg_BT=segment_ids, kv_seg_BS=segment_ids, scale=scale)
    kv = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    return flash.flash_attention(q_BTHD, k_BSKD, v_BSKD, q_pos_BT=q_positions, kv_pos_BS=kv,
                                 scale=scale)
  if q_positions is not None:
    mask = jnp.arange(S)[None, None, None, :] <= q_positions[:, None, :, None]
  if backend == 'reference':
    return _reference(q_BTHD, k_BSKD, v_BSKD, segment_ids, mask, scale, return_probs)
  if backend in ('xla', 'cudnn'):
    if mask is None:
      mask = None if segment_ids is None else make_mask(segment_ids, T)
      is_causal = True
    else:
      is_causal = False
    return jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, mask=mask, scale=scale,
                                        is_causal=is_causal, implementation=backend)
  if backend == 'splash':
    if mask is not None:
      raise BackendError("The splash backend has no explicit-mask (kv-cache decoding) path; "
                         "decode with ssa.backend='flash' (or auto).")
    return _splash(q_BTHD, k_BSKD, v_BSKD, segment_ids, scale)
  raise BackendError(f'Unknown attention backend {backend!r}; expected one of {list(BACKENDS)}.')


def _reference(q_BTHD, k_BSKD, v_BSKD, segment_ids, mask, scale, return_probs):
  B, T, H, D = q_BTHD.shape
  S, K = k_BSKD.shape[1], k_BSKD.shape[2]
  q_BTKGD = q_BTHD.reshape(B, T, K, H // K, D)
  logits_BKGTS = jnp.einsum('BTKGD,BSKD->BKGTS', q_BTKGD, k_BSKD,
                            preferred_element_type=jnp.float32) * scale
  if mask is None:
    mask = make_mask(segment_ids, T)
  mask_B11TS = mask[:, :, None]  # broadcast over K and G
  logits_BKGTS = jnp.where(mask_B11TS, logits_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1)
  out_BTKGD = jnp.einsum('BKGTS,BSKD->BTKGD', probs_BKGTS.astype(v_BSKD.dtype), v_BSKD)
  out_BTHD = out_BTKGD.reshape(B, T, H, D)
  if return_probs:
    return out_BTHD, probs_BKGTS.reshape(B, H, T, S)
  return out_BTHD


@functools.lru_cache(maxsize=16)
def _splash_kernel(T: int, H: int, interpret: bool):
  from jax.experimental.pallas.ops.tpu import splash_attention as sa  # TPU only: lazy import
  mask = sa.MultiHeadMask([sa.CausalMask(shape=(T, T)) for _ in range(H)])
  return sa.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret), sa


def _splash(q_BTHD, k_BSKD, v_BSKD, segment_ids, scale, interpret: bool = False):
  """Pallas splash attention (TPU). Key/value heads are repeated for grouped-query attention."""
  B, T, H, D = q_BTHD.shape
  K = k_BSKD.shape[2]
  kernel, sa = _splash_kernel(T, H, interpret)
  q_BHTD = jnp.swapaxes(q_BTHD * scale, 1, 2)  # splash applies no scale of its own
  k_BHTD = jnp.swapaxes(jnp.repeat(k_BSKD, H // K, axis=2), 1, 2)
  v_BHTD = jnp.swapaxes(jnp.repeat(v_BSKD, H // K, axis=2), 1, 2)
  if segment_ids is None:
    out_BHTD = jax.vmap(kernel)(q_BHTD, k_BHTD, v_BHTD)
  else:
    seg = jax.vmap(lambda s: sa.SegmentIds(q=s, kv=s))(segment_ids)
    out_BHTD = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(
        q_BHTD, k_BHTD, v_BHTD, seg)
  return jnp.swapaxes(out_BHTD, 1, 2)
