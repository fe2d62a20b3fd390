"""ssa/benchmarks/train_step.py: the paired ratio, and one run's JSON lines."""

import json

import numpy as np
import pytest

from ssa.benchmarks import train_step


def test_paired_ratio_known_answer():
  base = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
  r = train_step.paired_ratio(base, base * 1.05)   # drift cancels within each pair
  assert r['median'] == pytest.approx(1.05) and r['ci95'] == pytest.approx([1.05, 1.05])
  r = train_step.paired_ratio([1.0, 1.0, 1.0], [1.0, 1.2, 1.1])
  assert r['median'] == pytest.approx(1.1) and r['pairs'] == 3
  assert 1.0 <= r['ci95'][0] <= r['ci95'][1] <= 1.2


def test_main_prints_a_json_line_per_strategy_and_the_paired_ratio(capsys):
  train_step.main(['--preset=gpt2-tiny', '--seq_len=32', '--batch=8', '--steps=3',
                   '--strategies=vanilla,ssa'])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith('{')]
  rows, ratio = lines[:2], lines[2]
  assert [r['strategy'] for r in rows] == ['vanilla', 'ssa']
  for r in rows:
    assert r['steps'] == 3 and r['step_s'] > 0 and r['tokens_per_s'] > 0
    assert r['minor_faults_per_step'] >= 0 and r['temperature_params'] >= 0
  assert rows[0]['temperature_params'] == 0 < rows[1]['temperature_params']
  assert ratio['ratio'] == 'ssa/vanilla' and ratio['pairs'] == 3
  assert ratio['ci95'][0] <= ratio['median'] <= ratio['ci95'][1]


def test_profile_table_multiplies_counts_sums_components_and_takes_ratios():
  from ssa.benchmarks import profile_step
  comps = {c: 0.001 for c in profile_step.COMPONENTS}
  comps['full step'] = 1.0
  ours = {'components': comps}
  torch = {'components': {**{c: 0.002 for c in profile_step.COMPONENTS if c != 'nan guard'},
                          'full step': 2.0}}
  n = profile_step.counts(12)
  assert (n['layernorm'], n['attention'], n['mlp'], n['embed']) == (25, 12, 12, 1)
  md = profile_step.table({'ours': ours, 'torch': torch}, 12)
  rows = {l.split('|')[1].strip(): [c.strip() for c in l.split('|')[2:-1]] for l in md.splitlines()[2:]}
  assert rows['layernorm'] == ['25', '1.0', '25', '2.0', '50', '0.50']
  assert rows['nan guard'] == ['1', '1.0', '1', '-', '-', '-']
  ours_sum = 1 + 25 + 12 + 12 + 1 + 1 + 1            # ms: every component but the full step
  torch_sum = 2 * (1 + 25 + 12 + 12 + 1 + 1)
  assert rows['sum of components'][2] == str(ours_sum) and rows['sum of components'][4] == str(torch_sum)
  assert rows['sum of components'][5] == f'{ours_sum / torch_sum:.2f}'
  assert rows['full step - sum'][2] == str(1000 - ours_sum)


def test_profile_component_timings_run_for_our_step():
  from ssa.benchmarks import profile_step
  r = profile_step.profile_ours('gpt2-tiny', 'ssa', 32, 8, reps=1)
  assert set(r['components']) == set(profile_step.COMPONENTS)
  comps = r['components']
  assert all(v > 0 for k, v in comps.items() if k != 'nan guard') and r['strategy'] == 'ssa'
  # the guard row is (guarded update) - (plain update): a difference of medians, either sign
  assert np.isfinite(comps['nan guard']) and abs(comps['nan guard']) < comps['full step']
  with pytest.raises(ValueError, match='gpt2 family'):
    profile_step.profile_ours('llama-tiny', 'vanilla', 32, 8, reps=1)
