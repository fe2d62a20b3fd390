"""ssa/experiments/passkey_decoy.py + configs/passkey_decoy.py: arms, resume/skip, paired summary."""

import json
import os

import numpy as np
import pytest

from configs import passkey_decoy as exp_config
from ssa import measure
from ssa.data import DataError
from ssa.experiments import passkey_decoy as exp


def test_arms_share_task_data_and_budget():
  cfgs = {a: exp_config.get_config(a) for a in exp_config.ARMS}
  assert cfgs['ssa'].ssa.strategy == 'ssa' and cfgs['vanilla'].ssa.strategy == 'vanilla'
  assert cfgs['ssa'].optim.tau_lr == exp_config.TAU_LR and cfgs['ssa'].ssa.k == 'none'
  for c in cfgs.values():
    d = c.data
    assert (d.dataset, d.passkey_decoys, d.passkey_depth, d.seq_len, d.batch_size, d.seed,
            c.train.num_steps, c.optim.lr) == ('passkey', exp_config.DECOYS, None,
                                               exp_config.TRAIN_LEN, exp_config.BATCH, 0,
                                               exp_config.STEPS, 1e-4)
  assert any(t > exp_config.TRAIN_LEN for t in exp_config.LENGTHS)       # beyond is measured
  with pytest.raises(ValueError, match='unknown arm'):
    exp_config.get_config('nope')


def _tiny(arm, steps):
  c = exp.arm_config(arm, 2 if steps is None else steps)
  c.model.preset = 'llama-tiny'
  for k, v in dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                   d_ff=64, max_len=640).items():
    c.model[k] = v
  c.model.init_from = ''
  c.data.tokenizer = 'byte'
  c.data.seq_len = 512
  c.data.batch_size = 8             # the tests' 8 simulated devices
  c.train.progress_bar = False
  c.checkpoint.every = 2
  return c


def test_the_default_grid_fits_the_task_and_a_short_length_is_refused_before_training(tmp_path):
  exp.check_grid(exp_config.get_config('ssa'), exp.default_grid())  # the real tokenizer and decoys
  grid = {'lengths': [64, 480], 'depths': [0.0], 'num_examples': 1}
  with pytest.raises(DataError, match='seq_len=64 is too short'):
    exp.run(str(tmp_path / 'w'), str(tmp_path / 'r'), ['vanilla'], grid, config_fn=_tiny)
  assert not os.path.exists(tmp_path / 'w') and not os.path.exists(tmp_path / 'r')


def test_end_to_end_resume_skip_and_summary(tmp_path):
  work, res = str(tmp_path / 'w'), str(tmp_path / 'r')
  grid = {'lengths': [480, 600], 'depths': [0.0, 1.0], 'num_examples': 3}
  logs = []
  summary = exp.run(work, res, exp_config.ARMS, grid, log=logs.append, config_fn=_tiny)
  arms = {a: json.load(open(os.path.join(res, f'{a}.json'))) for a in exp_config.ARMS}
  base = arms['base']
  assert base['train_seconds'] == 0.0 and base['decoys'] == exp_config.DECOYS
  assert np.shape(base['correct']) == (2, 2, 3) and np.shape(base['decoy_rate']) == (2, 2)
  assert np.mean(base['correct']) == pytest.approx(base['mean_accuracy'])
  c = summary['comparisons']['ssa - vanilla']
  a = np.ravel(np.asarray(arms['ssa']['correct'])[:1])       # 480 <= 512: within
  b = np.ravel(np.asarray(arms['vanilla']['correct'])[:1])
  assert c['within'] == measure.paired_difference(a, b) and c['within']['sequences'] == 6
  assert c['beyond']['sequences'] == 6
  s = summary['arms']['vanilla']
  assert s['accuracy_within'] == pytest.approx(np.mean(arms['vanilla']['accuracy'][0]))
  assert set(s['by_length']) == {'480', '600'}
  assert os.path.isfile(os.path.join(res, 'summary.md'))
  logs.clear()
  exp.run(work, res, exp_config.ARMS, grid, log=logs.append, config_fn=_tiny)
  assert sum('(skipped)' in m for m in logs) == 3 and not any('training' in m for m in logs)
  exp.run_arm('base', work, res, {**grid, 'num_examples': 2}, log=logs.append, config_fn=_tiny)
  assert any('other settings' in m for m in logs)


def test_a_harder_test_grid_uses_its_own_decoys_and_is_checked_first(tmp_path):
  """--eval_decoys: the test prompts carry that many decoys (the arm's file says so, and its
  settings differ from the training task's, so it is not mistaken for the default test)."""
  c = exp_config.get_config('ssa')
  tight = {'lengths': [150], 'depths': [0.0], 'num_examples': 1}
  exp.check_grid(c, tight)  # 3 decoys fit in 150 SmolLM2 tokens ...
  with pytest.raises(DataError, match='seq_len=150 is too short'):
    exp.check_grid(c, {**tight, 'eval_decoys': 8})  # ... 8 do not
  with pytest.raises(ValueError, match='eval_decoys=-1'):
    exp.check_grid(c, {**tight, 'eval_decoys': -1})
  grid = {'lengths': [480], 'depths': [0.5], 'num_examples': 2, 'eval_decoys': 1}
  r = exp.run_arm('base', str(tmp_path / 'w'), str(tmp_path / 'r'), grid, log=lambda m: None,
                  config_fn=_tiny)
  assert r['decoys'] == 1 and r['settings']['eval_decoys'] == 1
  assert r['settings']['decoys'] == exp_config.DECOYS  # the training task's, unchanged
  assert np.shape(r['correct']) == (1, 1, 2)
