"""Training efficiency: validation loss vs training tokens, vanilla vs SSA (docs/ssa.md §3).

    python sweep.py --sweep=strategies --size=small --seeds=0,1,2 --root=runs/sweeps
    python -m ssa.experiments.efficiency --runs=runs/sweeps/small --outdir=docs/figures/efficiency

Reads the validation curve of every run VARIANT_sSEED under --runs (the eval records of its
metrics.jsonl; tokens = step * batch * seq_len of the config saved with its checkpoints)
and writes efficiency.json and efficiency.png (mean curve over seeds with a ±std band, per variant).

Token ratio: for each seed, L = the baseline's final validation
loss after N_base tokens; N_cand = the first token count at which the candidate's curve, linearly
interpolated between eval points, reaches L. ratio = N_base / N_cand (> 1: the candidate needs
fewer tokens). A candidate that never reaches L within its run has no ratio for that seed (reported
as 'not reached'; ratio < 1 is then only bounded, not measured).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Optional, Sequence

import numpy as np
from absl import app
from absl import flags

from ssa import checkpoint as ckpt_lib
from ssa import cli
from ssa import metrics as metrics_lib
from ssa import plots
from ssa import sweep
from ssa.experiments.common import write_json

FLAGS = flags.FLAGS


def read_curve(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(tokens [K], validation loss [K]) of one run, from its metrics.jsonl and run config."""
  path = os.path.join(workdir, metrics_lib.METRICS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist (the run has not trained).')
  tps, num_steps = _batch_and_steps(workdir)
  curve = sweep.read_curve(workdir, tps)
  if curve and curve[-1][0] != num_steps:
    raise ValueError(f'{path}: the last validation is at step {curve[-1][0]} of train.num_steps='
                     f'{num_steps}: the run is unfinished (resume it first).')
  if len(curve) < 2:
    raise ValueError(f'{path}: {len(curve)} validation records; the efficiency curve needs >= 2 '
                     '(train with train.eval_every > 0, train.eval_at_start=True).')
  return np.array([c[1] for c in curve]), np.array([c[2] for c in curve])


def _batch_and_steps(workdir: str) -> tuple[int, int]:
  """(data.batch_size * data.seq_len, train.num_steps) of the run's saved config (its latest
  checkpoint's meta)."""
  found = ckpt_lib.read_saved_config(workdir)
  if found is None:
    raise FileNotFoundError(f'{workdir}: no checkpoint to read the batch shape from.')
  saved = found[1]
  return (int(saved['data']['batch_size']) * int(saved['data']['seq_len']),
          int(saved['train']['num_steps']))


def tokens_to_reach(tokens: np.ndarray, loss: np.ndarray, target: float) -> Optional[float]:
  """First token count at which the piecewise-linear curve reaches loss <= target, else None."""
  tokens, loss = np.asarray(tokens, np.float64), np.asarray(loss, np.float64)
  if loss[0] <= target:
    return float(tokens[0])
  for i in range(1, len(loss)):
    if loss[i] <= target:
      t0, t1, l0, l1 = tokens[i - 1], tokens[i], loss[i - 1], loss[i]
      return float(t0 + (l0 - target) / (l0 - l1) * (t1 - t0))
  return None


def token_ratio(base: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray]
                ) -> Optional[float]:
  """N_base / N_cand (see the module docstring); None when the candidate never reaches L, inf
  when it is there at its first evaluation (token 0)."""
  n = tokens_to_reach(*cand, target=float(base[1][-1]))
  if n is None:
    return None
  return float('inf') if n <= 0 else float(base[0][-1]) / n


def find_runs(root: str, variant: str) -> dict[int, str]:
  """{seed: workdir} of root/VARIANT_sSEED."""
  out = {}
  for d in glob.glob(os.path.join(root, f'{glob.escape(variant)}_s*')):
    m = re.fullmatch(re.escape(variant) + r'_s(\d+)', os.path.basename(d))
    if m and os.path.isdir(d):
      out[int(m.group(1))] = d
  return dict(sorted(out.items()))


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
  xs = np.asarray(xs, np.float64)
  return float(xs.mean()), (float(xs.std(ddof=1)) if len(xs) > 1 else float('nan'))


def analyse(root: str, baseline: str = 'vanilla', candidates: Sequence[str] = ('ssa',)) -> dict:
  """All numbers of the experiment, JSON-ready."""
  base_runs = find_runs(root, baseline)
  if not base_runs:
    raise FileNotFoundError(f'No runs {baseline}_s<seed> under {root}.')
  curves = {baseline: {s: read_curve(d) for s, d in base_runs.items()}}
  out = {'root': root, 'baseline': baseline, 'variants': {}, 'ratios': {}}
  for cand in candidates:
    runs = find_runs(root, cand)
    if not runs:
      raise FileNotFoundError(f'No runs {cand}_s<seed> under {root}.')
    curves[cand] = {s: read_curve(d) for s, d in runs.items()}
  for v, by_seed in curves.items():
    final = [float(c[1][-1]) for c in by_seed.values()]
    m, sd = _mean_std(final)
    out['variants'][v] = {
        'seeds': list(by_seed), 'final_loss_mean': m, 'final_loss_std': sd,
        'curves': {str(s): {'tokens': c[0].tolist(), 'loss': c[1].tolist()}
                   for s, c in by_seed.items()}}
  for cand in candidates:
    shared = sorted(set(curves[baseline]) & set(curves[cand]))
    per_seed = {s: token_ratio(curves[baseline][s], curves[cand][s]) for s in shared}
    got = [r for r in per_seed.values() if r is not None]
    m, sd = _mean_std(got) if got else (float('nan'), float('nan'))
    out['ratios'][cand] = {'per_seed': {str(s): r for s, r in per_seed.items()},
                           'mean': m, 'std': sd, 'reached': len(got), 'seeds': len(shared)}
  return out


def figure(result: dict, path: str) -> str:
  plt = plots._plt()  # pylint: disable=protected-access
  fig, ax = plt.subplots(figsize=(6, 4))
  for v, d in result['variants'].items():
    cs = list(d['curves'].values())
    k = min(len(c['tokens']) for c in cs)
    tokens = np.asarray(cs[0]['tokens'][:k])
    losses = np.asarray([c['loss'][:k] for c in cs])
    m = losses.mean(0)
    ax.plot(tokens, m, label=f'{v} (n={len(cs)})')
    if len(cs) > 1:
      sd = losses.std(0, ddof=1)
      ax.fill_between(tokens, m - sd, m + sd, alpha=0.25)
  ax.set_xlabel('training tokens')
  ax.set_ylabel('validation loss (nats/token)')
  ax.set_title('validation loss vs tokens (mean ± std over seeds)')
  ax.legend()
  return plots._save(fig, path)  # pylint: disable=protected-access


def summary(result: dict) -> str:
  lines = ['| variant | seeds | final val loss | token ratio vs ' + result['baseline'] + ' |',
           '|---|---|---|---|']
  for v, d in result['variants'].items():
    r = result['ratios'].get(v)
    rs = '-' if r is None else (
        f"{r['mean']:.2f} ± {r['std']:.2f} (reached {r['reached']}/{r['seeds']})"
        if r['reached'] else f"not reached (0/{r['seeds']})")
    lines.append(f"| {v} | {len(d['seeds'])} | {d['final_loss_mean']:.4f} ± "
                 f"{d['final_loss_std']:.4f} | {rs} |")
  return '\n'.join(lines)


def write_outputs(result: dict, outdir: str) -> None:
  """efficiency.json and efficiency.png in outdir; the summary table on stdout."""
  write_json(outdir, 'efficiency.json', result)
  figure(result, os.path.join(outdir, 'efficiency.png'))
  print(summary(result))


def main(argv):
  cli.analysis_main(argv, lambda runs: analyse(runs, FLAGS.baseline, FLAGS.candidates),
                    write_outputs)


def define_flags():  # only when run as a script: importing the module defines no flags
  cli.define_runs_flags('efficiency.json / efficiency.png')
  flags.DEFINE_string('baseline', 'vanilla', 'Baseline variant.')
  flags.DEFINE_list('candidates', ['ssa'], 'Variants compared against the baseline.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
