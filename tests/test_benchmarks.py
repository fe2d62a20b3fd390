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
