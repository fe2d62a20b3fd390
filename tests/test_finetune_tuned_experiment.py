"""ssa/experiments/finetune_tuned.py: the tau lr is chosen on validation, only the chosen arm and
vanilla are scored on test, reruns skip finished files."""

import os

import pytest

from configs import finetune_tuned as exp_config
from ssa.experiments import finetune_tuned as exp


def test_arms_differ_only_in_strategy_and_tau_lr():
  cfgs = {a: exp_config.get_config(a) for a in exp_config.ARMS}
  assert exp_config.ARMS == ('vanilla', 'ssa_lr0.01', 'ssa_lr0.003', 'ssa_lr0.001')
  assert [cfgs[a].optim.tau_lr for a in exp_config.ARMS[1:]] == list(exp_config.TAU_LRS)
  for c in cfgs.values():
    assert (c.data.test_fraction, c.train.num_steps, c.optim.lr, c.data.seed) == (
        0.1, 40, 1e-4, cfgs['vanilla'].data.seed)
  assert cfgs['vanilla'].ssa.strategy == 'vanilla'
  assert {(c.ssa.q, c.ssa.k, c.ssa.v) for a, c in cfgs.items() if a != 'vanilla'} == {
      ('pos+tok', 'none', 'tok')}
  with pytest.raises(ValueError, match='unknown arm'):
    exp_config.get_config('ssa_lr5')


def _tiny(arm, steps):
  c = exp_config.get_config(arm)
  c.model.preset = 'llama-tiny'
  for k, v in dict(vocab_size=512, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                   d_ff=64, max_len=32).items():
    c.model[k] = v
  c.model.init_from = ''
  c.data.tokenizer = 'byte'
  c.data.seq_len = 32
  c.train.num_steps = 3
  c.optim.warmup_steps = 1
  c.train.log_every = 3
  return c


def test_choice_on_validation_then_test_once(tmp_path):
  work, res = str(tmp_path / 'w'), str(tmp_path / 'r')
  logs = []
  summary = exp.run(work, res, eval_batches=2, log=logs.append, config_fn=_tiny)
  val = {a: summary['validation_grid'][a]['loss'] for a in exp_config.ARMS}
  chosen = summary['chosen_on_validation']
  assert chosen == min(exp_config.ARMS[1:], key=val.get)
  tests = sorted(f for f in os.listdir(res) if f.endswith('.test.json'))
  assert tests == sorted([f'{chosen}.test.json', 'vanilla.test.json'])
  c = summary['test'][f'{chosen} - vanilla']
  assert c['overall']['tokens'] == summary['test']['arms']['vanilla']['tokens'] > 0
  assert summary['validation_grid']['vanilla']['vs_vanilla'] is None
  logs.clear()
  exp.run(work, res, eval_batches=2, log=logs.append, config_fn=_tiny)
  assert sum('skipped' in m for m in logs) == 6 and not any('training' in m for m in logs)
  assert exp.write_summary(res, log=lambda *_: None) == summary
