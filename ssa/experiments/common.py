"""Helpers shared by the experiments: summary statistics, their JSON / markdown output, the
command lines' list flags."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np


def mean_std(xs) -> dict:
  """Mean and sample std (ddof=1, as every table of the project; 0 for one value)."""
  xs = np.asarray(xs, np.float64)
  return {'mean': float(xs.mean()), 'std': float(xs.std(ddof=1)) if xs.size > 1 else 0.0}


def write_json(outdir: str, name: str, obj: Any) -> str:
  """Writes obj to outdir/name (created if needed; indent 1) and returns the path."""
  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, name)
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1)
  return path


def with_steps(config, steps: Optional[int]):
  """config with train.num_steps = steps (None: unchanged) and the warmup capped at a tenth of
  them (the experiments' --steps override: smoke runs, or continuing runs to more steps)."""
  if steps is not None:
    config.train.num_steps = steps
    config.optim.warmup_steps = min(config.optim.warmup_steps, max(0, steps // 10))
  return config


def write_summary_files(results: str, summary: dict, md: str, log: Callable = print) -> dict:
  """Writes <results>/summary.json and summary.md (the markdown table), logs the table and
  returns summary."""
  write_json(results, 'summary.json', summary)
  with open(os.path.join(results, 'summary.md'), 'w') as f:
    f.write(md + '\n')
  log(md)
  return summary


def known_names(flag: str, values: Sequence[str], known: Sequence[str], where: str) -> list[str]:
  """values, or ValueError naming the unknown ones (flag: '--arms'; where: 'configs/x.py ARMS')."""
  unknown = [v for v in values if v not in known]
  if unknown:
    raise ValueError(f'{flag}: unknown value(s) {unknown}; expected some of {list(known)} '
                     f'({where}).')
  return list(values)


def integers(flag: str, values: Sequence[str]) -> list[int]:
  """[int(v)], or ValueError naming the flag ('--seeds=a,b; expected integers.')."""
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f'{flag}={",".join(values)}; expected integers.') from None
