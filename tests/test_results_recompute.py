"""Every committed results table recomputes from its committed result files (docs/results/)."""

import json
import os
import shutil

import pytest

from ssa.experiments import recompute

RESULTS = os.path.join(recompute.ROOT, 'docs', 'results')


@pytest.mark.parametrize('name', [n for n in recompute.RESULTS
                                  if os.path.isdir(os.path.join(RESULTS, n))])
def test_committed_summary_recomputes_from_the_result_files(name):
  assert recompute.check(name, RESULTS, log=lambda *_: None) == []


def test_check_reports_a_changed_number(tmp_path):
  shutil.copytree(os.path.join(RESULTS, 'frozen_llm'), tmp_path / 'frozen_llm')
  path = tmp_path / 'frozen_llm' / 'summary.json'
  summary = json.loads(path.read_text())
  summary['_edited'] = 1.0
  path.write_text(json.dumps(summary))
  problems = recompute.check('frozen_llm', str(tmp_path), log=lambda *_: None)
  assert problems == ['frozen_llm/summary.json/_edited: missing on one side']


def test_differences_compares_numbers_to_a_tolerance():
  assert recompute.differences({'a': [1.0, float('nan')]}, {'a': [1.0 + 1e-12, float('nan')]}) == []
  assert recompute.differences({'a': [1.0]}, {'a': [1.001]}) == ['/a[0]: 1.0 != 1.001']
  assert recompute.differences({'a': 'x'}, {'a': 'y', 'b': 1}) == [
      '/b: missing on one side', "/a: 'x' != 'y'"]
