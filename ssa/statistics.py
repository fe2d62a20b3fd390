"""Data statistics that a temperature strategy needs before training (its `token_table`,
ssa/strategies.py), computed on the train split and stored in the 'constants' collection.

    constants = strategy_constants(config, vocab_size)    # None when the strategy needs none
"""

from __future__ import annotations

from typing import Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from ssa import config_lib
from ssa import strategies
from ssa.data.per_process import make_train_data


def unigram_counts(config, vocab_size: int, num_batches: int) -> np.ndarray:
  """Counts of each target token over the first `num_batches` train batches of every process
  (padding excluded), summed over processes."""
  it, _ = make_train_data(config)
  counts = np.zeros(vocab_size, np.int64)
  for _ in range(num_batches):
    b = next(it)
    ids = b['targets'][b['weights'] > 0]
    counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
  if jax.process_count() > 1:
    counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
  return counts


def strategy_constants(config, vocab_size: int) -> Optional[dict[str, np.ndarray]]:
  """{strategies.TOKEN_TABLE: table [vocab_size]} for a strategy with a token table, else None
  (counted on config.train.frequency_batches train batches)."""
  make_table = strategies.token_table(config_lib.ssa_config(config.ssa))
  if make_table is None:
    return None
  counts = unigram_counts(config, vocab_size, config.train.frequency_batches)
  return {strategies.TOKEN_TABLE: make_table(counts, vocab_size)}
