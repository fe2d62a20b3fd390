"""Input-pipeline throughput: tokens/s produced by ssa.data.make_train_iterator.

Default: the embedded Shakespeare corpus, GPT-2 tokenizer, T = 1024, global batch 8, one process,
tokenizing on the fly (the pre-tokenized cache is measured too with --pretokenize=both).
Tokens counted = real (weight 1) tokens of the batches; the first batch (pipeline start) is
excluded from the timing.

    python -m ssa.benchmarks.data_throughput [--seq_len 1024] [--batch_size 8] [--seconds 20]
        [--dataset shakespeare] [--tokenizer gpt2] [--threads 4] [--pretokenize off|on|both]
"""

import argparse
import datetime
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import base  # noqa: E402
from ssa import data  # noqa: E402


def measure(config, seconds: float) -> tuple[float, int, int]:
  """(tokens/s, batches, tokens) over about `seconds` of pulling batches."""
  it, _ = data.make_train_iterator(config, 0, 1)
  next(it)  # warm-up: thread pool start, first documents
  batches = tokens = 0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    b = next(it)
    tokens += int(b['weights'].sum())
    batches += 1
  return tokens / (time.perf_counter() - start), batches, tokens


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='shakespeare')
  p.add_argument('--tokenizer', default='gpt2')
  p.add_argument('--seq_len', type=int, default=1024)
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--threads', type=int, default=4)
  p.add_argument('--seconds', type=float, default=20.0)
  p.add_argument('--data_dir', default=None)
  p.add_argument('--pretokenize', choices=('off', 'on', 'both'), default='both')
  args = p.parse_args(argv)
  c = base.get_config()
  c.data.dataset, c.data.tokenizer = args.dataset, args.tokenizer
  c.data.seq_len, c.data.batch_size, c.data.num_threads = args.seq_len, args.batch_size, args.threads
  if args.data_dir:
    c.data.data_dir = args.data_dir
  modes = {'off': [False], 'on': [True], 'both': [False, True]}[args.pretokenize]
  print(f'# {datetime.date.today()} {platform.processor() or platform.machine()}, '
        f'{os.cpu_count()} CPUs; dataset={args.dataset} tokenizer={args.tokenizer} '
        f'T={args.seq_len} B={args.batch_size} threads={args.threads}')
  for pre in modes:
    c.data.pretokenize = pre
    if pre:
      data.make_train_iterator(c, 0, 1)  # build the cache outside the timing
    rate, batches, tokens = measure(c, args.seconds)
    print(f'pretokenize={pre!s:5}  {rate:>12,.0f} tokens/s  ({batches} batches, {tokens:,} tokens)')


if __name__ == '__main__':
  main()
