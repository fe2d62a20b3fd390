r"""Full fine-tune comparison without selection on the reported split: vanilla vs SSA on SmolLM2-135M.

    python -m ssa.experiments.finetune_tuned --workdir=runs/ft_tuned --results=docs/results/ft_tuned
    python -m ssa.experiments.finetune_tuned --results=docs/results/ft_tuned --summarize_only

Every arm of configs/finetune_tuned.py (vanilla, and SSA at each temperature learning rate of
TAU_LRS) trains in <workdir>/<arm> and is scored on the first --eval_batches batches of the
'validation' split (the tuning split; <results>/<arm>.validation.json). The SSA arm with the
lowest validation loss is chosen there, and only then are vanilla and the chosen arm scored, once,
on the held-out 'test' split (<results>/<arm>.test.json). The summary (<results>/summary.json,
summary.md) reports the grid on validation (each SSA arm against vanilla, paired) and the test
comparison chosen - vanilla with its 95% interval and MDE, overall and per position bucket
(ssa/measure.py). Finished files are skipped on a rerun; an interrupted arm resumes from its
checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

from absl import flags

from configs import finetune_tuned as exp_config
from ssa import cli
from ssa.experiments import arms as arms_lib
from ssa.experiments.common import write_json, write_summary_files

FLAGS = flags.FLAGS


def arm_config(arm: str, steps: Optional[int] = None):
  c = exp_config.get_config(arm)
  if steps is not None:
    c.train.num_steps = steps
  return c


def _settings(config, split: str, eval_batches: int) -> dict:
  d = config.data
  return {'steps': int(config.train.num_steps), 'batch': int(d.batch_size),
          'seq_len': int(d.seq_len), 'lr': float(config.optim.lr),
          'tau_lr': float(config.optim.tau_lr), 'strategy': config.ssa.strategy,
          'split': split, 'eval_batches': int(eval_batches)}


def scored_arm(arm: str, split: str, workdir: str, results: str, eval_batches: int,
               steps: Optional[int] = None, log=print, config_fn=arm_config) -> dict:
  """<results>/<arm>.<split>.json: the arm trained (if needed) and scored on `split`."""
  config = config_fn(arm, steps)
  want = _settings(config, split, eval_batches)
  path = os.path.join(results, f'{arm}.{split}.json')
  if os.path.isfile(path):
    with open(path) as f:
      prev = json.load(f)
    if prev.get('settings') == want:
      log(f'[{arm}] {split}: done ({path}, skipped)')
      return prev
    log(f'[{arm}] {path} was made with other settings; redoing it')
  model, variables, train_s = arms_lib.train_or_load(
      config, os.path.join(workdir, arm), log=lambda m: log(f'[{arm}] {m}'))
  t0 = time.time()
  r, _ = arms_lib.score(model, variables, config, split, eval_batches)
  out = {'arm': arm, 'split': split, 'settings': want, 'loss': r['loss'], 'tokens': r['tokens'],
         'by_position': r['by_position'], 'buckets': r['buckets'],
         'train_seconds': train_s, 'score_seconds': time.time() - t0,
         'sequence_bucket_nll': r['sequence_bucket_nll'],
         'sequence_bucket_tokens': r['sequence_bucket_tokens']}
  write_json(results, f'{arm}.{split}.json', out)
  log(f'[{arm}] {split} loss {r["loss"]:.4f} nats/token over {r["tokens"]:.0f} tokens -> {path}')
  return out


def choose(validation: dict) -> str:
  """The SSA arm with the lowest validation loss (ties: the first in ARMS order)."""
  ssa = [a for a in exp_config.ARMS if a != 'vanilla' and a in validation]
  if not ssa:
    raise ValueError('no SSA arm has a validation result.')
  return min(ssa, key=lambda a: validation[a]['loss'])


def summarize(validation: dict, test: dict) -> dict:
  chosen = choose(validation)
  grid = {a: {'loss': v['loss'], 'tokens': v['tokens'],
              'vs_vanilla': arms_lib.compare(v, validation['vanilla'])['overall']
              if a != 'vanilla' and 'vanilla' in validation else None}
          for a, v in validation.items()}
  out = {'chosen_on_validation': chosen, 'validation_grid': grid, 'test': None}
  if chosen in test and 'vanilla' in test:
    out['test'] = {'arms': {a: {'loss': t['loss'], 'tokens': t['tokens'],
                                'by_position': t['by_position']} for a, t in test.items()},
                   f'{chosen} - vanilla': arms_lib.compare(test[chosen], test['vanilla'])}
  return out


def markdown(summary: dict) -> str:
  lines = ['| arm | validation loss (tuning split) | vs vanilla, paired: mean [95% CI] (MDE) |',
           '|---|---|---|']
  for a, g in summary['validation_grid'].items():
    mark = ' (chosen)' if a == summary['chosen_on_validation'] else ''
    lines.append(f'| {a}{mark} | {g["loss"]:.4f} | '
                 f'{arms_lib.cell(g["vs_vanilla"]) if g["vs_vanilla"] else "-"} |')
  t = summary['test']
  if t:
    key = next(k for k in t if k.endswith(' - vanilla'))
    c = t[key]
    buckets = list(c['by_position'])
    lines += ['', f'Test split (scored once): {key}', '',
              '| | overall | ' + ' | '.join(buckets) + ' |', '|---' * (len(buckets) + 2) + '|',
              f'| paired difference (MDE) | {arms_lib.cell(c["overall"])} | ' +
              ' | '.join(arms_lib.cell(c['by_position'][b]) for b in buckets) + ' |']
    for a, r in t['arms'].items():
      lines.append(f'| {a} test loss | {r["loss"]:.4f} | ' + ' | '.join(
          f'{r["by_position"][b]["loss"]:.4f}' for b in buckets) + ' |')
  return '\n'.join(lines)


def _load(results: str, split: str) -> dict:
  out = {}
  for arm in exp_config.ARMS:
    p = os.path.join(results, f'{arm}.{split}.json')
    if os.path.isfile(p):
      with open(p) as f:
        out[arm] = json.load(f)
  return out


def write_summary(results: str, log=print) -> dict:
  validation = _load(results, 'validation')
  if not validation:
    raise FileNotFoundError(f'{results}: no <arm>.validation.json result file.')
  summary = summarize(validation, _load(results, 'test'))
  return write_summary_files(results, summary, markdown(summary), log)


def run(workdir: str, results: str, eval_batches: int, steps: Optional[int] = None, log=print,
        config_fn=arm_config) -> dict:
  validation = {a: scored_arm(a, 'validation', workdir, results, eval_batches, steps, log,
                              config_fn) for a in exp_config.ARMS}
  chosen = choose(validation)
  log(f'chosen on the validation split: {chosen}; now scoring vanilla and {chosen} on test')
  for a in ('vanilla', chosen):
    scored_arm(a, 'test', workdir, results, eval_batches, steps, log, config_fn)
  return write_summary(results, log)


def define_flags() -> None:
  """The CLI flags (defined by the main only: importing this module defines none)."""
  flags.DEFINE_string('workdir', 'runs/ft_tuned', 'where each arm trains (<workdir>/<arm>)')
  flags.DEFINE_string('results', 'docs/results/ft_tuned', 'where the result files go')
  flags.DEFINE_integer('eval_batches', 100, 'batches scored per split (8 x 128 tokens each; the '
                       'default 100 = 102,400 positions)')
  flags.DEFINE_integer('steps', None, 'override train.num_steps of every arm (smoke runs)')
  flags.DEFINE_bool('summarize_only', False, 'only recompute the summary from the result files')


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  if FLAGS.eval_batches < 1:
    cli.exit_with_error(ValueError(f'--eval_batches={FLAGS.eval_batches}; expected >= 1.'))
  try:
    if FLAGS.summarize_only:
      write_summary(FLAGS.results)
    else:
      run(FLAGS.workdir, FLAGS.results, FLAGS.eval_batches, FLAGS.steps)
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
