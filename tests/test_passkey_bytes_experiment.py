"""ssa/experiments/passkey_bytes.py + configs/passkey_bytes.py: the byte-level pre-training arms
fine-tuned on the compact passkey-among-decoys task (pre-train or reuse, export, fine-tune, test)."""

import json
import os

import numpy as np
import pytest

from configs import passkey_bytes as exp_config
from configs import pretrain_arms as pretrain_config
from ssa import measure
from ssa.convert.ssa_format import load_ssa
from ssa.data import DataError
from ssa.experiments import passkey_bytes as exp
from ssa.experiments import pretrain_arms

T = 160  # the compact template with 3 decoys needs ~158 bytes


def test_runs_start_from_their_pretraining_arm_and_share_the_task():
  cfgs = {a: exp.finetune_config(a, 1, f'/w/init/{a}_s1') for a in exp_config.ARMS}
  for arm, c in cfgs.items():
    pre = pretrain_config.get_config(f'{arm},1')
    assert c.model.init_from == f'ssa:/w/init/{arm}_s1'
    assert c.ssa.to_dict() == pre.ssa.to_dict()          # the arm's own temperatures
    assert {k: c.model[k] for k in ('n_layers', 'd_model', 'n_heads', 'max_len')} == {
        k: pre.model[k] for k in ('n_layers', 'd_model', 'n_heads', 'max_len')}
    d = c.data
    assert (d.dataset, d.passkey_template, d.passkey_decoys, d.passkey_depth, d.seq_len,
            d.batch_size, d.seed, d.tokenizer, c.train.num_steps, c.optim.lr) == (
                'passkey', 'compact', exp_config.DECOYS, None, exp_config.TRAIN_LEN,
                exp_config.BATCH, 1, 'byte', exp_config.STEPS, exp_config.LR)
  assert max(exp_config.LENGTHS) <= cfgs['ssa'].model.max_len
  assert 'init_from' not in exp.finetune_config('ssa', 0, '').model or (
      exp.finetune_config('ssa', 0, '').model.init_from == '')


def _shrink(c):
  for k, v in dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                   max_len=T).items():
    c.model[k] = v
  c.data.seq_len = T
  c.data.batch_size = 8             # the tests' 8 simulated devices
  c.data.eval_batches = 1
  c.train.eval_every = -1
  c.train.eval_at_start = False
  c.train.progress_bar = False
  c.train.log_every = 1
  c.checkpoint.every = 2
  return c


def _pre(arm, seed, steps):
  return _shrink(pretrain_arms.arm_config(arm, seed, 3))


def _fine(arm, seed, init, steps):
  return _shrink(exp.finetune_config(arm, seed, init, 2 if steps is None else steps))


def test_end_to_end_pretrain_export_finetune_skip_and_paired_summary(tmp_path):
  pre, work, res = (str(tmp_path / n) for n in ('pre', 'w', 'r'))
  grid = {'lengths': [T], 'depths': [0.0, 1.0], 'num_examples': 3}
  logs = []
  summary = exp.run(pre, work, res, [0, 1], ['vanilla', 'ssa'], grid, log=logs.append,
                    pretrain_config_fn=_pre, finetune_config_fn=_fine)
  # the pre-training runs finished in pre/ and were exported with their temperatures
  mcfg, scfg, variables, extra = load_ssa(os.path.join(work, 'init', 'ssa_s1'))
  assert scfg.strategy == 'ssa' and mcfg.max_len == T and extra['source'].endswith('ssa_s1')
  assert 'tau_q' in variables['params']['layer_0']['attn']
  assert os.path.isdir(os.path.join(pre, 'vanilla_s0', 'checkpoints'))
  runs = {(a, s): json.load(open(os.path.join(res, f'{a}_s{s}.json')))
          for a in ('vanilla', 'ssa') for s in (0, 1)}
  r = runs['ssa', 0]
  assert r['template'] == 'compact' and r['decoys'] == exp_config.DECOYS
  assert r['settings']['template'] == 'compact' and np.shape(r['correct']) == (1, 2, 3)
  c = summary['comparisons']['ssa - vanilla']
  flat = lambda x: np.ravel(np.asarray(x['correct'], np.float64))
  want = measure.paired_difference(np.stack([flat(runs['ssa', s]) for s in (0, 1)]),
                                   np.stack([flat(runs['vanilla', s]) for s in (0, 1)]))
  assert c['seed_ids'] == [0, 1] and c['seeds'] == 2 and {k: c[k] for k in want} == want
  a = summary['arms']['vanilla']
  assert a['accuracy'] == pytest.approx(np.mean([flat(runs['vanilla', s]).mean() for s in (0, 1)]))
  assert set(a['accuracy_by_seed']) == {'0', '1'} and set(a['by_depth']) == {'0.0', '1.0'}
  assert os.path.isfile(os.path.join(res, 'summary.md'))
  # the fine-tune's answer-loss curve is in the result; the summary's final loss is its tail mean
  assert [s for s, _ in r['train_curve']] == [1, 2]
  assert summary['arms']['ssa']['final_answer_loss_by_seed']['0'] == pytest.approx(
      np.mean([l for _, l in r['train_curve']]))
  assert summary['chance_answer_loss'] == pytest.approx((np.log(9) + 4 * np.log(10)) / 6)
  chance = summary['chance_answer_loss']
  curve = lambda *ls: {'train_curve': [[1, 12.0]] + [[25 * (i + 1), l] for i, l in enumerate(ls)]}
  assert exp.onset_step(curve(chance, chance - 0.05, chance - 0.11, 1.0)) == 75
  assert exp.onset_step(curve(chance + 0.2, chance - 0.09)) is None and exp.onset_step({}) is None
  # a rerun skips every run (no pre-training, export or fine-tuning)
  logs.clear()
  exp.run(pre, work, res, [0, 1], ['vanilla', 'ssa'], grid, log=logs.append,
          pretrain_config_fn=_pre, finetune_config_fn=_fine)
  assert sum('(skipped)' in m for m in logs) == 4
  assert not any('] training' in m or 'exported' in m for m in logs), logs
  assert exp.write_summary(res, log=lambda m: None) == summary


def test_a_grid_too_short_for_the_template_is_refused_before_anything_trains(tmp_path):
  grid = {'lengths': [100], 'depths': [0.0], 'num_examples': 1}
  with pytest.raises(DataError, match='seq_len=100 is too short'):
    exp.run(str(tmp_path / 'p'), str(tmp_path / 'w'), str(tmp_path / 'r'), [0], ['vanilla'],
            grid, pretrain_config_fn=_pre, finetune_config_fn=_fine)
  assert not any(os.path.exists(tmp_path / n) for n in ('p', 'w', 'r'))
  with pytest.raises(FileNotFoundError, match='no run result file'):
    exp.write_summary(str(tmp_path / 'r'))
