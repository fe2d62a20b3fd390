r"""The prepared GPU check (one command, < 8 minutes on one H100/H200), as JSON lines.

    python -m ssa.benchmarks.gpu_check                 # on a GPU machine
    python -m ssa.benchmarks.gpu_check --smoke         # tiny shapes: runs anywhere (CPU test)

1. Kernels: pre-scaled SSA attention (random temperatures on q, k, v; packed segments; GQA 2:1)
   through `cudnn` (bf16) and `flash` (bf16 and float32) against `xla` in float32: outputs and
   gradients, max relative error (bf16 tolerance 2e-2, float32 1e-5).
2. Train step: vanilla vs SSA, gpt2-124m, T=1024, bf16 compute, ssa.backend=auto, batch 16,
   alternating timed steps (ssa/benchmarks/train_step.py): step time, tokens/s, MFU, SSA overhead.

Prints one JSON line per check and a final {'summary': ...} line; exit status 1 if a kernel
check fails its tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from ssa import kernels
from ssa.benchmarks import train_step as bench


def _rel(a, b):
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))


def kernel_checks(B, T, H, K, D):
  ks = jax.random.split(jax.random.PRNGKey(0), 8)
  q = jax.random.normal(ks[0], (B, T, H, D))
  k = jax.random.normal(ks[1], (B, T, K, D))
  v = jax.random.normal(ks[2], (B, T, K, D))
  tq = 1 + 0.3 * jax.random.uniform(ks[3], (B, T, H, 1))
  tk = 1 + 0.3 * jax.random.uniform(ks[4], (B, T, K, 1))
  tv = 1 + 0.3 * jax.random.uniform(ks[5], (B, T, K, 1))
  seg = jnp.cumsum(jax.random.bernoulli(ks[6], 2.0 / T, (B, T)), axis=1).astype(jnp.int32)
  w = jax.random.normal(ks[7], (B, T, H, D))

  def run(backend, dtype):
    def loss(q, k, v):
      out = kernels.attention((q * tq).astype(dtype), (k * tk).astype(dtype),
                              (v * tv).astype(dtype), backend=backend, segment_ids=seg)
      return jnp.sum(out.astype(jnp.float32) * w), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads

  want_out, want_g = run('xla', jnp.float32)
  rows = []
  platform = jax.default_backend()
  for backend, dtype, tol in (('cudnn', jnp.bfloat16, 2e-2), ('flash', jnp.bfloat16, 2e-2),
                              ('flash', jnp.float32, 1e-5)):
    if backend == 'cudnn' and platform != 'gpu':
      continue
    out, g = run(backend, dtype)
    errs = {'out': _rel(out, want_out), **{f'grad_{n}': _rel(a, b)
                                           for n, a, b in zip('qkv', g, want_g)}}
    rows.append({'check': 'kernel', 'backend': backend, 'dtype': jnp.dtype(dtype).name,
                 'shape': [B, T, H, K, D], 'rel_err': errs, 'tolerance': tol,
                 'ok': max(errs.values()) < tol})
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--smoke', action='store_true', help='tiny shapes (a CPU test of this script)')
  p.add_argument('--steps', type=int, default=None)
  a = p.parse_args(argv)
  t0 = time.time()
  dev = jax.devices()[0]
  print(json.dumps({'device': dev.device_kind, 'platform': jax.default_backend(),
                    'jax': jax.__version__, 'date': time.strftime('%Y-%m-%d %H:%M')}), flush=True)
  shape = (1, 128, 4, 2, 32) if a.smoke else (2, 2048, 12, 6, 64)
  rows = kernel_checks(*shape)
  for r in rows:
    print(json.dumps(r), flush=True)
  if a.smoke:
    runs = [bench.prepare('gpt2-tiny', st, 64, 8, 'float32', False, [], warmup=1)
            for st in ('vanilla', 'ssa')]
  else:
    runs = [bench.prepare('gpt2-124m', st, 1024, 16, 'bfloat16', False, [], warmup=2)
            for st in ('vanilla', 'ssa')]
  for _ in range(a.steps or (2 if a.smoke else 10)):
    for r in runs:
      bench.time_step(r)
  step = [bench.summarize(r) for r in runs]
  for r in step:
    print(json.dumps({'check': 'train_step', **r}), flush=True)
  summary = {'kernels_ok': all(r['ok'] for r in rows),
             'ssa_overhead': step[1]['step_s'] / step[0]['step_s'],
             'mfu_vanilla': step[0]['mfu'], 'mfu_ssa': step[1]['mfu'],
             'seconds': time.time() - t0}
  print(json.dumps({'summary': summary}), flush=True)
  if not summary['kernels_ok']:
    sys.exit(1)


if __name__ == '__main__':
  main()
