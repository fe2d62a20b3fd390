r"""Train-step benchmark: vanilla vs SSA on the same config (step time, tokens/s, MFU, memory).

    python -m ssa.benchmarks.train_step --preset=gpt2-tiny --seq_len=256 --batch=8 --steps=10
    python -m ssa.benchmarks.train_step --preset=gpt2-124m --seq_len=1024 --batch=1 --steps=5
    python -m ssa.benchmarks.train_step --layers=6 --heads=6 --width=384 --seq_len=8192 \
        --batch=1 --strategies=ssa --long          # one strategy per process: its own peak RSS
        [--dtype=bfloat16] [--remat] [--set key=value ...]

--strategies: one name (one strategy in this process, so the peak RSS is its own) or a
comma-separated list whose timed steps alternate (default 'vanilla,ssa'; the ratio to the first
is printed). --long: the long-context mode (1 warm-up step, --steps default 2). Shape flags
(--layers, --heads, --kv_heads, --width, --head_dim, --d_ff) override the preset's; the vocabulary
stays the preset's (GPT-2: 50,257 ids in a 50,304-row table).

Runs the real jitted train_step (ssa/train_lib.py: AdamW, clipping, NaN guard) on random tokens
(the data pipeline is not timed), after compiling and two warm-up steps; the timed steps of the
two strategies alternate so both see the same machine state. Reports, per strategy: median step time, tokens/s, MFU (analytic FLOPs, ssa/metrics.py; peak from the device table or, on
CPU, a measured f32 matmul rate), peak memory (device allocator peak where the platform reports it,
else XLA's compiled-memory estimate: arguments + outputs + temporaries - aliased), and the ratio
SSA / vanilla: the ratio of medians and the median of the per-pair ratios of alternating steps
with its bootstrap 95% interval (a JSON line {"ratio": ...}).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import jax
import numpy as np

from configs import base
from ssa import config_lib
from ssa import hostmem
from ssa import metrics as metrics_lib
from ssa import sharding as shard_lib
from ssa import train_lib


def _rss_bytes() -> int:
  """Peak resident set size of this process so far (the OS's figure)."""
  r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(r) * (1 if sys.platform == 'darwin' else 1024)


SHAPE_FLAGS = {'layers': 'n_layers', 'heads': 'n_heads', 'kv_heads': 'n_kv_heads',
               'width': 'd_model', 'head_dim': 'head_dim', 'd_ff': 'd_ff'}


def prepare(preset: str, strategy: str, seq_len: int, batch: int, dtype: str, remat: bool, sets,
            shape=None, warmup: int = 2):
  """Setup, compiled step, state and batch for one strategy (compiled, warm-up steps done)."""
  c = base.get_config(preset)
  c.ssa.strategy = strategy
  for field, value in (shape or {}).items():
    c.model[field] = value
  if shape and 'n_heads' in shape and 'n_kv_heads' not in shape:
    c.model.n_kv_heads = shape['n_heads']
  if shape and 'd_model' in shape and 'd_ff' not in shape:
    c.model.d_ff = 4 * shape['d_model']
  if shape and ('d_model' in shape or 'n_heads' in shape) and 'head_dim' not in shape:
    c.model.head_dim = c.model.d_model // c.model.n_heads
  c.data.seq_len, c.data.batch_size = seq_len, batch
  c.model.max_len = max(c.model.max_len, seq_len)
  c.model.dtype, c.model.remat = dtype, remat
  c.optim.warmup_steps, c.train.num_steps = 10, 1000
  config_lib.apply_overrides(c, config_lib.parse_overrides(sets))
  s = train_lib.setup(c)
  state = s.init_fn(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  tok = rng.integers(0, c.model.vocab_size, (batch, seq_len + 1), dtype=np.int32)
  local = {'inputs': tok[:, :-1], 'targets': tok[:, 1:],
           'weights': np.ones((batch, seq_len), np.float32),
           'segment_ids': np.ones((batch, seq_len), np.int32),
           'positions': np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy()}
  gb = shard_lib.global_batch(local, s.batch_sharding, batch)
  t0 = time.perf_counter()
  compiled = s.step_fn.lower(state, gb).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  est = None
  if mem is not None:
    est = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes -
           mem.alias_size_in_bytes)
  for _ in range(warmup):
    state, m = s.step_fn(state, gb)
    jax.block_until_ready(m)
  return {'config': c, 'setup': s, 'state': state, 'batch': gb, 'compile_s': compile_s,
          'mem_est': est, 'strategy': strategy, 'times': [], 'step_fn': compiled}


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_step(r):
  f, t = _minor_faults(), time.perf_counter()
  r['state'], m = r['step_fn'](r['state'], r['batch'])
  jax.block_until_ready(m)
  r['times'].append(time.perf_counter() - t)
  r.setdefault('faults', []).append(_minor_faults() - f)
  r['loss'] = float(m['loss'])


def paired_ratio(base_times, other_times, num_bootstrap: int = 2000) -> dict:
  """Median of the per-pair ratios other_i / base_i of alternating steps (machine drift cancels
  within a pair) and its bootstrap 95% interval over the pairs."""
  x = np.asarray(other_times) / np.asarray(base_times)
  rng = np.random.default_rng(0)
  boots = np.median(x[rng.integers(0, len(x), (num_bootstrap, len(x)))], axis=1)
  lo, hi = np.quantile(boots, [0.025, 0.975])
  return {'median': float(np.median(x)), 'ci95': [float(lo), float(hi)], 'pairs': int(len(x))}


def summarize(r) -> dict:
  c, s = r['config'], r['setup']
  step_s = statistics.median(r['times'])
  stats = jax.local_devices()[0].memory_stats() or {}
  peak_dev = stats.get('peak_bytes_in_use')
  peak, peak_src = metrics_lib.peak_flops(c.train.peak_flops_per_device)
  tps = c.data.batch_size * c.data.seq_len / step_s
  return {'strategy': r['strategy'], 'params': s.param_count['total'],
          'temperature_params': s.param_count['temperature'], 'step_s': step_s,
          'step_s_min': min(r['times']), 'step_s_max': max(r['times']), 'steps': len(r['times']),
          'tokens_per_s': tps, 'mfu': tps * s.flops_per_token / peak, 'peak_flops': peak,
          'peak_mem_bytes': peak_dev or r['mem_est'],
          'mem_source': 'device peak (whole process)' if peak_dev else 'XLA compiled estimate',
          'rss_peak_bytes': _rss_bytes() if jax.default_backend() == 'cpu' else None,
          'compile_s': r['compile_s'], 'loss': r['loss'], 'peak_src': peak_src,
          'minor_faults_per_step': statistics.median(r['faults']),
          'malloc': {k: os.environ.get(k) for k in hostmem.TUNED} if any(
              k in os.environ for k in hostmem.TUNED) else 'glibc defaults',
          'flops_per_token': s.flops_per_token,
          'backend': c.ssa.backend, 'shape': {k: c.model[k] for k in SHAPE_FLAGS.values()},
          'seq_len': c.data.seq_len, 'batch': c.data.batch_size, 'dtype': c.model.dtype}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='gpt2-tiny')
  p.add_argument('--seq_len', type=int, default=256)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--steps', type=int, default=None, help='timed steps (default 10; --long 2)')
  p.add_argument('--dtype', default='float32')
  p.add_argument('--remat', action='store_true')
  p.add_argument('--strategies', default='vanilla,ssa',
                 help='one strategy, or a comma-separated list timed alternately')
  p.add_argument('--long', action='store_true', help='long-context mode: 1 warm-up step')
  for flag in SHAPE_FLAGS:
    p.add_argument(f'--{flag}', type=int, default=None)
  p.add_argument('--set', action='append', default=[],
                 help='config override key=value (values are Python literals, else strings)')
  a = p.parse_args(argv)
  print(f'# train_step benchmark: preset={a.preset} T={a.seq_len} B={a.batch} dtype={a.dtype} '
        f'remat={a.remat} devices={jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), jax {jax.__version__}, {time.strftime("%Y-%m-%d")}')
  shape = {SHAPE_FLAGS[f]: getattr(a, f) for f in SHAPE_FLAGS if getattr(a, f) is not None}
  steps = a.steps or (2 if a.long else 10)
  runs = [prepare(a.preset, st, a.seq_len, a.batch, a.dtype, a.remat, a.set, shape,
                  warmup=1 if a.long else 2) for st in a.strategies.split(',')]
  for _ in range(steps):  # alternate, so all see the same machine state
    for r in runs:
      time_step(r)
  rows = [summarize(r) for r in runs]
  for r in rows:
    print(json.dumps(r), flush=True)
  print(f'# peak FLOP/s: {rows[0]["peak_src"]}; FLOPs/token: ' +
        ', '.join(f'{r["strategy"]} {r["flops_per_token"]:.4g}' for r in rows))
  hdr = (f'{"strategy":<9} {"params":>12} {"tau params":>10} {"step ms":>9} {"tokens/s":>10} '
         f'{"MFU":>6} {"peak MiB":>9} {"RSS GiB":>8} {"compile s":>9}')
  print(hdr)
  for r in rows:
    mem = r['peak_mem_bytes'] / 2**20 if r['peak_mem_bytes'] else float('nan')
    print(f'{r["strategy"]:<9} {r["params"]:>12,} {r["temperature_params"]:>10,} '
          f'{1e3 * r["step_s"]:>9.1f} {r["tokens_per_s"]:>10,.0f} {100 * r["mfu"]:>5.1f}% '
          f'{mem:>9.1f} {(r["rss_peak_bytes"] or 0) / 2**30:>8.2f} {r["compile_s"]:>9.1f}')
  if len(rows) > 1:
    print('# RSS is the whole process (all strategies in it); run one strategy per process for '
          'its own.')
  v = rows[0]
  for r, s in zip(runs[1:], rows[1:]):
    mem_ratio = (s['peak_mem_bytes'] / v['peak_mem_bytes']) if v['peak_mem_bytes'] else float('nan')
    paired = paired_ratio(runs[0]['times'], r['times'])
    print(json.dumps({'ratio': f'{s["strategy"]}/{v["strategy"]}', **paired}), flush=True)
    print(f'ratio {s["strategy"]}/{v["strategy"]}: step time x{s["step_s"] / v["step_s"]:.3f} '
          f'(paired: median x{paired["median"]:.3f}, 95% CI [{paired["ci95"][0]:.3f}, '
          f'{paired["ci95"][1]:.3f}] over {paired["pairs"]} alternating pairs), '
          f'tokens/s x{s["tokens_per_s"] / v["tokens_per_s"]:.3f}, peak memory x{mem_ratio:.3f} '
          f'(memory: {v["mem_source"]})')


if __name__ == '__main__':
  hostmem.reexec_with_tuned_malloc()   # as train.py (ssa/hostmem.py); SSA_MALLOC=system: glibc's defaults
  main()
