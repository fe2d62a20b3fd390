"""Blockwise attention in pure JAX: O(T) memory, exact, on every platform (the 'flash' backend).

FlashAttention's algorithm (Dao et al. 2022; the backward of FlashAttention-2) written with
lax loops, so that XLA on CPU, GPU or TPU never holds a [T, S] array:

  forward, per query block i (bq rows), over the key blocks j it can see (causal: j*bk <= last
  query position of the block), an online softmax in float32:
      s = q_i k_j^T * scale, masked;  m' = max(m, rowmax s);  p = exp(s - m')
      l = l * exp(m - m') + rowsum p;  acc = acc * exp(m - m') + p v_j;  m = m'
      out_i = acc / l,  lse_i = m + log l     (lse is the only [T]-sized residual kept)
  backward (custom VJP; recomputes p per block from lse), per key block j over the query blocks
  that see it:
      p = exp(s - lse_i);  dv_j += p^T do_i;  dp = do_i v_j^T;  ds = p * (dp - delta_i)
      dk_j += ds^T q_i * scale;  dq_i += ds k_j * scale     delta_i = rowsum(do_i * out_i)

Masking is computed per block from positions and segment ids: key j is visible to query i iff
kv_pos[j] <= q_pos[i] and kv_seg[j] == q_seg[i] (and kv_pos[j] >= 0: a kv-cache slot never
written). Training passes q_pos = kv_pos = 0..T-1; kv-cache decoding passes the absolute
positions of the queries and the cache's slot positions. Grouped-query attention keeps K
key/value heads: queries are viewed as [B, K, G, T, D] and k/v are never repeated.

Loops skip blocks that are entirely masked by causality (a dynamic trip count: the loop bounds
come from the positions, so decoding one token visits only the cache blocks up to its position).
Block sizes: see DEFAULT_BLOCK (measured on CPU, README "Performance").
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 256
_NEG = -1e30  # finite "minus infinity": exp(_NEG - m) == 0 without inf - inf = NaN


def _pad_to(x, axis: int, multiple: int, value=0):
  n = x.shape[axis]
  pad = -n % multiple
  if not pad:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths, constant_values=value)


def flash_attention(q_BTHD, k_BSKD, v_BSKD, *, q_pos_BT, kv_pos_BS, q_seg_BT=None, kv_seg_BS=None,
                    scale: float, block_q: Optional[int] = None,
                    block_k: Optional[int] = None):
  """Masked attention of q [B, T, H, D] over k, v [B, S, K, D] (see the module docstring).

  Positions are int32 [B, T] / [B, S]; segment ids (optional, both or neither) int32. The output
  has q's dtype; all softmax arithmetic is float32.
  """
  B, T, H, D = q_BTHD.shape
  S, K = k_BSKD.shape[1], k_BSKD.shape[2]
  G = H // K
  bq = min(block_q or DEFAULT_BLOCK_Q, T)
  bk = min(block_k or DEFAULT_BLOCK_K, S)
  if q_seg_BT is None:
    q_seg_BT = jnp.zeros((B, T), jnp.int32)
    kv_seg_BS = jnp.zeros((B, S), jnp.int32)
  # Padded queries get position -1 (they see nothing: their rows are dropped); padded keys get a
  # position no query reaches.
  q_pos = _pad_to(q_pos_BT.astype(jnp.int32), 1, bq, -1)
  kv_pos = _pad_to(kv_pos_BS.astype(jnp.int32), 1, bk, jnp.iinfo(jnp.int32).max)
  q_seg = _pad_to(q_seg_BT.astype(jnp.int32), 1, bq, -1)
  kv_seg = _pad_to(kv_seg_BS.astype(jnp.int32), 1, bk, -2)
  q = _pad_to(q_BTHD, 1, bq).reshape(B, -1, K, G, D).transpose(0, 2, 3, 1, 4)  # B K G Tp D
  k = _pad_to(k_BSKD, 1, bk).transpose(0, 2, 1, 3)  # B K Sp D
  v = _pad_to(v_BSKD, 1, bk).transpose(0, 2, 1, 3)
  out = _flash(q, k, v, q_pos, kv_pos, q_seg, kv_seg, float(scale), bq, bk)
  out = out.transpose(0, 3, 1, 2, 4).reshape(B, -1, H, D)  # B Tp H D
  return out[:, :T]


def _block_mask(q_pos, q_seg, kv_pos, kv_seg):
  """[B, 1, 1, bq, bk] visibility of one (query block, key block) pair."""
  m = (kv_pos[:, None, :] <= q_pos[:, :, None]) & (kv_seg[:, None, :] == q_seg[:, :, None])
  m &= (kv_pos >= 0)[:, None, :]
  return m[:, None, None]


def _kv_range(q_pos_blk, kv_pos, bk):
  """(first, last+1) key blocks that can hold a key visible to this query block: keys are
  visible only at kv_pos <= max query position, and kv_pos is non-decreasing along S in both
  training (0..S-1) and a kv-cache (slot order). Conservative over the batch."""
  nk = kv_pos.shape[1] // bk
  hi = jnp.max(q_pos_blk)
  blk_min = jnp.min(kv_pos.reshape(kv_pos.shape[0], nk, bk), axis=(0, 2))  # [nk]
  seen = blk_min <= hi  # blocks holding a key some query of the block may see
  idx = jnp.arange(nk, dtype=jnp.int32)
  return (jnp.min(jnp.where(seen, idx, nk)).astype(jnp.int32),
          jnp.max(jnp.where(seen, idx + 1, 0)).astype(jnp.int32))


def _q_range(kv_pos_blk, q_pos, bq):
  """(first, last+1) query blocks that can see a key of this key block."""
  nq = q_pos.shape[1] // bq
  lo = jnp.min(jnp.where(kv_pos_blk >= 0, kv_pos_blk, jnp.iinfo(jnp.int32).max))
  blk_max = jnp.max(q_pos.reshape(q_pos.shape[0], nq, bq), axis=(0, 2))  # [nq]
  seen = blk_max >= lo  # query blocks with a query that may see a key of the block
  idx = jnp.arange(nq, dtype=jnp.int32)
  return (jnp.min(jnp.where(seen, idx, nq)).astype(jnp.int32),
          jnp.max(jnp.where(seen, idx + 1, 0)).astype(jnp.int32))


def _forward(q, k, v, q_pos, kv_pos, q_seg, kv_seg, scale, bq, bk):
  """(out [B K G Tp D] in q.dtype, lse [B K G Tp] float32)."""
  B, K, G, Tp, D = q.shape
  nq = Tp // bq

  def q_block(i):
    qi = jax.lax.dynamic_slice_in_dim(q, i * bq, bq, axis=3)
    qp = jax.lax.dynamic_slice_in_dim(q_pos, i * bq, bq, axis=1)
    qs = jax.lax.dynamic_slice_in_dim(q_seg, i * bq, bq, axis=1)

    def body(j, carry):
      m, l, acc = carry
      kj = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
      vj = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
      kp = jax.lax.dynamic_slice_in_dim(kv_pos, j * bk, bk, axis=1)
      ks = jax.lax.dynamic_slice_in_dim(kv_seg, j * bk, bk, axis=1)
      s = jnp.einsum('bkgqd,bkcd->bkgqc', qi, kj, preferred_element_type=jnp.float32) * scale
      mask = _block_mask(qp, qs, kp, ks)
      s = jnp.where(mask, s, _NEG)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
      corr = jnp.exp(m - m_new)
      l = l * corr + jnp.sum(p, axis=-1)
      acc = acc * corr[..., None] + jnp.einsum('bkgqc,bkcd->bkgqd', p.astype(v.dtype), vj,
                                               preferred_element_type=jnp.float32)
      return m_new, l, acc

    init = (jnp.full((B, K, G, bq), _NEG, jnp.float32), jnp.zeros((B, K, G, bq), jnp.float32),
            jnp.zeros((B, K, G, bq, D), jnp.float32))
    lo, hi = _kv_range(qp, kv_pos, bk)
    m, l, acc = jax.lax.fori_loop(lo, hi, body, init)
    safe = jnp.where(l > 0, l, 1.0)
    out = (acc / safe[..., None]).astype(q.dtype)
    lse = jnp.where(l > 0, m + jnp.log(safe), jnp.inf)  # inf: p = exp(s - inf) = 0 in backward
    return out, lse

  out, lse = jax.lax.map(q_block, jnp.arange(nq))  # [nq, B, K, G, bq, (D)]
  out = jnp.moveaxis(out, 0, 3).reshape(B, K, G, Tp, D)
  lse = jnp.moveaxis(lse, 0, 3).reshape(B, K, G, Tp)
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _flash(q, k, v, q_pos, kv_pos, q_seg, kv_seg, scale, bq, bk):
  return _forward(q, k, v, q_pos, kv_pos, q_seg, kv_seg, scale, bq, bk)[0]


def _flash_fwd(q, k, v, q_pos, kv_pos, q_seg, kv_seg, scale, bq, bk):
  out, lse = _forward(q, k, v, q_pos, kv_pos, q_seg, kv_seg, scale, bq, bk)
  return out, (q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse)


def _flash_bwd(scale, bq, bk, res, do):
  q, k, v, q_pos, kv_pos, q_seg, kv_seg, out, lse = res
  B, K, G, Tp, D = q.shape
  Sp = k.shape[2]
  nk = Sp // bk
  delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # B K G Tp

  def k_block(j, dq):
    kj = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
    vj = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
    kp = jax.lax.dynamic_slice_in_dim(kv_pos, j * bk, bk, axis=1)
    ks = jax.lax.dynamic_slice_in_dim(kv_seg, j * bk, bk, axis=1)

    def body(i, carry):
      dq, dk, dv = carry
      qi = jax.lax.dynamic_slice_in_dim(q, i * bq, bq, axis=3)
      doi = jax.lax.dynamic_slice_in_dim(do, i * bq, bq, axis=3)
      lsei = jax.lax.dynamic_slice_in_dim(lse, i * bq, bq, axis=3)
      di = jax.lax.dynamic_slice_in_dim(delta, i * bq, bq, axis=3)
      qp = jax.lax.dynamic_slice_in_dim(q_pos, i * bq, bq, axis=1)
      qs = jax.lax.dynamic_slice_in_dim(q_seg, i * bq, bq, axis=1)
      s = jnp.einsum('bkgqd,bkcd->bkgqc', qi, kj, preferred_element_type=jnp.float32) * scale
      mask = _block_mask(qp, qs, kp, ks)
      p = jnp.where(mask, jnp.exp(s - lsei[..., None]), 0.0)
      dv = dv + jnp.einsum('bkgqc,bkgqd->bkcd', p.astype(do.dtype), doi,
                           preferred_element_type=jnp.float32)
      dp = jnp.einsum('bkgqd,bkcd->bkgqc', doi, vj, preferred_element_type=jnp.float32)
      ds = p * (dp - di[..., None]) * scale
      dk = dk + jnp.einsum('bkgqc,bkgqd->bkcd', ds.astype(q.dtype), qi,
                           preferred_element_type=jnp.float32)
      dqi = jnp.einsum('bkgqc,bkcd->bkgqd', ds.astype(k.dtype), kj,
                       preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_slice_in_dim(
          dq, jax.lax.dynamic_slice_in_dim(dq, i * bq, bq, axis=3) + dqi, i * bq, axis=3)
      return dq, dk, dv

    lo, hi = _q_range(kp, q_pos, bq)
    zeros = jnp.zeros((B, K, bk, D), jnp.float32)
    dq, dk, dv = jax.lax.fori_loop(lo, hi, body, (dq, zeros, zeros))
    return dq, (dk, dv)

  dq = jnp.zeros(q.shape, jnp.float32)

  def scan_body(dq, j):
    dq, (dk, dv) = k_block(j, dq)
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(scan_body, dq, jnp.arange(nk))  # dk: [nk, B, K, bk, D]
  dk = jnp.moveaxis(dk, 0, 2).reshape(B, K, Sp, D)
  dv = jnp.moveaxis(dv, 0, 2).reshape(B, K, Sp, D)
  zeros_int = lambda x: None  # noqa: E731  (integer inputs have no cotangent)
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
          zeros_int(q_pos), zeros_int(kv_pos), zeros_int(q_seg), zeros_int(kv_seg))


_flash.defvjp(_flash_fwd, _flash_bwd)
