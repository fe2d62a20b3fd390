"""grain input pipeline: shuffle, tokenize, pack, batch, shard per JAX process; resumable.

Order of operations (train; eval is the same with no shuffle and one epoch):

  1. documents of the split (ssa/data/sources.py), as a grain MapDataset;
  2. per-process shard of DOCUMENTS: process p of P keeps documents p, p+P, p+2P, ... so the P
     processes together see every document exactly once per epoch;
  3. shuffle (grain index shuffle with config.data.seed; a different permutation every epoch);
  4. repeat config.data.num_epochs times (None = forever);
  5. tokenize (threads, config.data.num_threads), or read the pre-tokenized cache (step 0 below);
  6. pack (grain ConcatThenSplit) into rows of T = config.data.seq_len;
  7. batch B / P rows per process (B = config.data.batch_size), the last batch of a finite run
     padded with empty rows.

Document -> (inputs, targets), the packing rule
  A document with token ids d_1..d_n becomes inputs  = [EOS, d_1, ..., d_n]
                                             targets = [d_1, ..., d_n, EOS]
  so the input stream of an epoch is EOS doc EOS doc ..., i.e. EOS between documents: the EOS that
  ends document k is, on the input side, the first token of document k+1 (GPT-2 convention), and
  every (input -> target) pair lies inside one document. Packing concatenates these pairs and cuts
  them into rows of T; a document longer than the rest of a row continues in the next row. No
  token is dropped or duplicated: over an epoch, the multiset of (input, target) pairs of all rows
  is exactly the documents' pairs.
  Per row: segment_ids = 1, 2, ... for the document pieces in the row in order, 0 on padding;
  positions = 0-based offset inside the piece (restarting at 0 in each row and each document,
  so positions < T always); padding has inputs = targets = tokenizer.pad_id, weights = 0.

Batch (numpy, per process): 'inputs' int32 [B/P, T], 'targets' int32 (next token), 'weights'
float32 (1 on real tokens, 0 on padding), 'segment_ids' int32, 'positions' int32.

Resume: the iterator is a grain DatasetIterator; `get_state()` is a small JSON-able dict (document
index + packing remainder) and `set_state(state)` on a fresh iterator built from the same config
continues with exactly the batches that would have come next.

Pre-tokenized cache (config.data.pretokenize): the whole split is tokenized once and stored as
tokens.npy (int32) + offsets.npy (int64) under
<data_dir>/pretokenized/<dataset id>/<split>/<tokenizer>/, memory-mapped afterwards; batches are
identical with or without it.

Errors (DataError, raised while building, never from inside grain): empty split, record without
the text feature, a train split (of this process) with fewer than seq_len + 1 tokens, batch size
not divisible by the process count, bad seq_len/batch_size.
"""

from __future__ import annotations

import os
from typing import Any

import grain
from grain.experimental import ConcatThenSplitIterDataset
import jax
import numpy as np

from ssa.data import sources
from ssa.data import synthetic
from ssa.data import tokenizers as tokenizers_lib
from ssa.data.errors import DataError

BATCH_KEYS = ('inputs', 'targets', 'weights', 'segment_ids', 'positions')
SYNTHETIC_DATASETS = ('passkey', 'graph')


# ----------------------------------------------------------------------------- documents

def record_text(record: Any, text_key: str) -> str:
  """The text of a source record; bytes are UTF-8 decoded with U+FFFD replacement."""
  text = record[text_key] if isinstance(record, dict) else record
  if isinstance(text, (bytes, np.bytes_)):
    text = bytes(text).decode('utf-8', errors='replace')
  elif isinstance(text, np.ndarray) and text.dtype == object:
    text = text.item()
    text = text.decode('utf-8', errors='replace') if isinstance(text, bytes) else str(text)
  return str(text)


class TokenArraySource:
  """Documents as slices of one flat token array (the pre-tokenized cache)."""

  def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
    self.tokens, self.offsets = tokens, offsets

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> np.ndarray:
    return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], dtype=np.int32)


def pretokenize(text_source: sources.TextSource, tokenizer, cache_root: str,
                split: str, chunk: int = 64) -> TokenArraySource:
  """Tokenizes the split once (cached on disk) and returns it as a TokenArraySource."""
  safe = lambda s: ''.join(c if c.isalnum() or c in '-_.@' else '_' for c in s)
  folder = os.path.join(cache_root, 'pretokenized', safe(text_source.dataset_id), safe(split),
                        safe(tokenizer.fingerprint))
  tok_path, off_path = os.path.join(folder, 'tokens.npy'), os.path.join(folder, 'offsets.npy')
  if not (os.path.exists(tok_path) and os.path.exists(off_path)):
    src = text_source.source
    pieces, lengths = [], [0]
    for start in range(0, len(src), chunk):
      texts = [record_text(src[i], text_source.text_key)
               for i in range(start, min(start + chunk, len(src)))]
      for ids in tokenizer.encode_batch(texts):
        pieces.append(np.asarray(ids, dtype=np.int32))
        lengths.append(len(ids))
    os.makedirs(folder, exist_ok=True)
    pid = os.getpid()
    tokens = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
    np.save(tok_path + f'.{pid}.tmp.npy', tokens)
    np.save(off_path + f'.{pid}.tmp.npy', np.cumsum(lengths, dtype=np.int64))
    os.replace(tok_path + f'.{pid}.tmp.npy', tok_path)  # tokens first: offsets mark completion
    os.replace(off_path + f'.{pid}.tmp.npy', off_path)
  return TokenArraySource(np.load(tok_path, mmap_mode='r'), np.load(off_path))


def _check_text_key(text_source: sources.TextSource) -> None:
  rec = text_source.source[0]
  if isinstance(rec, dict) and text_source.text_key not in rec:
    raise DataError(f'{text_source.description}: records have no feature '
                    f'config.data.text_key={text_source.text_key!r}; they have {sorted(rec)}.')


# ----------------------------------------------------------------------------- packing

class _ToPair(grain.transforms.Map):
  """Document (text record or token array) -> {'inputs': [EOS]+ids, 'targets': ids+[EOS]}."""

  def __init__(self, tokenizer, text_key: str | None):
    self._tok, self._text_key, self._eos = tokenizer, text_key, np.int32(tokenizer.eos_id)

  def map(self, doc):
    if self._text_key is None:
      ids = np.asarray(doc, dtype=np.int32)
    else:
      ids = np.asarray(self._tok.encode(record_text(doc, self._text_key)), dtype=np.int32)
    eos = np.array([self._eos], np.int32)
    return {'inputs': np.concatenate([eos, ids]), 'targets': np.concatenate([ids, eos])}


class _Finalize(grain.transforms.Map):
  """Packed row -> batch fields (pad ids, weights)."""

  def __init__(self, pad_id: int):
    self._pad = np.int32(pad_id)

  def map(self, row):
    seg = row['inputs_segment_ids'].astype(np.int32)
    real = seg > 0
    return {'inputs': np.where(real, row['inputs'], self._pad).astype(np.int32),
            'targets': np.where(real, row['targets'], self._pad).astype(np.int32),
            'weights': real.astype(np.float32),
            'segment_ids': seg,
            'positions': np.where(real, row['inputs_positions'], 0).astype(np.int32)}


class _PadBatch(grain.transforms.Map):
  """Pads a short final batch with empty rows (weights 0, segment 0)."""

  def __init__(self, batch_size: int, pad_id: int):
    self._b, self._pad = batch_size, pad_id

  def map(self, batch):
    n = batch['inputs'].shape[0]
    if n == self._b:
      return batch
    out = {}
    for k, v in batch.items():
      fill = self._pad if k in ('inputs', 'targets') else 0
      out[k] = np.concatenate([v, np.full((self._b - n,) + v.shape[1:], fill, v.dtype)])
    return out


def lm_dataset(documents, tokenizer, *, seq_len: int, batch_size: int, text_key: str | None,
               shuffle: bool, seed: int, num_epochs: int | None, process_index: int = 0,
               process_count: int = 1, num_threads: int = 4,
               prefetch_buffer_size: int = 64) -> grain.IterDataset:
  """The packed LM pipeline over `documents` (random access; records or token arrays).

  `batch_size` is the per-process batch. `text_key=None` means the documents are token arrays.
  """
  ds = grain.MapDataset.source(documents)
  ds = ds[process_index::process_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.map(_ToPair(tokenizer, text_key))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=prefetch_buffer_size))
  it = ConcatThenSplitIterDataset(it, length_struct={'inputs': seq_len, 'targets': seq_len},
                                  split_full_length_features=True)
  it = it.map(_Finalize(tokenizer.pad_id))
  it = it.batch(batch_size, drop_remainder=False)
  return it.map(_PadBatch(batch_size, tokenizer.pad_id))


class ResumableIterator(grain.DatasetIterator):
  """The pipeline's iterator: grain's, with a state that survives a JSON round trip.

  grain's ConcatThenSplit compares its remainder slices with a tuple sentinel, so a state that went
  through JSON (lists) would restore wrongly; set_state turns them back into tuples. Orbax's grain
  checkpoint handlers use get_state/set_state (and save/load of grain.DatasetIterator).
  """

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)

  def __next__(self):
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(_tuple_slices(state))


def _tuple_slices(state):
  if isinstance(state, dict):
    return {k: ({f: tuple(v) for f, v in s.items()} if k == 'remainder_slices' else
                _tuple_slices(s)) for k, s in state.items()}
  return state


# ----------------------------------------------------------------------------- entry points

def _process(process_index, process_count):
  if process_index is None or process_count is None:
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise DataError(f'process_index={process_index} must be in [0, process_count={process_count}).')
  return process_index, process_count


def _check_config(d, process_count):
  if not isinstance(d.seq_len, int) or d.seq_len < 1:
    raise DataError(f'config.data.seq_len={d.seq_len!r}; expected a positive integer.')
  if not isinstance(d.batch_size, int) or d.batch_size < 1:
    raise DataError(f'config.data.batch_size={d.batch_size!r}; expected a positive integer.')
  if d.batch_size % process_count:
    raise DataError(f'config.data.batch_size={d.batch_size} is not divisible by the number of '
                    f'JAX processes ({process_count}); each process loads batch_size / processes.')
  if d.num_epochs is not None and (not isinstance(d.num_epochs, int) or d.num_epochs < 1):
    raise DataError(f'config.data.num_epochs={d.num_epochs!r}; expected None or an integer >= 1.')


def _documents(d, split, tokenizer):
  """(documents, text_key or None) for `split`, pre-tokenized if config.data.pretokenize."""
  text_source = sources.get_text_source(d, split)
  if len(text_source.source) == 0:
    raise DataError(f'{text_source.description} is empty (0 documents).')
  _check_text_key(text_source)
  if d.pretokenize:
    return pretokenize(text_source, tokenizer, sources.data_dir_of(d), split), None, text_source
  return text_source.source, text_source.text_key, text_source


def _count_tokens_at_least(docs, text_key, tokenizer, shard, need) -> int:
  """Tokens (+1 EOS each) in the process's shard, counting only until `need` is reached."""
  total = 0
  for i in shard:
    doc = docs[i]
    n = len(doc) if text_key is None else len(tokenizer.encode(record_text(doc, text_key)))
    total += n + 1
    if total >= need:
      break
  return total


def make_train_iterator(config, process_index: int | None = None,
                        process_count: int | None = None):
  """(iterator, tokenizer) for training. `config` is the full config or config.data.

  The iterator yields per-process numpy batches (module docstring) and has get_state/set_state.
  """
  d = config.data if hasattr(config, 'data') else config
  pi, pc = _process(process_index, process_count)
  _check_config(d, pc)
  if d.dataset in SYNTHETIC_DATASETS:
    ds, tokenizer = synthetic.lm_task_dataset(d, d.train_split, pi, pc)
    return iter(ds), tokenizer
  tokenizer = tokenizers_lib.get_tokenizer(d.tokenizer, d.eos_token)
  docs, text_key, ts = _documents(d, d.train_split, tokenizer)
  shard = range(pi, len(docs), pc)
  if _count_tokens_at_least(docs, text_key, tokenizer, shard, d.seq_len + 1) < d.seq_len + 1:
    raise DataError(f'{ts.description} (process {pi} of {pc}) has fewer than seq_len + 1 = '
                    f'{d.seq_len + 1} tokens: shorter than one training sequence. Use a larger '
                    'corpus or a smaller config.data.seq_len.')
  ds = lm_dataset(docs, tokenizer, seq_len=d.seq_len, batch_size=d.batch_size // pc,
                  text_key=text_key, shuffle=d.shuffle, seed=d.seed, num_epochs=d.num_epochs,
                  process_index=pi, process_count=pc, num_threads=d.num_threads)
  return ResumableIterator(iter(ds)), tokenizer


class PaddedEvalIterator:
  """Yields exactly `num_batches` batches: truncates, or pads with all-zero-weight batches."""

  def __init__(self, iterator, num_batches: int, template: dict[str, np.ndarray]):
    self._it, self._n, self._i, self._template = iterator, num_batches, 0, template

  def __iter__(self):
    return self

  def __next__(self):
    if self._i >= self._n:
      raise StopIteration
    self._i += 1
    try:
      return next(self._it)
    except StopIteration:
      return {k: v.copy() for k, v in self._template.items()}


def make_eval_iterator(config, process_index: int | None = None, process_count: int | None = None,
                       *, split: str | None = None, num_batches: int | None = None):
  """(iterator, tokenizer) over one pass of the eval split (config.data.eval_split), no shuffle.

  num_batches (default config.data.eval_batches): if set, every process yields exactly this many
  batches (truncated, or padded with zero-weight batches), so multi-host eval steps stay in
  lockstep; None = one full pass of this process's shard.
  """
  d = config.data if hasattr(config, 'data') else config
  pi, pc = _process(process_index, process_count)
  _check_config(d, pc)
  split = split or d.eval_split
  num_batches = d.eval_batches if num_batches is None else num_batches
  if d.dataset in SYNTHETIC_DATASETS:
    ds, tokenizer = synthetic.lm_task_dataset(d, split, pi, pc)
    it = iter(ds)
  else:
    tokenizer = tokenizers_lib.get_tokenizer(d.tokenizer, d.eos_token)
    docs, text_key, _ = _documents(d, split, tokenizer)
    it = iter(lm_dataset(docs, tokenizer, seq_len=d.seq_len, batch_size=d.batch_size // pc,
                         text_key=text_key, shuffle=False, seed=d.seed, num_epochs=1,
                         process_index=pi, process_count=pc, num_threads=d.num_threads))
  if num_batches is None:
    return it, tokenizer
  b, t = d.batch_size // pc, d.seq_len
  template = {'inputs': np.full([b, t], tokenizer.pad_id, np.int32),
              'targets': np.full([b, t], tokenizer.pad_id, np.int32),
              'weights': np.zeros([b, t], np.float32),
              'segment_ids': np.zeros([b, t], np.int32), 'positions': np.zeros([b, t], np.int32)}
  return PaddedEvalIterator(it, num_batches, template), tokenizer
