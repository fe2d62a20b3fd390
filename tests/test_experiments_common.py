"""ssa/experiments/common.py: what the experiments share (summary files, list-flag parsing)."""

import json

import pytest

from ssa.experiments import common


def test_summary_files_hold_the_summary_and_its_table(tmp_path):
  logged = []
  summary = {'a': 1.5, 'b': [1, 2]}
  out = common.write_summary_files(str(tmp_path / 'r'), summary, '| a |\n|---|', logged.append)
  assert out is summary and logged == ['| a |\n|---|']
  assert json.loads((tmp_path / 'r' / 'summary.json').read_text()) == summary
  assert (tmp_path / 'r' / 'summary.md').read_text() == '| a |\n|---|\n'


def test_list_flags_are_checked_with_one_line_naming_the_flag():
  assert common.known_names('--arms', ['ssa', 'pts'], ('vanilla', 'pts', 'ssa'), 'X') == ['ssa', 'pts']
  with pytest.raises(ValueError, match=r"^--arms: unknown value\(s\) \['nope'\]; expected some of "
                     r"\['vanilla', 'ssa'\] \(configs/x.py ARMS\)\.$"):
    common.known_names('--arms', ['ssa', 'nope'], ('vanilla', 'ssa'), 'configs/x.py ARMS')
  assert common.integers('--seeds', ['0', '3']) == [0, 3]
  with pytest.raises(ValueError, match=r'^--seeds=0,a; expected integers\.$'):
    common.integers('--seeds', ['0', 'a'])
