"""Each process's share of the global batch (train.data_split).

    it, tokenizer = make_train_data(config)     # rows of this process: [B / processes, T]
    it, tokenizer = make_eval_data(config)

'process': every process reads its own documents (the pipeline shards by process index);
'global': every process reads the whole global batch and keeps its own contiguous rows (the same
rows a single process would see, in any process count).
"""

from __future__ import annotations

import jax

from ssa.data.pipeline import make_eval_iterator, make_train_iterator


class RowSlice:
  """data_split='global': every process reads the global batch and keeps its own rows."""

  def __init__(self, it, pi: int, pc: int):
    self._it, self._pi, self._pc = it, pi, pc

  def __iter__(self):
    return self

  def __next__(self):
    b = next(self._it)
    n = next(iter(b.values())).shape[0] // self._pc
    return {k: v[self._pi * n:(self._pi + 1) * n] for k, v in b.items()}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, s):
    self._it.set_state(s)


def _per_process(config, make_iterator):
  """make_iterator(config, process_index, process_count) under train.data_split."""
  pi, pc = jax.process_index(), jax.process_count()
  if config.train.data_split == 'global':
    it, tok = make_iterator(config, 0, 1)
    return RowSlice(it, pi, pc), tok
  return make_iterator(config, pi, pc)


def make_train_data(config):
  """(resumable train iterator of this process's rows, tokenizer)."""
  return _per_process(config, make_train_iterator)


def make_eval_data(config):
  """(eval iterator of this process's rows, tokenizer)."""
  return _per_process(config, make_eval_iterator)
