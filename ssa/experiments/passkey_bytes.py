r"""Passkey among decoys for the byte-level pre-training arms (configs/passkey_bytes.py).

    python -m ssa.experiments.passkey_bytes --pretrain_workdir=runs/pretrain_arms \
        --workdir=runs/passkey_bytes --results=docs/results/passkey_bytes --seeds=0,1
    python -m ssa.experiments.passkey_bytes --results=docs/results/passkey_bytes --summarize_only

Per seed, per arm (vanilla, pts, ssa: the headline comparison's arms, ssa/experiments/pretrain_arms.py):
  1. the pre-trained Shakespeare byte model <pretrain_workdir>/ARM_sSEED, trained there first if it
     is not (the same config and resumable checkpoints as pretrain_arms, which skips it later);
  2. its final weights exported once to <workdir>/init/ARM_sSEED (the SSA checkpoint format, with
     the temperatures) and fine-tuned from them on the passkey-among-decoys task in
     <workdir>/ARM_sSEED (resumable);
  3. greedy decoding of the answer on the same test examples for every run (task seed 0):
     <results>/ARM_sSEED.json, as ssa/experiments/passkey_decoy.py writes it (the 0/1 outcome of
     every example, accuracy by length and depth, the rate of answers that are a decoy's number).
A rerun skips runs whose result file was made with the same settings.

The summary (<results>/summary.json, summary.md) gives each arm's accuracy per seed and its mean,
by depth, the decoy rate, the final training answer loss per seed against CHANCE_ANSWER_LOSS (what
knowing only the key's format gives) and the first step it is ONSET_MARGIN below that, and each pair of arms' paired difference in accuracy on the same
examples, with a 95% interval from a bootstrap over seeds and examples and the minimum detectable
effect (ssa/measure.py).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np
from absl import flags

from configs import passkey_bytes as exp_config
from ssa import cli
from ssa import measure
from ssa.convert.ssa_format import CONFIG_FILE, save_ssa
from ssa.data import DataError
from ssa.experiments import arms as arms_lib
from ssa.experiments import passkey_decoy
from ssa.experiments import pretrain_arms
from ssa.experiments.common import integers, known_names, with_steps, write_summary_files

FLAGS = flags.FLAGS
COMPARISONS = (('ssa', 'vanilla'), ('pts', 'vanilla'), ('ssa', 'pts'))
# The training answer loss (nats per answer byte) of a model that knows the answer is a space and
# a five-digit key (first digit 1-9, uniform keys) and nothing about which key: the space ~0,
# then ln 9 + 4 ln 10 over the 6 answer bytes.
CHANCE_ANSWER_LOSS = (math.log(9) + 4 * math.log(10)) / 6
FINAL_POINTS = 4   # the final answer loss: mean of the last FINAL_POINTS training-curve records
# Onset of learning: the first training-curve record ONSET_MARGIN nats below CHANCE_ANSWER_LOSS
# (the curve's records average 25 steps; the runs that never learn stay within ~0.03 of it).
ONSET_MARGIN = 0.1


def run_name(arm: str, seed: int) -> str:
  return pretrain_arms.run_name(arm, seed)


def finetune_config(arm: str, seed: int, init_dir: str, steps: Optional[int] = None):
  c = exp_config.get_config(f'{arm},{seed}')
  if init_dir:
    c.model.init_from = f'ssa:{init_dir}'
  return with_steps(c, steps)


def default_grid() -> dict:
  return {'lengths': list(exp_config.LENGTHS), 'depths': list(exp_config.DEPTHS),
          'num_examples': exp_config.NUM_EXAMPLES}


def init_dir(workdir: str, arm: str, seed: int) -> str:
  """Where ARM_sSEED's pre-trained weights are exported (the fine-tune's model.init_from)."""
  return os.path.join(workdir, 'init', run_name(arm, seed))


def pretrained(arm: str, seed: int, pretrain_workdir: str, workdir: str, log=print,
               pretrain_config_fn: Callable = pretrain_arms.arm_config) -> str:
  """init_dir(workdir, arm, seed), exported from the run <pretrain_workdir>/ARM_sSEED (trained
  there first if it has not finished) unless it is there already."""
  name = run_name(arm, seed)
  out = init_dir(workdir, arm, seed)
  if os.path.isfile(os.path.join(out, CONFIG_FILE)):
    return out
  model, variables, _ = arms_lib.train_or_load(
      pretrain_config_fn(arm, seed, None), os.path.join(pretrain_workdir, name),
      log=lambda m: log(f'[{name} pre-training] {m}'))
  save_ssa(variables, model.cfg, model.ssa, out,
           extra={'source': os.path.join(pretrain_workdir, name)})
  log(f'[{name}] pre-trained weights exported to {out}')
  return out


def run(pretrain_workdir: str, workdir: str, results: str, seeds: Sequence[int],
        arms: Sequence[str], grid: Optional[dict] = None, steps: Optional[int] = None, log=print,
        pretrain_config_fn: Callable = pretrain_arms.arm_config,
        finetune_config_fn: Callable = finetune_config) -> dict:
  """Every (seed, arm): pre-trained weights, fine-tune, test (a run whose result file has the
  same settings is skipped, with no pre-training or export); then the summary."""
  grid = grid or default_grid()
  passkey_decoy.check_grid(finetune_config_fn(arms[0], seeds[0], '', steps), grid)
  t0 = time.time()
  for seed in seeds:
    for arm in arms:
      passkey_decoy.run_arm(
          run_name(arm, seed), workdir, results, grid, steps, log,
          config_fn=lambda _, st, a=arm, s=seed: finetune_config_fn(
              a, s, init_dir(workdir, a, s), st),
          prepare=lambda a=arm, s=seed: pretrained(a, s, pretrain_workdir, workdir, log,
                                                   pretrain_config_fn))
      log(f'elapsed {time.time() - t0:.0f} s')
  return write_summary(results, seeds, log)


def load_runs(results: str, seeds: Optional[Sequence[int]] = None) -> dict:
  """{arm: {seed: result}} of the ARM_sSEED.json files in results (the pre-training arms' names)."""
  return pretrain_arms.load_runs(results, seeds)


def _outcomes(r: dict) -> np.ndarray:
  """Every example's 0/1 outcome, in grid order (length, depth, example)."""
  return np.asarray([x for row in r['correct'] for cell in row for x in cell], np.float64)


def final_loss(r: dict) -> Optional[float]:
  """Mean training answer loss over the run's last FINAL_POINTS curve records (None: no curve)."""
  curve = r.get('train_curve') or []
  return float(np.mean([l for _, l in curve[-FINAL_POINTS:]])) if curve else None


def onset_step(r: dict) -> Optional[int]:
  """The first step whose training answer loss is ONSET_MARGIN below chance (None: never)."""
  for step, loss in r.get('train_curve') or []:
    if step > 1 and loss < CHANCE_ANSWER_LOSS - ONSET_MARGIN:
      return int(step)
  return None


def summarize(runs: dict) -> dict:
  out = {'arms': {}, 'comparisons': {}, 'chance_answer_loss': CHANCE_ANSWER_LOSS}
  first = next(iter(next(iter(runs.values())).values()))
  out.update({k: first[k] for k in ('lengths', 'depths', 'num_examples')})
  out['settings'] = first['settings']
  for arm in [a for a in exp_config.ARMS if a in runs]:   # in the config's order
    by_seed = runs[arm]
    seeds = sorted(by_seed)
    acc = [float(_outcomes(by_seed[s]).mean()) for s in seeds]
    depth = np.mean([np.asarray(by_seed[s]['accuracy']).mean(0) for s in seeds], 0)
    out['arms'][arm] = {
        'seeds': seeds, 'accuracy_by_seed': dict(zip(map(str, seeds), acc)),
        'accuracy': float(np.mean(acc)),
        'by_depth': dict(zip(map(str, first['depths']), depth.tolist())),
        'by_length': dict(zip(map(str, first['lengths']), np.mean(
            [np.asarray(by_seed[s]['accuracy']).mean(1) for s in seeds], 0).tolist())),
        'decoy_rate': float(np.mean([by_seed[s].get('mean_decoy_rate', 0.0) for s in seeds])),
        'final_answer_loss_by_seed': {str(s): final_loss(by_seed[s]) for s in seeds},
        'onset_step_by_seed': {str(s): onset_step(by_seed[s]) for s in seeds},
        'train_seconds': float(sum(by_seed[s]['train_seconds'] for s in seeds)),
        'eval_seconds': float(sum(by_seed[s]['eval_seconds'] for s in seeds))}
  for x, y in COMPARISONS:
    if x in runs and y in runs:
      seeds = sorted(set(runs[x]) & set(runs[y]))
      if seeds:
        a = np.stack([_outcomes(runs[x][s]) for s in seeds])
        b = np.stack([_outcomes(runs[y][s]) for s in seeds])
        out['comparisons'][f'{x} - {y}'] = {**measure.paired_difference(a, b),
                                            'seed_ids': seeds}
  return out


def markdown(summary: dict) -> str:
  lens, depths = summary['lengths'], summary['depths']
  lines = ['| arm | accuracy (mean over seeds) | per seed | ' +
           ' | '.join(f'T={t}' for t in lens) + ' | ' +
           ' | '.join(f'depth {d:g}' for d in depths) + ' | answers that are a decoy | '
           f'final training answer loss per seed (chance {summary["chance_answer_loss"]:.3f}) | '
           f'first step {ONSET_MARGIN} below chance, per seed |',
           '|---' * (len(lens) + len(depths) + 6) + '|']
  fmt = lambda v: '-' if v is None else f'{v:.3f}'
  for a, d in summary['arms'].items():
    lines.append(f'| {a} | {d["accuracy"]:.3f} | ' +
                 ' / '.join(f'{v:.3f}' for v in d['accuracy_by_seed'].values()) + ' | ' +
                 ' | '.join(f'{d["by_length"][str(t)]:.3f}' for t in lens) + ' | ' +
                 ' | '.join(f'{d["by_depth"][str(float(x))]:.3f}' for x in depths) +
                 f' | {d["decoy_rate"]:.3f} | ' +
                 ' / '.join(map(fmt, d['final_answer_loss_by_seed'].values())) + ' | ' +
                 ' / '.join('never' if v is None else str(v)
                            for v in d['onset_step_by_seed'].values()) + ' |')
  lines += ['', '| comparison (same examples) | mean [95% CI] | MDE | seeds x examples |',
            '|---|---|---|---|']
  for name, c in summary['comparisons'].items():
    lines.append(f'| {name} | {c["mean"]:+.3f} [{c["ci95"][0]:+.3f}, {c["ci95"][1]:+.3f}] | '
                 f'{c["mde"]:.3f} | {c["seeds"]} x {c["sequences"]} |')
  return '\n'.join(lines)


def write_summary(results: str, seeds: Optional[Sequence[int]] = None, log=print) -> dict:
  summary = summarize(load_runs(results, seeds))
  return write_summary_files(results, summary, markdown(summary), log)


def define_flags() -> None:
  """The CLI flags (defined by the main only: importing this module defines none)."""
  flags.DEFINE_string('pretrain_workdir', 'runs/pretrain_arms',
                      'the pre-training runs (<pretrain_workdir>/ARM_sSEED; trained if missing)')
  flags.DEFINE_string('workdir', 'runs/passkey_bytes', 'where each run fine-tunes')
  flags.DEFINE_string('results', 'docs/results/passkey_bytes', 'where the result files go')
  flags.DEFINE_list('seeds', ['0', '1'], 'seeds (each fine-tunes every arm of that seed)')
  flags.DEFINE_list('arms', list(exp_config.ARMS), 'arms (configs/passkey_bytes.py ARMS)')
  flags.DEFINE_integer('num_examples', exp_config.NUM_EXAMPLES, 'test examples per grid cell')
  flags.DEFINE_integer('steps', None, 'override the fine-tuning steps: smoke runs, or continuing '
                       'finished runs to more steps (constant lr: the same as a longer run)')
  flags.DEFINE_bool('summarize_only', False, 'only recompute the summary from the result files')


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  if FLAGS.num_examples < 1:
    cli.exit_with_error(ValueError(f'--num_examples={FLAGS.num_examples}; expected >= 1.'))
  try:
    arms = known_names('--arms', FLAGS.arms, exp_config.ARMS, 'configs/passkey_bytes.py ARMS')
    seeds = integers('--seeds', FLAGS.seeds)
    if FLAGS.summarize_only:
      write_summary(FLAGS.results, seeds)
    else:
      run(FLAGS.pretrain_workdir, FLAGS.workdir, FLAGS.results, seeds, arms,
          {**default_grid(), 'num_examples': FLAGS.num_examples}, FLAGS.steps)
  except (FileNotFoundError, ValueError, DataError) as e:
    cli.exit_with_error(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
