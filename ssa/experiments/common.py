"""Helpers shared by the theory experiments: summary statistics and their JSON output."""

from __future__ import annotations

import json
import os
from typing import Any

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
