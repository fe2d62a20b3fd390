r"""Recompute every committed results table from its result files, and check it.

    python -m ssa.experiments.recompute                      # check: exit 1 on any difference
    python -m ssa.experiments.recompute --write              # rewrite summary.json / summary.md

Each experiment with result files under docs/results/<name>/ (one JSON per arm or run: the
paired per-sequence / per-example numbers) has a summary (summary.json, summary.md) that its
`write_summary` derives from those files alone, with no model and no data. This recomputes each
summary in a temporary copy of the directory and compares it with the committed one: the
markdown exactly, the JSON numbers to a relative 1e-9 (bootstrap intervals use fixed seeds, so
they recompute exactly too). Figures are not redrawn in check mode.

Experiments (RESULTS): frozen_llm, ft_tuned (finetune_tuned), pretrain_arms, passkey_decoy,
passkey_decoy_hard, passkey_bytes, passkey_bytes_1200;
a directory that does not exist yet (an experiment not run) is reported and skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any, Callable

from absl import flags

from ssa import cli

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _frozen_llm(d, log):
  from ssa.experiments import frozen_llm  # pylint: disable=g-import-not-at-top
  from configs import frozen_llm as cfg  # pylint: disable=g-import-not-at-top
  return frozen_llm.write_summary(d, cfg.ARMS, log=log)


def _ft_tuned(d, log):
  from ssa.experiments import finetune_tuned  # pylint: disable=g-import-not-at-top
  return finetune_tuned.write_summary(d, log=log)


def _pretrain_arms(d, log, draw=False):
  from ssa.experiments import pretrain_arms  # pylint: disable=g-import-not-at-top
  return pretrain_arms.write_summary(d, log=log, draw=draw)


def _passkey_decoy(d, log):
  from ssa.experiments import passkey_decoy  # pylint: disable=g-import-not-at-top
  return passkey_decoy.write_summary(d, log=log)


def _passkey_bytes(d, log):
  from ssa.experiments import passkey_bytes  # pylint: disable=g-import-not-at-top
  return passkey_bytes.write_summary(d, log=log)


# results directory (under docs/results) -> write_summary(directory, log)
RESULTS: dict[str, Callable[..., dict]] = {
    'frozen_llm': _frozen_llm,
    'ft_tuned': _ft_tuned,
    'pretrain_arms': _pretrain_arms,
    'passkey_decoy': _passkey_decoy,
    'passkey_decoy_hard': _passkey_decoy,  # the same arms on a harder test grid (--eval_decoys)
    'passkey_bytes': _passkey_bytes,
    'passkey_bytes_1200': _passkey_bytes,  # the same runs continued to 1,200 steps (--steps=1200)
}


def differences(a: Any, b: Any, path: str = '', rtol: float = 1e-9) -> list[str]:
  """Where two JSON values differ ('path: a != b'); numbers compared to rtol, NaN equal NaN."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f'{path}/{k}: missing on one side' for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
      out += differences(a[k], b[k], f'{path}/{k}', rtol)
    return out
  if isinstance(a, list) and isinstance(b, list):
    if len(a) != len(b):
      return [f'{path}: length {len(a)} != {len(b)}']
    return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{path}[{i}]', rtol)]
  num = (int, float)
  if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool):
    if (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12):
      return []
    return [f'{path}: {a!r} != {b!r}']
  return [] if a == b else [f'{path}: {a!r} != {b!r}']


def check(name: str, results_root: str, log=print) -> list[str]:
  """Differences between docs/results/<name>'s committed summary and one recomputed from its
  result files ([] when they agree)."""
  src = os.path.join(results_root, name)
  with tempfile.TemporaryDirectory() as tmp:
    work = os.path.join(tmp, name)
    shutil.copytree(src, work)
    RESULTS[name](work, lambda *_: None)
    problems = []
    for fname in ('summary.json', 'summary.md'):
      committed, fresh = os.path.join(src, fname), os.path.join(work, fname)
      if not os.path.isfile(committed):
        problems.append(f'{name}/{fname}: not committed')
        continue
      if fname.endswith('.json'):
        with open(committed) as f, open(fresh) as g:
          problems += [f'{name}/{fname}{d}' for d in differences(json.load(f), json.load(g))]
      elif open(committed).read() != open(fresh).read():
        problems.append(f'{name}/{fname}: the recomputed table differs')
  log(f'{name}: ' + ('recomputed, identical' if not problems else f'{len(problems)} difference(s)'))
  return problems


def main(argv):
  cli.check_no_args(argv)
  root = FLAGS.results_root
  problems = []
  for name, fn in RESULTS.items():
    d = os.path.join(root, name)
    if not os.path.isdir(d):
      print(f'{name}: no results directory {d} (not run); skipped')
      continue
    if FLAGS.write:
      (fn(d, print, draw=True) if name == 'pretrain_arms' else fn(d, print))
      print(f'{name}: summary rewritten in {d}')
    else:
      problems += check(name, root)
  for p in problems:
    print(p, file=sys.stderr)
  sys.exit(1 if problems else 0)


if __name__ == '__main__':
  flags.DEFINE_string('results_root', os.path.join(ROOT, 'docs', 'results'),
                      'the directory holding one results directory per experiment')
  flags.DEFINE_bool('write', False, 'rewrite the summaries (and figures) instead of checking')
  cli.run(main)
