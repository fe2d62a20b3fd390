"""ssa/experiments/passkey.py and configs/theory_passkey.py: grid, aggregation, config, end to end."""

import json
import os

import numpy as np
import pytest

from configs import theory_passkey
from ssa.data import get_tokenizer
from ssa.experiments import passkey as exp


@pytest.fixture(scope='module')
def word_tok(tmp_path_factory):
  path = exp.word_tokenizer(str(tmp_path_factory.mktemp('tok') / 'tokenizer.json'))
  return path, get_tokenizer('hf:' + path)


def test_word_tokenizer_roundtrip_and_vocab(word_tok):
  _, tok = word_tok
  assert tok.vocab_size == len(exp.word_vocab()) == 95
  assert theory_passkey.get_config('small').model.vocab_size == tok.vocab_size
  ids = tok.encode(' 12345')
  assert len(ids) == 6 and tok.decode(ids) == ' 12345'  # '▁' + one token per digit
  text = ' The pass key is 90210. Remember it. 90210 is the pass key.'
  assert tok.decode(tok.encode(text)) == text
  assert len(tok.encode(text)) == 25


def test_grid_expands_as_documented():
  assert exp.eval_lengths(128, (1.0, 1.5, 2.0, 3.0, 4.0)) == [128, 192, 256, 384, 512]
  grid = exp.eval_grid(100, (1, 2), (0.0, 0.5, 1.0))
  assert grid == [(100, 0.0), (100, 0.5), (100, 1.0), (200, 0.0), (200, 0.5), (200, 1.0)]
  with pytest.raises(ValueError, match='depths'):
    exp.eval_grid(100, (1,), (1.5,))
  with pytest.raises(ValueError, match='length_factors'):
    exp.eval_lengths(100, (0.0,))


def test_cell_accuracy_on_fabricated_outputs(word_tok):
  _, tok = word_tok
  enc = tok.encode
  outs = [enc(' 12345'), enc(' 12345.'), enc(' 123456'), enc(' 1234'), enc(' 54321'), enc('.')]
  keys = [12345] * 6
  # correct: exact digits (a following '.' is fine); wrong: extra digit, missing digit, other key,
  # no number.
  assert exp.cell_accuracy(tok, outs, keys) == pytest.approx(2 / 6)
  with pytest.raises(ValueError):
    exp.cell_accuracy(tok, outs, keys[:2])


def test_aggregate_matches_hand_computation():
  # 2 seeds, 2 lengths x 3 depths.
  a = [[1.0, 0.5, 0.0], [0.0, 0.0, 0.5]]
  b = [[1.0, 1.0, 0.5], [0.5, 0.0, 0.0]]
  r = exp.aggregate({0: a, 1: b})
  # by length: seed means over depths: a -> [0.5, 1/6], b -> [2.5/3, 1/6]
  la, lb = np.array([0.5, 1 / 6]), np.array([2.5 / 3, 1 / 6])
  np.testing.assert_allclose(r['by_length']['mean'], (la + lb) / 2)
  np.testing.assert_allclose(r['by_length']['std'], np.abs(la - lb) / np.sqrt(2))  # ddof=1, n=2
  # by depth: a -> [0.5, 0.25, 0.25], b -> [0.75, 0.5, 0.25]
  np.testing.assert_allclose(r['by_depth']['mean'], [0.625, 0.375, 0.25])
  np.testing.assert_allclose(r['by_depth']['std'], [0.25 / np.sqrt(2), 0.25 / np.sqrt(2), 0.0])
  np.testing.assert_allclose(r['cells']['mean'], [[1.0, 0.75, 0.25], [0.25, 0.0, 0.25]])
  ga, gb = np.mean(a), np.mean(b)
  assert r['overall']['mean'] == pytest.approx((ga + gb) / 2)
  assert r['overall']['std'] == pytest.approx(abs(ga - gb) / np.sqrt(2))
  assert r['num_seeds'] == 2
  one = exp.aggregate({3: a})
  assert one['by_length']['std'] == [0.0, 0.0] and one['overall']['std'] == 0.0


def test_summary_table_rows():
  res = {'lengths': [8, 16], 'depths': [0.0, 1.0],
         'variants': {'vanilla': exp.aggregate({0: [[1.0, 0.0], [0.0, 0.0]]})}}
  t = exp.summary_table(res)
  assert t.splitlines()[0] == '| variant | T=8 | T=16 | depth 0 | depth 1 | all |'
  assert '| vanilla | 0.500 ± 0.000 | 0.000 ± 0.000 | 0.500 ± 0.000 | 0.000 ± 0.000 | 0.250 ± 0.000 |' in t


def test_config_sizes():
  with pytest.raises(ValueError, match='size'):
    theory_passkey.get_config('huge')
  s = theory_passkey.get_config('small')
  assert s.data.dataset == 'passkey' and s.model.pos_emb == 'rope'
  assert s.data.passkey_depth is None
  assert max(exp.eval_lengths(s.data.seq_len, s.experiment.length_factors)) <= s.model.max_len
  assert max(s.experiment.length_factors) == 4.0 and len(s.experiment.seeds) >= 3
  p = theory_passkey.get_config('paper')
  assert p.model.preset == 'pythia-160m' and p.model.max_len == 4 * p.data.seq_len


def test_end_to_end_two_steps(tmp_path, word_tok):
  path, _ = word_tok
  c = theory_passkey.get_config('small')
  c.data.tokenizer = 'hf:' + path
  c.experiment.tokenizer_path = path
  c.experiment.seeds = (0,)
  c.experiment.variants = ('vanilla', 'ssa')
  c.experiment.length_factors = (1.0, 1.5)
  c.experiment.depths = (1.0,)
  c.experiment.num_examples = 2
  c.model.max_len = 192
  c.data.seq_len = 96
  c.data.batch_size = 8           # tests simulate 8 CPU devices
  c.train.num_steps = 2
  c.optim.warmup_steps = 1
  c.train.log_every = 1
  c.train.eval_every = -1          # no validation pass (keeps the test fast)
  out = tmp_path / 'out'
  lines = []
  r = exp.run(c, str(out), str(tmp_path / 'runs'), log=lines.append)
  with open(out / 'passkey.json') as f:
    j = json.load(f)
  assert j == json.loads(json.dumps(r))
  assert j['lengths'] == [96, 144] and j['depths'] == [1.0]
  assert set(j['variants']) == {'vanilla', 'ssa'} and j['meta']['complete']
  for v in j['variants'].values():
    assert set(v) >= {'by_length', 'by_depth', 'cells', 'overall', 'per_seed', 'num_seeds'}
    assert len(v['by_length']['mean']) == 2 and len(v['by_depth']['std']) == 1
    acc = v['per_seed']['0']['accuracy']
    assert np.asarray(acc).shape == (2, 1)
    assert v['overall']['mean'] == pytest.approx(np.mean(acc))
  assert os.path.isfile(out / 'passkey_length.png') and os.path.isfile(out / 'passkey_depth.png')
  assert any('| vanilla |' in line for line in lines)
  # A rerun does not train a finished run again (run() then only evaluates).
  wd = str(tmp_path / 'runs' / 'ssa_s0')
  assert exp.train_run(exp.run_config(c, 'ssa', 0), wd, log=lines.append) == {
      'trained': False, 'seconds': 0.0}
  assert 'training skipped' in lines[-1]
  # The same workdir under another training config is refused, not evaluated as this one.
  c2 = exp.run_config(c, 'ssa', 0)
  c2.optim.lr = 1.0
  with pytest.raises(ValueError, match='holds a run of another config.*optim.lr'):
    exp.train_run(c2, wd, log=lines.append)
