r"""Gather eval_results.json of several runs into one markdown table (ablation sweeps).

    python -m ssa.evaluation.collect /runs/vanilla /runs/ssa /runs/ssa_ws [--metrics=a,b] \
        [--paper] [--out=table.md]

Each argument is a workdir, an eval output dir or an eval_results.json file (glob patterns are
expanded). Rows = runs (named by the directory, or name=PATH), columns = metrics: --paper gives the
paper's zero-shot columns; --metrics picks keys; default = every metric key found, sorted.

'name=PATH' names a row only when `name` has no '/' and the whole argument is not an existing path,
so paths holding '=' (/runs/lr=0.1) are read as paths. Runs whose directory names collide are
named by more of their path (a/seed1, b/seed1); a name given twice (or the same run twice) is an
error (ValueError), never a silently overwritten row.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Optional, Sequence

from ssa.evaluation.zero_shot import PAPER_COLUMNS


def find_results(path: str) -> str:
  """The eval_results.json of a workdir / eval dir / file; FileNotFoundError names the path."""
  path = os.path.expanduser(path)
  for cand in (path, os.path.join(path, 'eval_results.json'),
               os.path.join(path, 'eval', 'eval_results.json')):
    if os.path.isfile(cand):
      return cand
  raise FileNotFoundError(f'No eval_results.json at {path} (looked in {path}, {path}/ and '
                          f'{path}/eval/).')


def split_arg(arg: str) -> tuple[Optional[str], str]:
  """(row name or None, path) of one argument: 'name=PATH' or a path (which may hold '=')."""
  name, sep, path = arg.partition('=')
  full = os.path.expanduser(arg)
  is_path = os.path.exists(full) or (any(c in arg for c in '*?[') and bool(glob.glob(full)))
  if sep and name and path and '/' not in name and os.sep not in name and not is_path:
    return name, path
  return None, arg


def _run_parts(f: str) -> list[str]:
  """Path components of the run directory of results file f (eval_results.json, eval/ dropped)."""
  p = os.path.normpath(os.path.abspath(f))
  if os.path.basename(p) == 'eval_results.json':
    p = os.path.dirname(p)
  if os.path.basename(p) == 'eval':
    p = os.path.dirname(p)
  return [c for c in p.split(os.sep) if c]


def _unique_names(files: Sequence[str]) -> list[str]:
  """The shortest trailing paths of the run directories that tell the runs apart."""
  parts = [_run_parts(f) for f in files]
  depth = [1] * len(files)
  while True:
    names = ['/'.join(p[-d:]) for p, d in zip(parts, depth)]
    grow = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
    if not grow:
      return names
    for i in grow:
      depth[i] += 1


def collect(paths: Sequence[str]) -> dict[str, dict]:
  """{run name: metrics} in the given order; 'name=PATH' sets the row name (see the docstring)."""
  entries = []  # (explicit name or None, results file)
  for arg in paths:
    name, path = split_arg(arg)
    expanded = sorted(glob.glob(os.path.expanduser(path))) if any(c in path for c in '*?[') else [path]
    if not expanded:
      raise FileNotFoundError(f'No run matches {path}.')
    for p in expanded:
      entries.append((name if name and len(expanded) == 1 else None, find_results(p)))
  auto = iter(_unique_names([f for n, f in entries if n is None]))
  rows, source = {}, {}
  for name, f in entries:
    key = name if name is not None else next(auto)
    if key in rows:
      raise ValueError(f'Two runs named {key!r}: {source[key]} and {f} (give distinct '
                       'name=PATH names).')
    with open(f) as fh:
      res = json.load(fh)
    rows[key], source[key] = res.get('metrics', res), f
  return rows


def _fmt(v) -> str:
  if isinstance(v, bool) or v is None:
    return '–' if v is None else str(v)
  if isinstance(v, (int, float)):
    return f'{v:.4g}'
  return str(v)


def table(rows: dict[str, dict], metrics: Optional[Sequence[str]] = None,
          headers: Optional[Sequence[str]] = None) -> str:
  if metrics is None:
    metrics = sorted({k for r in rows.values() for k, v in r.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)})
  headers = list(headers or metrics)
  lines = ['| run | ' + ' | '.join(headers) + ' |', '|---|' + '---:|' * len(headers)]
  for name, r in rows.items():
    lines.append(f'| {name} | ' + ' | '.join(_fmt(r.get(m)) for m in metrics) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('runs', nargs='+', help='workdirs / eval dirs / eval_results.json (name=PATH ok)')
  ap.add_argument('--metrics', default=None, help='comma-separated metric keys (columns)')
  ap.add_argument('--paper', action='store_true', help="the paper's zero-shot columns")
  ap.add_argument('--out', default=None, help='also write the table to this file')
  a = ap.parse_args(argv)
  try:
    rows = collect(a.runs)
  except (FileNotFoundError, ValueError) as e:
    print(f'ERROR: {e}', file=sys.stderr)
    return 2
  if a.paper:
    md = table(rows, [k for k, _ in PAPER_COLUMNS], [h for _, h in PAPER_COLUMNS])
  else:
    md = table(rows, a.metrics.split(',') if a.metrics else None)
  print(md)
  if a.out:
    with open(a.out, 'w') as f:
      f.write(md + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
