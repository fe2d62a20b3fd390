"""What the language-model comparison experiments share (frozen_llm.py, finetune_tuned.py): train
an arm in its workdir (or find it trained), score it on a split, pair two arms.

    model, variables, seconds = train_or_load(config, run_dir, log)
    scored = score(model, variables, config, split, num_batches)     # token_perplexity's dict
    compare(a, b)          # paired difference a - b, overall and per position bucket

A result dict (an arm's JSON) holds at least 'arm', 'buckets', 'sequence_bucket_nll' and
'sequence_bucket_tokens' for `compare`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ssa import measure
from ssa import train_lib
from ssa.checkpoint import Checkpointer
from ssa.data import make_eval_iterator
from ssa.evaluation import loading
from ssa.evaluation.perplexity import token_perplexity
from ssa.evaluation.scoring import LM


def base_model(config) -> tuple:
  """(model, variables) of config's initial state (model.init_from's weights), untrained."""
  s = train_lib.setup(config)
  state, _ = train_lib.fresh_state(s)
  return s.model, {'params': state.params, **state.constants}


def train_or_load(config, run_dir: str, log=print) -> tuple:
  """(model, variables, seconds): trains config in run_dir (resuming its checkpoint) unless its
  latest checkpoint is already at train.num_steps, then restores the final parameters."""
  t0 = time.time()
  ckpt_dir = os.path.join(run_dir, 'checkpoints')
  done = False
  if os.path.isdir(ckpt_dir):
    ck = Checkpointer(ckpt_dir, config.checkpoint, writer=False)
    try:
      done = ck.latest_step() == config.train.num_steps
    finally:
      ck.close()
  if not done:
    log(f'training {config.train.num_steps} steps of {config.data.batch_size} x '
        f'{config.data.seq_len} tokens in {run_dir}')
    train_lib.train_and_evaluate(config, run_dir)
  loaded = loading.load(config, workdir=run_dir)
  return loaded.model, loaded.variables, time.time() - t0


def score(model, variables, config, split: str, num_batches: int) -> tuple[dict, list]:
  """(token_perplexity's dict, the batches) on the first num_batches batches of `split`."""
  lm = LM.from_model(model, variables, max_len=config.data.seq_len)
  it, _ = make_eval_iterator(config, 0, 1, split=split, num_batches=num_batches)
  batches = list(it)
  return token_perplexity(lm, batches), batches


def compare(a: dict, b: dict) -> dict:
  """Paired difference a - b (nats/token), overall and per position bucket."""
  if a['buckets'] != b['buckets'] or len(a['sequence_bucket_nll']) != len(b['sequence_bucket_nll']):
    raise ValueError(f'{a["arm"]} and {b["arm"]} were not scored on the same sequences.')
  na, nb = np.asarray(a['sequence_bucket_nll']), np.asarray(b['sequence_bucket_nll'])
  w = np.asarray(a['sequence_bucket_tokens'])
  if not np.array_equal(w, np.asarray(b['sequence_bucket_tokens'])):
    raise ValueError(f'{a["arm"]} and {b["arm"]} were not scored on the same tokens.')
  out = {'overall': measure.paired_difference(na.sum(1), nb.sum(1), w.sum(1)), 'by_position': {}}
  for j, name in enumerate(a['buckets']):
    keep = w[:, j] > 0
    if keep.any():
      out['by_position'][name] = measure.paired_difference(na[keep, j], nb[keep, j], w[keep, j])
  return out


def cell(d: dict) -> str:
  """'mean [lo, hi] (MDE)' of a paired_difference result, for tables."""
  return f'{d["mean"]:+.4f} [{d["ci95"][0]:+.4f}, {d["ci95"][1]:+.4f}] ({d["mde"]:.4f})'
