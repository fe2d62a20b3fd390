"""Attention dilution: sorted-attention curves and entropy vs position, vanilla vs SSA
(docs/ssa.md §3).

    python sweep.py --sweep=strategies --size=small --seeds=0,1,2 --root=runs/sweeps
    python -m ssa.experiments.dilution --runs=runs/sweeps/small --outdir=docs/figures/dilution

For every run VARIANT_sSEED under --runs (default variants: vanilla, ssa), the latest checkpoint
is loaded and --num_seqs validation rows of the run's own data (seq_len tokens each) go through
the reference attention with probabilities captured. Per variant, averaged over seeds:
  dilution curves  each query row sorted descending, averaged over rows and heads (one curve per
                   query position t; flatter late rows = diluted attention), per layer;
  entropy          attention entropy by query position, per layer (uniform attention: log t);
  top-1 mass       mass of the largest attention weight at the last position, per layer.
Writes dilution.json, dilution.png (rows = layers, columns = variants) and entropy.png.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from absl import app
from absl import flags

from ssa import cli
from ssa import plots
from ssa.data import make_eval_iterator
from ssa.evaluation import attention_stats, loading
from ssa.experiments.common import write_json
from ssa.experiments.efficiency import find_runs

FLAGS = flags.FLAGS


def validation_rows(config, num_seqs: int) -> np.ndarray:
  """[num_seqs, seq_len] token rows of the run's validation split (same pipeline as training)."""
  it, _ = make_eval_iterator(config, 0, 1, split=config.data.eval_split)
  rows = []
  for batch in it:  # padding rows (zero weights) are skipped
    keep = np.asarray(batch['weights']).sum(-1) > 0
    rows.extend(np.asarray(batch['inputs'], np.int32)[keep])
    if len(rows) >= num_seqs:
      break
  if not rows:
    raise ValueError(f'The validation split of {config.data.dataset!r} gave no rows.')
  return np.stack(rows[:num_seqs])


def run_statistics(workdir: str, num_seqs: int) -> dict:
  """{'dilution': {layer: [T][S]}, 'entropy': {layer: [T]}} of one run's latest checkpoint."""
  loaded = loading.load(workdir=workdir)
  if loaded.step != loaded.config.train.num_steps:
    raise ValueError(f'{workdir}: latest checkpoint is step {loaded.step} of train.num_steps='
                     f'{loaded.config.train.num_steps}: the run is unfinished (resume it first).')
  rows = validation_rows(loaded.config, num_seqs)
  stats = attention_stats.attention_statistics(loaded.model, loaded.variables, rows)
  return {'dilution': stats['dilution'], 'entropy': stats['entropy'], 'step': loaded.step}


def average(per_seed: Sequence[dict]) -> dict:
  """Mean over seeds of the per-layer curves; entropy std over seeds too."""
  layers = list(per_seed[0]['dilution'])
  out = {'dilution': {}, 'entropy': {}, 'entropy_std': {}, 'top1_last': {}, 'entropy_last': {}}
  for layer in layers:
    dil = np.mean([np.asarray(s['dilution'][layer]) for s in per_seed], axis=0)
    ents = np.asarray([s['entropy'][layer] for s in per_seed])
    out['dilution'][layer] = dil.tolist()
    out['entropy'][layer] = ents.mean(0).tolist()
    out['entropy_std'][layer] = (ents.std(0, ddof=1) if len(ents) > 1 else
                                 np.full(ents.shape[1], np.nan)).tolist()
    out['top1_last'][layer] = float(dil[-1, 0])
    out['entropy_last'][layer] = float(ents.mean(0)[-1])
  return out


def analyse(root: str, variants: Sequence[str], num_seqs: int, log=print) -> dict:
  result = {'root': root, 'num_seqs': num_seqs, 'variants': {}}
  for v in variants:
    runs = find_runs(root, v)
    if not runs:
      raise FileNotFoundError(f'No runs {v}_s<seed> under {root}.')
    per_seed = []
    for seed, d in runs.items():
      log(f'{v} seed {seed}: {d}')
      per_seed.append(run_statistics(d, num_seqs))
    result['variants'][v] = {'seeds': list(runs), **average(per_seed)}
  return result


def summary(result: dict) -> str:
  variants = list(result['variants'])
  layers = list(result['variants'][variants[0]]['entropy'])
  T = len(result['variants'][variants[0]]['entropy'][layers[0]])
  lines = [f'| layer | variant | entropy at t={T} (nats; uniform {np.log(T):.2f}) | '
           f'top-1 mass at t={T} |', '|---|---|---|---|']
  for layer in layers:
    for v in variants:
      d = result['variants'][v]
      sd = d['entropy_std'][layer][-1]
      lines.append(f"| {layer} | {v} (n={len(d['seeds'])}) | {d['entropy_last'][layer]:.3f}"
                   f"{'' if np.isnan(sd) else f' ± {sd:.3f}'} | {d['top1_last'][layer]:.3f} |")
  return '\n'.join(lines)


def write_outputs(result: dict, outdir: str) -> None:
  """dilution.json, dilution.png and entropy.png in outdir; the summary table on stdout."""
  vs = result['variants']
  write_json(outdir, 'dilution.json',
             {v: {k: d[k] for k in ('seeds', 'top1_last', 'entropy_last', 'entropy',
                                    'entropy_std')} for v, d in vs.items()})
  seeds = ', '.join(f"{v}: seeds {d['seeds']}" for v, d in vs.items())
  plots.dilution_figure({v: d['dilution'] for v, d in vs.items()},
                        os.path.join(outdir, 'dilution.png'),
                        caption=f"Sorted attention rows, averaged over {result['num_seqs']} "
                        f"sequences, the heads and the seeds of each variant ({seeds}); runs "
                        f"under {result['root']}.")
  plots.entropy_figure({v: d['entropy'] for v, d in vs.items()},
                       os.path.join(outdir, 'entropy.png'))
  print(summary(result))


def main(argv):
  cli.analysis_main(argv, lambda runs: analyse(runs, FLAGS.variants, FLAGS.num_seqs),
                    write_outputs)


def define_flags():  # only when run as a script: importing the module defines no flags
  cli.define_runs_flags('dilution.json / dilution.png / entropy.png')
  flags.DEFINE_list('variants', ['vanilla', 'ssa'], 'Variants to compare.')
  flags.DEFINE_integer('num_seqs', 16, 'Validation rows per run.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
