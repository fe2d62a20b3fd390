"""ssa/experiments/frozen_llm.py + configs/frozen_llm.py: arms, resume/skip, paired summary."""

import json
import os

import numpy as np
import pytest

from configs import frozen_llm as exp_config
from ssa import measure
from ssa.experiments import frozen_llm as exp


def test_arms_start_at_the_identity_and_differ_only_in_their_temperatures():
  cfgs = {a: exp_config.get_config(a) for a in exp_config.ARMS}
  assert cfgs['base'].ssa.strategy == 'vanilla' and cfgs['constant'].ssa.strategy == 'constant'
  for a in ('position', 'ssa'):
    s = cfgs[a].ssa
    assert (s.slope, s.theta_init, s.k) == ('linear', 0.0, 'none')
  assert (cfgs['position'].ssa.q, cfgs['position'].ssa.v) == ('pos', 'none')
  assert (cfgs['ssa'].ssa.q, cfgs['ssa'].ssa.v) == ('pos+tok', 'tok')
  for a, c in cfgs.items():   # same data, order, budget and learning rate in every arm
    assert (c.data.seq_len, c.data.batch_size, c.data.seed, c.train.num_steps,
            c.optim.tau_lr) == (512, exp_config.BATCH, cfgs['base'].data.seed, exp_config.STEPS,
                                exp_config.TAU_LR)
    assert c.optim.mode == ('full' if a == 'base' else 'temperature_only')   # base never trains
  with pytest.raises(ValueError, match='unknown arm'):
    exp_config.get_config('nope')


def _tiny(arm, steps):
  c = exp_config.get_config(arm)
  c.model.preset = 'llama-tiny'
  for k, v in dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                   d_ff=64, max_len=64).items():
    c.model[k] = v
  c.model.init_from = ''
  c.data.tokenizer = 'byte'
  c.data.seq_len = 64
  c.data.batch_size = 8             # the tests' 8 simulated devices
  c.train.num_steps = 4 if steps is None else steps
  c.train.log_every = 2
  c.checkpoint.every = 2
  c.optim.tau_lr = 0.05
  return c


def test_end_to_end_resume_skip_and_summary(tmp_path):
  work, res = str(tmp_path / 'w'), str(tmp_path / 'r')
  logs = []
  for arm in exp_config.ARMS:
    exp.run_arm(arm, work, res, eval_batches=2, log=logs.append, config_fn=_tiny)
  base, pos = (json.load(open(os.path.join(res, f'{a}.json'))) for a in ('base', 'position'))
  assert base['train_tokens'] == 0 and pos['train_tokens'] == 4 * 8 * 64
  assert base['tokens'] == pos['tokens'] > 0 and base['buckets'] == ['1-32', '33-64']
  theta = np.array(list(pos['theta'].values()))
  assert theta.shape == (2, 2) and np.all(theta != 0)         # the slope moved from 0
  assert set(pos['tau_by_position']) == {'q'}
  assert set(json.load(open(os.path.join(res, 'ssa.json')))['tau_by_position']) == {'q', 'v'}
  assert base['tau_by_position'] == {}
  # A rerun skips every finished arm; other settings redo it.
  logs.clear()
  for arm in exp_config.ARMS:
    exp.run_arm(arm, work, res, eval_batches=2, log=logs.append, config_fn=_tiny)
  assert sum('(skipped)' in m for m in logs) == 4 and not any('training' in m for m in logs)
  logs.clear()
  exp.run_arm('constant', work, res, eval_batches=1, log=logs.append, config_fn=_tiny)
  assert any('other settings' in m for m in logs)
  exp.run_arm('constant', work, res, eval_batches=2, log=logs.append, config_fn=_tiny)
  # The summary is recomputed from the files alone and pairs the same sequences.
  summary = exp.write_summary(res, exp_config.ARMS, log=lambda *_: None)
  c = summary['comparisons']['position - constant']
  const = json.load(open(os.path.join(res, 'constant.json')))
  a = np.sum(pos['sequence_bucket_nll'], 1)
  b = np.sum(const['sequence_bucket_nll'], 1)
  w = np.sum(pos['sequence_bucket_tokens'], 1)
  assert c['overall']['mean'] == pytest.approx((a - b).sum() / w.sum())
  assert c['overall'] == measure.paired_difference(a, b, w)
  assert set(c['by_position']) == {'1-32', '33-64'}
  assert os.path.isfile(os.path.join(res, 'summary.md'))


def test_compare_refuses_unpaired_results():
  a = {'arm': 'a', 'buckets': ['1-32'], 'sequence_bucket_nll': [[1.0], [2.0]],
       'sequence_bucket_tokens': [[2.0], [2.0]]}
  b = dict(a, arm='b', sequence_bucket_tokens=[[2.0], [3.0]])
  with pytest.raises(ValueError, match='same tokens'):
    exp.compare(a, b)
  with pytest.raises(ValueError, match='same sequences'):
    exp.compare(a, dict(a, arm='c', sequence_bucket_nll=[[1.0]]))
