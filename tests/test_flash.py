"""The flash backend (ssa/flash.py): equal to the reference backend in outputs and gradients for
block sizes that do and do not divide T, packed segments and GQA; kv-cache decoding through it
equals the full forward; its compiled train step holds no [T, T] buffer."""

import jax
import jax.numpy as jnp
import pytest

from ssa import flash, kernels
from ssa import model as model_lib
from tests import ssa_testlib as tl


def _rel(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def _inputs(B, T, H, K, D, segments, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (B, T, H, D))
  k = jax.random.normal(ks[1], (B, T, K, D))
  v = jax.random.normal(ks[2], (B, T, K, D))
  seg = (jnp.cumsum(jax.random.bernoulli(ks[3], 0.15, (B, T)), axis=1).astype(jnp.int32)
         if segments else None)
  return q, k, v, seg


@pytest.mark.parametrize('B,T,H,K,D,bq,bk', [
    (2, 37, 4, 2, 8, 8, 16),    # T not a multiple of either block, GQA 2:1
    (1, 64, 2, 2, 16, 16, 16),  # blocks divide T
    (2, 50, 6, 3, 8, 16, 8),    # bq != bk
    (1, 33, 4, 1, 8, 7, 5),     # multi-query attention, odd blocks
    (1, 5, 2, 1, 4, 512, 512),  # one block larger than T
])
@pytest.mark.parametrize('segments', [False, True])
def test_flash_equals_reference_outputs_and_gradients(B, T, H, K, D, bq, bk, segments):
  q, k, v, seg = _inputs(B, T, H, K, D, segments)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  f = lambda q, k, v: flash.flash_attention(  # noqa: E731
      q, k, v, q_pos_BT=pos, kv_pos_BS=pos, q_seg_BT=seg, kv_seg_BS=seg, scale=D ** -0.5,
      block_q=bq, block_k=bk)
  r = lambda q, k, v: kernels.attention(q, k, v, backend='reference', segment_ids=seg)  # noqa: E731
  assert _rel(f(q, k, v), r(q, k, v)) < 1e-5
  w = jax.random.normal(jax.random.PRNGKey(9), q.shape)
  gf = jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=(0, 1, 2))(q, k, v)
  gr = jax.grad(lambda *a: jnp.sum(r(*a) * w), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(gf, gr):
    assert _rel(a, b) < 1e-5


def test_flash_bfloat16_inputs_match_reference_at_bf16_tolerance():
  q, k, v, seg = _inputs(2, 40, 4, 2, 16, True)
  q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
  pos = jnp.broadcast_to(jnp.arange(40), (2, 40))
  got = flash.flash_attention(q, k, v, q_pos_BT=pos, kv_pos_BS=pos, q_seg_BT=seg, kv_seg_BS=seg,
                              scale=0.25, block_q=16, block_k=16)
  want = kernels.attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                           backend='reference', segment_ids=seg)
  assert got.dtype == jnp.bfloat16
  assert _rel(got.astype(jnp.float32), want) < 2e-2


def test_flash_decoding_positions_equal_reference():
  """kv-cache reads: queries at absolute positions see the cache slots <= their position."""
  B, S, H, K, D = 2, 40, 4, 2, 8
  ks = jax.random.split(jax.random.PRNGKey(1), 3)
  q = jax.random.normal(ks[0], (B, 3, H, D))
  k = jax.random.normal(ks[1], (B, S, K, D))
  v = jax.random.normal(ks[2], (B, S, K, D))
  qp = jnp.array([[10, 11, 12], [20, 21, 22]])
  got = flash.flash_attention(q, k, v, q_pos_BT=qp, kv_pos_BS=jnp.broadcast_to(jnp.arange(S), (B, S)),
                              scale=D ** -0.5, block_q=2, block_k=8)
  want = kernels.attention(q, k, v, backend='reference', q_positions=qp)
  assert _rel(got, want) < 1e-5


@pytest.mark.parametrize('family', ['gpt2', 'llama'])
def test_kv_cache_decoding_through_flash_equals_full_forward(family, monkeypatch):
  """Prefill 5 tokens, then one at a time, with flash blocks of 4 over a cache of 16 slots."""
  monkeypatch.setattr(flash, 'DEFAULT_BLOCK_Q', 4)
  monkeypatch.setattr(flash, 'DEFAULT_BLOCK_K', 4)
  model, variables = tl.build(family, **tl.VARIANTS['ssa'], backend='flash')
  T = 12
  toks = tl.tokens(2, T, seed=2)
  full = model.apply(variables, toks)
  cache = model_lib.init_cache(model, variables, batch_size=2, max_len=16)
  step = jax.jit(lambda c, x: model.apply({**variables, 'cache': c}, x, decode=True,
                                         mutable=['cache']))
  out, mut = step(cache, toks[:, :5])
  pieces, cache = [out], mut['cache']
  for i in range(5, T):
    out, mut = step(cache, toks[:, i:i + 1])
    pieces.append(out)
    cache = mut['cache']
  assert _rel(jnp.concatenate(pieces, 1), full) < 1e-5


def _train_step_temp_bytes(backend: str, T: int) -> int:
  model, variables = tl.build('gpt2', **tl.VARIANTS['ssa'], backend=backend, seq_len=T,
                              model_overrides={'max_len': T})
  toks = jnp.zeros((1, T), jnp.int32)
  seg = jnp.ones((1, T), jnp.int32)

  def loss(params):
    logits = model.apply({**variables, 'params': params}, toks, segment_ids=seg)
    return jnp.mean(logits.astype(jnp.float32) ** 2)

  step = jax.jit(jax.grad(loss))
  return step.lower(variables['params']).compile().memory_analysis().temp_size_in_bytes


def test_flash_train_step_has_no_t_by_t_buffer():
  """XLA's memory analysis of the compiled gradient step of a 2-layer model with 4 heads: at
  T=2048 one float32 [H, T, T] array is 64 MiB; the xla backend's step holds several (logits,
  probabilities, the [B, 1, T, T] segment mask, their gradients), flash none of any size (its
  block buffers are [H, 256, 256]), and its temporaries grow linearly in T."""
  hTT = 4 * 2048 * 2048 * 4
  xla = _train_step_temp_bytes('xla', 2048)
  fl_2k = _train_step_temp_bytes('flash', 2048)
  fl_4k = _train_step_temp_bytes('flash', 4096)
  assert xla > 4 * hTT, xla
  assert fl_2k < hTT, fl_2k
  assert fl_4k < 2.5 * fl_2k, (fl_2k, fl_4k)  # quadratic growth would be 4x


def test_prepared_gpu_check_runs_in_smoke_mode(capsys):
  """The GPU check script (ssa/benchmarks/gpu_check.py) on tiny shapes: flash passes its
  tolerances against xla and the summary line is written (cudnn is skipped off GPU)."""
  import json  # pylint: disable=g-import-not-at-top
  from ssa.benchmarks import gpu_check  # pylint: disable=g-import-not-at-top
  gpu_check.main(['--smoke', '--steps=1'])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith('{')]
  kernels_rows = [l for l in lines if l.get('check') == 'kernel']
  assert {r['backend'] for r in kernels_rows} >= {'flash'} and all(r['ok'] for r in kernels_rows)
  assert lines[-1]['summary']['kernels_ok'] is True
