r"""Train-step benchmark: vanilla vs SSA on the same config (step time, tokens/s, MFU, memory).

    python -m ssa.benchmarks.train_step --preset=gpt2-tiny --seq_len=256 --batch=8 --steps=10
    python -m ssa.benchmarks.train_step --preset=gpt2-124m --seq_len=256 --batch=2 --steps=3 \
        [--dtype=bfloat16] [--remat] [--config.x=...] (any extra --set key=value overrides)

Runs the real jitted train_step (ssa/train_lib.py: AdamW, clipping, NaN guard) on random tokens
(the data pipeline is not timed), after compiling and two warm-up steps; the timed steps of the
two strategies alternate so both see the same machine state. Reports, per strategy: median step time, tokens/s, MFU (analytic FLOPs, ssa/metrics.py; peak from the device table or, on
CPU, a measured f32 matmul rate), peak memory (device allocator peak where the platform reports it,
else XLA's compiled-memory estimate: arguments + outputs + temporaries - aliased), and the ratio
SSA / vanilla.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from configs import base
from ssa import config_lib
from ssa import metrics as metrics_lib
from ssa import sharding as shard_lib
from ssa import train_lib


def prepare(preset: str, strategy: str, seq_len: int, batch: int, dtype: str, remat: bool, sets):
  """Setup, compiled step, state and batch for one strategy (compiled, one warm-up step done)."""
  c = base.get_config(preset)
  c.ssa.strategy = strategy
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
  for _ in range(2):  # warm-up
    state, m = s.step_fn(state, gb)
    jax.block_until_ready(m)
  return {'config': c, 'setup': s, 'state': state, 'batch': gb, 'compile_s': compile_s,
          'mem_est': est, 'strategy': strategy, 'times': []}


def time_step(r):
  t = time.perf_counter()
  r['state'], m = r['setup'].step_fn(r['state'], r['batch'])
  jax.block_until_ready(m)
  r['times'].append(time.perf_counter() - t)
  r['loss'] = float(m['loss'])


def summarize(r) -> dict:
  c, s = r['config'], r['setup']
  step_s = statistics.median(r['times'])
  stats = jax.local_devices()[0].memory_stats() or {}
  peak_dev = stats.get('peak_bytes_in_use')
  peak, peak_src = metrics_lib.peak_flops(c.train.peak_flops_per_device)
  tps = c.data.batch_size * c.data.seq_len / step_s
  return {'strategy': r['strategy'], 'params': s.param_count['total'],
          'temperature_params': s.param_count['temperature'], 'step_s': step_s,
          'tokens_per_s': tps, 'mfu': tps * s.flops_per_token / peak,
          'peak_mem_bytes': peak_dev or r['mem_est'],
          'mem_source': 'device peak (whole process)' if peak_dev else 'XLA compiled estimate',
          'compile_s': r['compile_s'], 'loss': r['loss'], 'peak_src': peak_src,
          'flops_per_token': s.flops_per_token}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='gpt2-tiny')
  p.add_argument('--seq_len', type=int, default=256)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--steps', type=int, default=10, help='timed steps (after 1 warm-up step)')
  p.add_argument('--dtype', default='float32')
  p.add_argument('--remat', action='store_true')
  p.add_argument('--ssa', default='ssa', help='SSA strategy compared with vanilla')
  p.add_argument('--set', action='append', default=[],
                 help='config override key=value (values are Python literals, else strings)')
  a = p.parse_args(argv)
  print(f'# train_step benchmark: preset={a.preset} T={a.seq_len} B={a.batch} dtype={a.dtype} '
        f'remat={a.remat} devices={jax.device_count()} x {jax.devices()[0].device_kind} '
        f'({jax.default_backend()}), jax {jax.__version__}, {time.strftime("%Y-%m-%d")}')
  runs = [prepare(a.preset, st, a.seq_len, a.batch, a.dtype, a.remat, a.set)
          for st in ('vanilla', a.ssa)]
  for _ in range(a.steps):  # alternate, so both see the same machine state
    for r in runs:
      time_step(r)
  rows = [summarize(r) for r in runs]
  print(f'# peak FLOP/s: {rows[0]["peak_src"]}; FLOPs/token: ' +
        ', '.join(f'{r["strategy"]} {r["flops_per_token"]:.4g}' for r in rows))
  hdr = (f'{"strategy":<9} {"params":>12} {"tau params":>10} {"step ms":>9} {"tokens/s":>10} '
         f'{"MFU":>6} {"peak MiB":>9} {"compile s":>9}')
  print(hdr)
  for r in rows:
    mem = r['peak_mem_bytes'] / 2**20 if r['peak_mem_bytes'] else float('nan')
    print(f'{r["strategy"]:<9} {r["params"]:>12,} {r["temperature_params"]:>10,} '
          f'{1e3 * r["step_s"]:>9.1f} {r["tokens_per_s"]:>10,.0f} {100 * r["mfu"]:>5.1f}% '
          f'{mem:>9.1f} {r["compile_s"]:>9.1f}')
  v, s = rows
  mem_ratio = (s['peak_mem_bytes'] / v['peak_mem_bytes']) if v['peak_mem_bytes'] else float('nan')
  print(f'ratio {s["strategy"]}/vanilla: step time x{s["step_s"] / v["step_s"]:.3f}, '
        f'tokens/s x{s["tokens_per_s"] / v["tokens_per_s"]:.3f}, peak memory x{mem_ratio:.3f} '
        f'(memory: {v["mem_source"]})')


if __name__ == '__main__':
  main()
