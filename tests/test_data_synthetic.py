"""Synthetic tasks: answers recoverable by the documented rules, determinism, bad parameters."""
import re

import numpy as np
import pytest

from configs import base
from ssa.data import DataError, get_tokenizer, make_eval_iterator, make_train_iterator
from ssa.data import synthetic


@pytest.mark.parametrize('spec', ['byte', 'gpt2'])
def test_passkey_answer_recoverable(spec):
  tok = get_tokenizer(spec)
  task = synthetic.PasskeyTask(tok, seq_len=400, depth=0.3, seed=5)
  for i in range(5):
    ex = task.example(i)
    key = int(ex['passkey'])
    assert 10000 <= key <= 99999 and ex['inputs'].shape == (400,)
    assert synthetic.passkey_recover(ex['inputs'], tok) == key
    np.testing.assert_array_equal(ex['inputs'][1:], ex['targets'][:-1])
    scored = ex['targets'][ex['weights'] > 0]
    assert tok.decode(scored) == f' {key}'  # the answer tokens are the only scored targets
    assert np.flatnonzero(ex['weights'])[0] == ex['answer_start']
    assert ex['weights'][ex['answer_start']:].all() and not ex['weights'][:ex['answer_start']].any()
    assert tok.decode(ex['inputs'][:ex['answer_start'] + 1]).endswith('The pass key is')


def test_passkey_depth_deterministic_and_errors():
  tok = get_tokenizer('byte')
  starts = [synthetic.PasskeyTask(tok, 1000, depth=d, seed=0).example(0)['key_start']
            for d in (0.0, 0.5, 1.0)]
  assert starts[0] < starts[1] < starts[2]
  assert abs(starts[1] - 500) < 60  # near the middle of the filler
  a = synthetic.PasskeyTask(tok, 300, depth=None, seed=1)
  b = synthetic.PasskeyTask(tok, 300, depth=None, seed=1)
  for i in range(3):
    ea, eb = a.example(i), b.example(i)
    assert all(np.array_equal(ea[k], eb[k]) for k in ea)
  keys = {int(a.example(i)['passkey']) for i in range(20)}
  assert len(keys) > 15
  assert a.example(0, 'validation')['passkey'] != a.example(0, 'train')['passkey']
  with pytest.raises(DataError, match='too short'):
    synthetic.PasskeyTask(tok, 64)
  with pytest.raises(DataError, match='depth'):
    synthetic.PasskeyTask(tok, 300, depth=1.5)


def test_passkey_through_make_iterators():
  c = base.get_config()
  c.data.dataset, c.data.tokenizer, c.data.seq_len, c.data.batch_size = 'passkey', 'byte', 300, 4
  it, tok = make_train_iterator(c, 1, 2)
  b = next(it)
  assert b['inputs'].shape == (2, 300) and b['weights'].sum() == 2 * 6  # ' 12345' = 6 bytes
  state = it.get_state()
  want = next(it)
  it2, _ = make_train_iterator(c, 1, 2)
  it2.set_state(state)
  assert np.array_equal(next(it2)['inputs'], want['inputs'])
  c.data.passkey_num_examples = 5
  ev, _ = make_eval_iterator(c, 0, 1)
  assert sum(x['inputs'].shape[0] for x in ev) == 5


def test_graph_targets_follow_uniform_neighbour_law():
  g = synthetic.Graph(num_nodes=16, min_degree=1, max_degree=6, seed=3)
  assert g.degrees.min() >= 1 and g.degrees.max() <= 6 and len(set(g.degrees.tolist())) > 1
  p = g.target_law()
  np.testing.assert_allclose(p.sum(1), 1.0)
  counts = np.zeros([16, 16])
  for i in range(200):
    ex = g.example(i, seq_len=64)
    assert p[ex['inputs'], ex['targets']].min() > 0  # every target is a neighbour of its input
    np.add.at(counts, (ex['inputs'], ex['targets']), 1)
  freq = counts / counts.sum(1, keepdims=True)
  busy = counts.sum(1) > 400
  assert busy.sum() >= 4
  np.testing.assert_allclose(freq[busy], p[busy], atol=0.06)
  h = synthetic.Graph(num_nodes=16, min_degree=1, max_degree=6, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(g.neighbours, h.neighbours))
  assert np.array_equal(g.example(7, 32)['inputs'], h.example(7, 32)['inputs'])
  with pytest.raises(DataError, match='graph_max_degree'):
    synthetic.Graph(num_nodes=4, min_degree=1, max_degree=9)


def test_graph_through_make_train_iterator():
  c = base.get_config()
  c.data.dataset, c.data.seq_len, c.data.batch_size, c.data.graph_num_nodes = 'graph', 16, 4, 10
  c.data.graph_max_degree = 5
  it, tok = make_train_iterator(c, 0, 1)
  b = next(it)
  assert tok.vocab_size == 10 and b['inputs'].max() < 10 and b['weights'].all()


def test_denoising_bayes_rule():
  kw = dict(num_tokens=16, dim=4, num_signal=4, sigma_signal=0.5, sigma_noise=2.0, seed=0)
  exact = synthetic.denoising_example(0, **dict(kw, sigma_signal=0.0))
  np.testing.assert_allclose(synthetic.denoising_bayes_estimate(exact['inputs'], 0.0),
                             exact['targets'], rtol=1e-5, atol=1e-6)
  ds = synthetic.denoising_dataset(batch_size=500, num_examples=2000, **kw)
  batches = list(ds)
  x = np.concatenate([b['inputs'] for b in batches])
  mu = np.concatenate([b['targets'] for b in batches])
  assert x.shape == (2000, 16, 5) and (x[..., -1].sum(-1) == 4).all()
  bayes = ((synthetic.denoising_bayes_estimate(x, 0.5) - mu) ** 2).mean()
  naive = ((synthetic.denoising_naive_estimate(x) - mu) ** 2).mean()
  theory = 0.25 / (4 + 0.25)
  assert abs(bayes - theory) < 0.15 * theory and naive > 5 * bayes
  again = list(synthetic.denoising_dataset(batch_size=500, num_examples=2000, **kw))
  assert np.array_equal(again[0]['inputs'], batches[0]['inputs'])
  with pytest.raises(DataError, match='num_signal'):
    synthetic.denoising_example(0, num_tokens=4, num_signal=5)


@pytest.mark.parametrize('spec', ['byte', 'gpt2'])
def test_passkey_with_decoys_only_the_label_tells_the_key(spec):
  tok = get_tokenizer(spec)
  task = synthetic.PasskeyTask(tok, seq_len=600, depth=None, seed=3, decoys=3)
  plain = synthetic.PasskeyTask(tok, seq_len=600, depth=None, seed=3)
  fillers = set()
  for i in range(6):
    ex = task.example(i, 'test')
    key = int(ex['passkey'])
    text = tok.decode(ex['inputs'])
    assert ex['inputs'].shape == (600,) and synthetic.passkey_recover(ex['inputs'], tok) == key
    nums = [int(n) for n in ex['decoy_numbers']]
    assert len(set(nums + [key])) == 4                       # distinct from the key and each other
    for n, start in zip(nums, ex['decoy_starts']):
      sentence = tok.decode(ex['inputs'][start:start + 12])
      assert sentence.lstrip().startswith('The ') and 'pass key' not in sentence
      assert text.count(str(n)) == 2                          # "... is N. Remember it. N is ..."
    labels = [l for l in synthetic.DECOY_LABELS if f'The {l} is' in text]
    assert len(labels) == 3
    assert text.count(str(key)) == 2 + 0 and tok.decode(ex['targets'][ex['weights'] > 0]) == f' {key}'
    assert tok.decode(ex['inputs'][ex['key_start']:]).lstrip().startswith(f'The pass key is {key}')
    assert tok.decode(ex['inputs'][:ex['answer_start'] + 1]).endswith('The pass key is')
    fillers.add(text[:400])
    # deterministic, and the classic task is unchanged by the option's existence
    assert all(np.array_equal(ex[k], task.example(i, 'test')[k]) for k in ex)
    assert 'decoy_numbers' not in plain.example(i, 'test')
  assert len(fillers) == 6                                    # random filler differs per example
  assert any(s in ''.join(fillers) for s in synthetic.RANDOM_FILLER)
  with pytest.raises(DataError, match='decoys'):
    synthetic.PasskeyTask(tok, 600, decoys=len(synthetic.DECOY_LABELS) + 1)
  with pytest.raises(DataError, match='too short'):
    synthetic.PasskeyTask(get_tokenizer('byte'), 200, decoys=4)


@pytest.mark.parametrize('spec', ['byte', 'gpt2'])
def test_compact_passkey_template_is_the_same_task_in_less_text(spec):
  """data.passkey_template='compact': no prefix, each key / decoy sentence once; the answer, the
  recovery rule and the decoys' role as in the standard template, in about a third of the text."""
  tok = get_tokenizer(spec)
  task = synthetic.PasskeyTask(tok, seq_len=256, depth=None, seed=1, decoys=3, template='compact')
  for i in range(6):
    ex = task.example(i, 'test')
    key = int(ex['passkey'])
    text = tok.decode(ex['inputs'])
    assert ex['inputs'].shape == (256,) and synthetic.passkey_recover(ex['inputs'], tok) == key
    assert 'important info' not in text and 'Remember it' not in text
    assert text.count(str(key)) == 1 and f'The pass key is {key}.' in text
    for n, start in zip(ex['decoy_numbers'], ex['decoy_starts']):
      assert text.count(str(int(n))) == 1
      assert re.match(r' The [a-z ]+ is \d{5}\.', tok.decode(ex['inputs'][start:start + 40]))
    assert tok.decode(ex['inputs'][ex['key_start']:]).startswith(f' The pass key is {key}.')
    assert tok.decode(ex['targets'][ex['weights'] > 0]) == f' {key}'
    assert tok.decode(ex['inputs'][:ex['answer_start'] + 1]).endswith('The pass key is')
  byte = get_tokenizer('byte')
  synthetic.PasskeyTask(byte, 160, decoys=3, template='compact')          # fits ...
  with pytest.raises(DataError, match="too short .*'standard' template"):
    synthetic.PasskeyTask(byte, 256, decoys=3)                            # ... the standard needs ~470
  with pytest.raises(DataError, match="template='nope'; expected one of \\['compact', 'standard'\\]"):
    synthetic.PasskeyTask(byte, 256, template='nope')


def test_compact_template_through_the_config():
  c = base.get_config()
  c.data.dataset, c.data.tokenizer, c.data.seq_len, c.data.batch_size = 'passkey', 'byte', 200, 4
  c.data.passkey_decoys, c.data.passkey_template = 2, 'compact'
  c.data.passkey_num_examples = 4
  it, _ = make_eval_iterator(c, 0, 1, split='validation', num_batches=1)
  b = next(iter(it))
  tok = get_tokenizer('byte')
  for row, key in zip(b['inputs'], b['passkey']):
    assert 'Remember it' not in tok.decode(row) and synthetic.passkey_recover(row, tok) == key
