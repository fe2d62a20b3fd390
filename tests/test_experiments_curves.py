"""Training-efficiency and attention-dilution experiments (ssa/experiments/{efficiency,dilution}.py)."""

import json
import os
import shutil

import numpy as np
import pytest

from ssa import train_lib
from ssa.experiments import dilution, efficiency
from tests.test_train import _config


def test_tokens_to_reach_interpolates_linearly():
  tokens, loss = np.array([0, 100, 200]), np.array([5.0, 3.0, 2.0])
  assert efficiency.tokens_to_reach(tokens, loss, 4.0) == pytest.approx(50.0)
  assert efficiency.tokens_to_reach(tokens, loss, 2.5) == pytest.approx(150.0)
  assert efficiency.tokens_to_reach(tokens, loss, 5.5) == 0.0
  assert efficiency.tokens_to_reach(tokens, loss, 1.9) is None


def test_token_ratio_of_a_curve_compressed_in_tokens_is_the_compression():
  tokens = np.linspace(0, 1000, 11)
  loss = 5.0 * np.exp(-tokens / 400.0) + 1.0
  base = (tokens, loss)
  fast = (tokens / 1.45, loss)  # the same curve, reached with 1.45x fewer tokens
  assert efficiency.token_ratio(base, fast) == pytest.approx(1.45)
  assert efficiency.token_ratio(base, base) == pytest.approx(1.0)
  assert efficiency.token_ratio(base, (tokens, loss + 0.1)) is None  # never reaches
  assert efficiency.token_ratio(base, (tokens, loss - 10.0)) == float('inf')  # there at token 0


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Real tiny runs vanilla_s0 / ssa_s0 and copies *_s1 with hand-edited validation curves."""
  root = str(tmp_path_factory.mktemp('sweep'))
  for name, strategy in (('vanilla', 'vanilla'), ('ssa', 'ssa')):
    cfg = _config(**{'ssa.strategy': strategy, 'train.num_steps': 4, 'train.eval_every': 2,
                     'train.eval_at_start': True, 'checkpoint.every': 0})
    train_lib.train_and_evaluate(cfg, os.path.join(root, f'{name}_s0'))
    shutil.copytree(os.path.join(root, f'{name}_s0'), os.path.join(root, f'{name}_s1'))
  curves = {'vanilla_s1': [5.0, 4.0, 3.0], 'ssa_s1': [5.0, 3.0, 2.5]}
  for run, losses in curves.items():
    with open(os.path.join(root, run, 'metrics.jsonl'), 'w') as f:
      for step, l in zip((0, 2, 4), losses):
        f.write(json.dumps({'step': step, 'kind': 'eval', 'loss': l}) + '\n')
  return root


def test_efficiency_analysis_on_runs(runs):
  res = efficiency.analyse(runs, 'vanilla', ['ssa'])
  tps = 8 * 32  # configs/tiny.py batch x seq_len
  v1 = res['variants']['vanilla']['curves']['1']
  assert v1 == {'tokens': [0, 2 * tps, 4 * tps], 'loss': [5.0, 4.0, 3.0]}
  # seed 1 by hand: vanilla ends at 3.0 after 4 steps; ssa reaches 3.0 at step 2 -> ratio 2.
  assert res['ratios']['ssa']['per_seed']['1'] == pytest.approx(2.0)
  v0 = efficiency.read_curve(os.path.join(runs, 'vanilla_s0'))[1]
  finals = [v0[-1], 3.0]
  assert res['variants']['vanilla']['final_loss_mean'] == pytest.approx(np.mean(finals))
  assert res['variants']['vanilla']['final_loss_std'] == pytest.approx(np.std(finals, ddof=1))
  assert '| ssa | 2 |' in efficiency.summary(res)
  with pytest.raises(FileNotFoundError, match='No runs pts_s'):
    efficiency.analyse(runs, 'vanilla', ['pts'])
  # An unfinished run (last validation before train.num_steps) is refused, not averaged in.
  cut = os.path.join(runs, 'ssa_s1', 'metrics.jsonl')
  lines = open(cut).read().splitlines()
  with open(cut, 'w') as f:
    f.write('\n'.join(lines[:-1]) + '\n')
  try:
    with pytest.raises(ValueError, match='step 2 of train.num_steps=4: the run is unfinished'):
      efficiency.analyse(runs, 'vanilla', ['ssa'])
  finally:
    with open(cut, 'w') as f:
      f.write('\n'.join(lines) + '\n')


def test_dilution_statistics_on_runs(runs):
  res = dilution.analyse(runs, ['vanilla', 'ssa'], num_seqs=4, log=lambda *_: None)
  for v in ('vanilla', 'ssa'):
    d = res['variants'][v]
    assert d['seeds'] == [0, 1] and list(d['entropy']) == ['layer_0', 'layer_1']
    ent = np.asarray(d['entropy']['layer_0'])
    T = len(ent)
    assert T == 32 and np.all(ent <= np.log(np.arange(1, T + 1)) + 1e-6)  # bounded by uniform
    curves = np.asarray(d['dilution']['layer_0'])
    np.testing.assert_allclose(curves.sum(-1), 1.0, rtol=1e-5)  # each row a distribution
    # s1 is a copy of s0 (same checkpoint): the mean equals s0 and the std is 0.
    assert np.allclose(d['entropy_std']['layer_0'], 0.0, atol=1e-9)


def test_dilution_average_is_the_mean_over_seeds():
  a = {'dilution': {'l': [[1.0, 0.0], [0.6, 0.4]]}, 'entropy': {'l': [0.0, 0.5]}}
  b = {'dilution': {'l': [[1.0, 0.0], [0.8, 0.2]]}, 'entropy': {'l': [0.0, 0.3]}}
  out = dilution.average([a, b])
  np.testing.assert_allclose(out['dilution']['l'], [[1.0, 0.0], [0.7, 0.3]])
  assert out['entropy_last']['l'] == pytest.approx(0.4)
  assert out['top1_last']['l'] == pytest.approx(0.7)
  assert out['entropy_std']['l'][1] == pytest.approx(np.std([0.5, 0.3], ddof=1))
