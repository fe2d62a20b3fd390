"""Test-sized config: gpt2-tiny with the byte tokenizer on Shakespeare, T=32, batch 8, 10 steps.

Used by tests/test_train*.py and for smoke runs (seconds on a CPU):

    python train.py --config=configs/tiny.py --workdir=/tmp/ssa_tiny
"""

from configs import base


def get_config():
  c = base.get_config('gpt2-tiny')
  c.model.vocab_size = 258       # byte tokenizer
  c.model.max_len = 32
  c.data.tokenizer = 'byte'
  c.data.seq_len = 32
  c.data.batch_size = 8
  c.data.eval_batches = 2
  c.data.num_threads = 1
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 2
  c.train.num_steps = 10
  c.train.log_every = 1
  c.train.eval_every = 5
  c.train.progress_bar = False
  c.train.tensorboard = False
  c.train.summary_sample_tokens = 0  # tests: no end-of-run sample (one decode compile per CLI run)
  c.checkpoint.every = 5
  c.checkpoint.async_save = False
  return c
