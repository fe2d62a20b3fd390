r"""Attention-kernel benchmark: forward + backward of one causal attention call, per backend and
flash block size (used to choose ssa/flash.py's DEFAULT_BLOCK_Q / DEFAULT_BLOCK_K).

    python -m ssa.benchmarks.attention --T=1024,4096 --H=6 --K=6 --D=64 --blocks=128,256,512,1024

Times jit(grad(sum(attention(q, k, v) * w))) on random float32 inputs with segment ids (one
document per row, as training batches carry them), after compiling and one warm-up call; the
timed calls of all configurations alternate. Prints one JSON line per (T, backend, block) with
the median / min / max seconds and XLA's temporary bytes, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from ssa import flash
from ssa import kernels


def _fn(backend: str, block: int, seg):
  def loss(q, k, v, w):
    if backend == 'flash':
      B, T = q.shape[:2]
      pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
      out = flash.flash_attention(q, k, v, q_pos_BT=pos, kv_pos_BS=pos, q_seg_BT=seg,
                                  kv_seg_BS=seg, scale=q.shape[-1] ** -0.5, block_q=block,
                                  block_k=block)
    else:
      out = kernels.attention(q, k, v, backend=backend, segment_ids=seg)
    return jnp.sum(out * w)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--T', default='1024,4096')
  p.add_argument('--B', type=int, default=1)
  p.add_argument('--H', type=int, default=6)
  p.add_argument('--K', type=int, default=6, help='key/value heads')
  p.add_argument('--D', type=int, default=64)
  p.add_argument('--blocks', default='128,256,512,1024')
  p.add_argument('--backends', default='flash,xla')
  p.add_argument('--steps', type=int, default=5)
  a = p.parse_args(argv)
  print(f'# attention benchmark B={a.B} H={a.H} K={a.K} D={a.D} on '
        f'{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, '
        f'{time.strftime("%Y-%m-%d %H:%M")}', flush=True)
  runs = []
  for T in (int(t) for t in a.T.split(',')):
    ks = jax.random.split(jax.random.PRNGKey(0), 4)
    q = jax.random.normal(ks[0], (a.B, T, a.H, a.D))
    k = jax.random.normal(ks[1], (a.B, T, a.K, a.D))
    v = jax.random.normal(ks[2], (a.B, T, a.K, a.D))
    w = jax.random.normal(ks[3], q.shape)
    seg = jnp.ones((a.B, T), jnp.int32)
    for backend in a.backends.split(','):
      for block in ([int(b) for b in a.blocks.split(',')] if backend == 'flash' else [0]):
        if backend == 'flash' and block > T:
          continue
        f = _fn(backend, block, seg)
        try:
          compiled = f.lower(q, k, v, w).compile()
        except Exception as e:  # pylint: disable=broad-except  (e.g. out of memory)
          print(json.dumps({'T': T, 'backend': backend, 'block': block,
                            'status': f'failed: {type(e).__name__}'}), flush=True)
          continue
        mem = compiled.memory_analysis()
        jax.block_until_ready(compiled(q, k, v, w))
        runs.append({'T': T, 'backend': backend, 'block': block, 'fn': compiled,
                     'args': (q, k, v, w), 'times': [],
                     'temp_bytes': getattr(mem, 'temp_size_in_bytes', None)})
  for _ in range(a.steps):
    for r in runs:
      t = time.perf_counter()
      jax.block_until_ready(r['fn'](*r['args']))
      r['times'].append(time.perf_counter() - t)
  for r in runs:
    out = {k: r[k] for k in ('T', 'backend', 'block', 'temp_bytes')}
    out.update(median_s=statistics.median(r['times']), min_s=min(r['times']),
               max_s=max(r['times']), steps=len(r['times']))
    print(json.dumps(out), flush=True)
  print(f'{"T":>6} {"backend":<8} {"block":>6} {"median ms":>10} {"min ms":>8} {"temp MiB":>9}')
  for r in runs:
    tb = r['temp_bytes'] / 2**20 if r['temp_bytes'] is not None else float('nan')
    print(f'{r["T"]:>6} {r["backend"]:<8} {r["block"]:>6} '
          f'{1e3 * statistics.median(r["times"]):>10.1f} {1e3 * min(r["times"]):>8.1f} {tb:>9.1f}')


if __name__ == '__main__':
  main()
