r"""SSA's temperatures on a frozen pretrained LLM: which temperature helps SmolLM2-135M, and where.

    python -m ssa.experiments.frozen_llm --workdir=runs/frozen_llm \
        --results=docs/results/frozen_llm                   # train + score every arm, summarise
    python -m ssa.experiments.frozen_llm --results=docs/results/frozen_llm --summarize_only

Arms (configs/frozen_llm.py): base (no temperature), constant (one learned constant per head),
position (q position term, linear slope from 0), ssa (q position + token, v token). The LLM is
frozen; every arm starts at exactly the base model, reads the same batches in the same order and
uses the same temperature learning rate. Each trained arm trains in <workdir>/<arm> (orbax
checkpoints every 16 steps: an interrupted arm resumes), then is scored on the same first
--eval_batches batches of the held-out 'test' split (>= 100k tokens, ssa/measure.py's standard)
and its result is written to <results>/<arm>.json. A rerun skips every arm whose result file
exists and was made with the same settings.

The summary (<results>/summary.json, summary.md, printed) compares each arm with the constant
arm and with the base: the paired difference in nats/token over the evaluation sequences, with
its bootstrap 95% interval and minimum detectable effect, overall and per position bucket; the
learned slopes (theta of every layer and head) and the mean query temperature by position bucket.
--summarize_only recomputes it from the result files alone (no model, no data).

SSA's prediction tested here: the position arm's gain over the constant arm grows with position,
and full SSA beats the constant arm with an interval that excludes zero.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import numpy as np
from absl import flags

from configs import frozen_llm as exp_config
from ssa import cli
from ssa.experiments import arms as arms_lib
from ssa.experiments.common import write_json, write_summary_files, known_names

FLAGS = flags.FLAGS
COMPARISONS = (('constant', 'base'), ('position', 'constant'), ('ssa', 'constant'),
               ('position', 'base'), ('ssa', 'base'), ('ssa', 'position'))
TAU_ROWS = 8          # evaluation rows whose temperatures are averaged by position bucket


def arm_config(arm: str, steps: Optional[int] = None):
  c = exp_config.get_config(arm)
  if steps is not None:
    c.train.num_steps = steps
  return c


def settings(config, eval_batches: int) -> dict:
  """What makes two result files comparable (a rerun with other settings redoes the arm)."""
  d = config.data
  return {'steps': int(config.train.num_steps), 'batch': int(d.batch_size),
          'seq_len': int(d.seq_len), 'tau_lr': float(config.optim.tau_lr),
          'eval_split': 'test', 'eval_batches': int(eval_batches),
          'init_from': os.path.basename(config.model.init_from)}


def _params_and_model(arm: str, config, workdir: str, log) -> tuple:
  """(model, variables, train seconds) of the arm: the base model, or trained temperatures."""
  if arm == 'base':
    return (*arms_lib.base_model(config), 0.0)
  return arms_lib.train_or_load(config, os.path.join(workdir, arm),
                                log=lambda m: log(f'[{arm}] {m}'))


def run_arm(arm: str, workdir: str, results: str, eval_batches: int, steps: Optional[int] = None,
            log=print, config_fn=arm_config) -> dict:
  """Trains (if needed) and scores one arm; writes and returns <results>/<arm>.json.
  config_fn(arm, steps) -> the arm's config (tests pass a tiny model's)."""
  config = config_fn(arm, steps)
  want = settings(config, eval_batches)
  path = os.path.join(results, f'{arm}.json')
  if os.path.isfile(path):
    with open(path) as f:
      prev = json.load(f)
    if prev.get('settings') == want:
      log(f'[{arm}] done: {path} (skipped)')
      return prev
    log(f'[{arm}] {path} was made with other settings ({prev.get("settings")}); redoing the arm')
  model, variables, train_s = _params_and_model(arm, config, workdir, log)
  t0 = time.time()
  log(f'[{arm}] scoring {eval_batches} test batches of {config.data.batch_size} x '
      f'{config.data.seq_len}')
  r, batches = arms_lib.score(model, variables, config, 'test', eval_batches)
  rows = max(1, TAU_ROWS // config.data.batch_size)
  taus = arms_lib.tau_by_position(model, variables, batches[:rows], config.data.seq_len)
  out = {'arm': arm, 'settings': want, 'strategy': config.ssa.strategy,
         'ssa': {k: config.ssa[k] for k in ('q', 'k', 'v', 'slope', 'theta_init', 'granularity')},
         'train_tokens': want['steps'] * want['batch'] * want['seq_len'] if arm != 'base' else 0,
         'train_seconds': train_s, 'score_seconds': time.time() - t0,
         'loss': r['loss'], 'tokens': r['tokens'], 'by_position': r['by_position'],
         'buckets': r['buckets'], 'theta': arms_lib.theta(variables['params']),
         'tau_by_position': taus,
         'sequence_bucket_nll': r['sequence_bucket_nll'],
         'sequence_bucket_tokens': r['sequence_bucket_tokens']}
  write_json(results, f'{arm}.json', out)
  log(f'[{arm}] test loss {r["loss"]:.4f} nats/token over {r["tokens"]:.0f} tokens '
      f'(train {train_s:.0f} s, score {out["score_seconds"]:.0f} s) -> {path}')
  return out


compare = arms_lib.compare


def summarize(arms: dict) -> dict:
  comps = {f'{x} - {y}': compare(arms[x], arms[y]) for x, y in COMPARISONS
           if x in arms and y in arms}
  return {'arms': {k: {f: v[f] for f in ('loss', 'tokens', 'train_tokens', 'train_seconds',
                                        'score_seconds', 'by_position', 'theta',
                                        'tau_by_position', 'settings')}
                   for k, v in arms.items()},
          'comparisons': comps}


def _slope_summary(theta: dict) -> str:
  if not theta:
    return '-'
  t = np.array(list(theta.values()))
  return f'{t.mean():+.4f} (min {t.min():+.3f}, max {t.max():+.3f})'


def markdown(summary: dict) -> str:
  arms = summary['arms']
  first = next(iter(arms.values()))
  buckets = list(first['by_position'])
  lines = ['| arm | test loss (nats/token) | ' + ' | '.join(buckets) + ' | slope theta: mean '
           '(min, max) over layers x heads | train tokens | train s | score s |',
           '|---' * (len(buckets) + 6) + '|']
  for name, a in arms.items():
    lines.append(f'| {name} | {a["loss"]:.4f} | ' + ' | '.join(
        f'{a["by_position"][b]["loss"]:.4f}' for b in buckets) +
        f' | {_slope_summary(a["theta"])} | {a["train_tokens"]:,} | {a["train_seconds"]:.0f} | '
        f'{a["score_seconds"]:.0f} |')
  lines += ['', '| comparison | overall: mean [95% CI] (MDE) | ' + ' | '.join(buckets) + ' |',
            '|---' * (len(buckets) + 2) + '|']
  for name, c in summary['comparisons'].items():
    cell = arms_lib.cell
    lines.append(f'| {name} | {cell(c["overall"])} | ' + ' | '.join(
        cell(c['by_position'][b]) if b in c['by_position'] else '-' for b in buckets) + ' |')
  taus = [(n, a['tau_by_position']) for n, a in arms.items() if a['tau_by_position']]
  if taus:
    lines += ['', '| arm, embedding | mean tau by position bucket: ' + ' | '.join(buckets) + ' |',
              '|---' * (len(buckets) + 1) + '|']
    for n, t in taus:
      for e, by in t.items():
        lines.append(f'| {n}, tau_{e} | ' + ' | '.join(
            f'{by[b]:.4f}' if by.get(b) is not None else '-' for b in buckets) + ' |')
  return '\n'.join(lines)


def load_results(results: str, arms: Sequence[str]) -> dict:
  out = {}
  for arm in arms:
    path = os.path.join(results, f'{arm}.json')
    if os.path.isfile(path):
      with open(path) as f:
        out[arm] = json.load(f)
  if not out:
    raise FileNotFoundError(f'{results}: no arm result file ({", ".join(arms)}.json).')
  return out


def write_summary(results: str, arms: Sequence[str], log=print) -> dict:
  found = load_results(results, arms)
  summary = summarize(found)
  return write_summary_files(results, summary, markdown(summary), log)


def define_flags() -> None:
  """The CLI flags (defined by the main only: importing this module defines none)."""
  flags.DEFINE_string('workdir', 'runs/frozen_llm', 'where each arm trains (<workdir>/<arm>)')
  flags.DEFINE_string('results', 'docs/results/frozen_llm', 'where <arm>.json and the summary go')
  flags.DEFINE_list('arms', list(exp_config.ARMS), 'arms to run (configs/frozen_llm.py ARMS)')
  flags.DEFINE_integer('eval_batches', 100, 'test batches scored per arm (batch x seq_len tokens '
                       'each; the default 100 x 2 x 512 = 102,400 positions)')
  flags.DEFINE_integer('steps', None, 'override train.num_steps of every trained arm (smoke runs)')
  flags.DEFINE_bool('summarize_only', False, 'only recompute the summary from the result files')


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  if FLAGS.eval_batches < 1:
    cli.exit_with_error(ValueError(f'--eval_batches={FLAGS.eval_batches}; expected >= 1.'))
  try:
    arms = known_names('--arms', FLAGS.arms, exp_config.ARMS, 'configs/frozen_llm.py ARMS')
    if not FLAGS.summarize_only:
      t0 = time.time()
      for arm in arms:
        run_arm(arm, FLAGS.workdir, FLAGS.results, FLAGS.eval_batches, FLAGS.steps)
      print(f'all arms done in {time.time() - t0:.0f} s')
    write_summary(FLAGS.results, arms)
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
