r"""Passkey among decoys, SmolLM2-135M fine-tuned with and without SSA (configs/passkey_decoy.py).

    python -m ssa.experiments.passkey_decoy --workdir=runs/passkey_decoy \
        --results=docs/results/passkey_decoy
    python -m ssa.experiments.passkey_decoy --results=docs/results/passkey_decoy --summarize_only

Every arm (base: not fine-tuned; vanilla; ssa) is trained in <workdir>/<arm> if it trains
(orbax checkpoints: an interrupted arm resumes), then decodes the answers of the same test examples
(ssa.evaluation.passkey.evaluate_passkey with the config's decoys, task seed 0) on the grid
LENGTHS x DEPTHS; <results>/<arm>.json holds the accuracy grid, the rate of answers that are a
decoy's number, and the 0/1 outcome of every example. A rerun skips arms whose file was made with
the same settings.

A harder test of the same fine-tuned arms (their checkpoints in <workdir> are reused, nothing
retrains): --eval_decoys (more decoys in the test prompts than in training) and --lengths (e.g.
far beyond the training length), written to another --results directory:

    python -m ssa.experiments.passkey_decoy --workdir=runs/passkey_decoy \
        --results=docs/results/passkey_decoy_hard --eval_decoys=6 --lengths=256,1024

The summary (<results>/summary.json, summary.md) reports accuracy within the training length
(lengths <= TRAIN_LEN) and beyond it separately, per depth, and each pair of arms' paired
difference in accuracy (same examples) with a bootstrap 95% interval and minimum detectable effect
(ssa/measure.py; weights = one per example).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional

import numpy as np
from absl import flags

from configs import passkey_decoy as exp_config
from ssa import cli
from ssa import measure
from ssa import metrics as metrics_lib
from ssa.data import DataError, get_tokenizer
from ssa.data.synthetic import PasskeyTask
from ssa.evaluation import generation, passkey
from ssa.evaluation.scoring import LM
from ssa.experiments import arms as arms_lib
from ssa.experiments.common import integers, known_names, with_steps, write_json
from ssa.experiments.common import write_summary_files

FLAGS = flags.FLAGS
COMPARISONS = (('ssa', 'vanilla'), ('vanilla', 'base'), ('ssa', 'base'))


def arm_config(arm: str, steps: Optional[int] = None):
  c = exp_config.get_config(arm)
  return with_steps(c, steps)


def settings(config, grid: dict) -> dict:
  """What makes two result files comparable (a rerun with other settings redoes the arm); the
  template is named only when not 'standard' (the files written before it existed stay valid)."""
  d = config.data
  out = {'steps': int(config.train.num_steps), 'batch': int(d.batch_size),
         'train_len': int(d.seq_len), 'decoys': int(d.passkey_decoys),
         'tau_lr': float(config.optim.tau_lr), 'strategy': config.ssa.strategy, **grid}
  if d.passkey_template != 'standard':
    out['template'] = d.passkey_template
  return out


def _model(arm: str, config, workdir: str, log):
  if arm == 'base':
    return (*arms_lib.base_model(config), 0.0)
  return arms_lib.train_or_load(config, os.path.join(workdir, arm),
                                log=lambda m: log(f'[{arm}] {m}'))


def train_curve(run_dir: str) -> list[list[float]]:
  """[[step, mean training loss since the previous record]] of run_dir's metrics.jsonl (the
  answer loss: the task weights only the answer tokens); [] for an arm that did not train."""
  return [[int(r['step']), float(r.get('loss_mean', r['loss']))]
          for r in metrics_lib.read_metrics(run_dir) if r.get('kind') == 'train' and 'loss' in r]


def run_arm(arm: str, workdir: str, results: str, grid: dict, steps: Optional[int] = None,
            log=print, config_fn: Callable = arm_config,
            prepare: Optional[Callable[[], None]] = None) -> dict:
  """Trains (if needed) and evaluates one arm; writes and returns <results>/<arm>.json.
  grid: {'lengths', 'depths', 'num_examples'} and optionally 'eval_decoys' (decoys in the test
  prompts; default the config's data.passkey_decoys, the training task's). prepare: called once
  before the arm's model is trained or loaded (not when its result file is kept), e.g. to make
  the weights its model.init_from names."""
  config = config_fn(arm, steps)
  want = settings(config, grid)
  path = os.path.join(results, f'{arm}.json')
  if os.path.isfile(path):
    with open(path) as f:
      prev = json.load(f)
    if prev.get('settings') == want:
      log(f'[{arm}] done: {path} (skipped)')
      return prev
    log(f'[{arm}] {path} was made with other settings; redoing the arm')
  if prepare is not None:
    prepare()
  model, variables, train_s = _model(arm, config, workdir, log)
  t0 = time.time()
  tok = get_tokenizer(config.data.tokenizer, config.data.eos_token)
  lm = LM.from_model(model, variables, max_len=max(grid['lengths']))
  gen = generation.generate_fn(lm, pad_id=tok.pad_id)
  log(f'[{arm}] decoding {len(grid["lengths"])} lengths x {len(grid["depths"])} depths x '
      f'{grid["num_examples"]} examples')
  r = passkey.evaluate_passkey(gen, tok, grid['lengths'], grid['depths'], grid['num_examples'],
                               seed=0, batch_size=config.eval.batch_size,
                               decoys=eval_decoys(config, grid),
                               template=config.data.passkey_template)
  out = {'arm': arm, 'settings': want, 'train_seconds': train_s,
         'eval_seconds': time.time() - t0, **r,
         'train_curve': [] if arm == 'base' else train_curve(os.path.join(workdir, arm))}
  write_json(results, f'{arm}.json', out)
  log(f'[{arm}] mean accuracy {r["mean_accuracy"]:.3f}, decoy answers '
      f'{r.get("mean_decoy_rate", 0.0):.3f} ({out["eval_seconds"]:.0f} s) -> {path}')
  return out


def _items(r: dict, train_len: int, within: bool, depth: Optional[int] = None) -> np.ndarray:
  """0/1 outcomes of the examples at lengths within (<=) or beyond (>) train_len, one depth or all."""
  rows = []
  for i, T in enumerate(r['lengths']):
    if (T <= train_len) == within:
      cells = r['correct'][i] if depth is None else [r['correct'][i][depth]]
      rows += [x for c in cells for x in c]
  return np.asarray(rows, np.float64)


def summarize(arms: dict) -> dict:
  first = next(iter(arms.values()))
  L = first['settings']['train_len']
  out = {'train_len': L, 'lengths': first['lengths'], 'depths': first['depths'], 'arms': {},
         'comparisons': {}}
  for a, r in arms.items():
    acc = np.asarray(r['accuracy'])
    lens = np.asarray(r['lengths'])
    out['arms'][a] = {
        'accuracy_within': float(acc[lens <= L].mean()) if (lens <= L).any() else None,
        'accuracy_beyond': float(acc[lens > L].mean()) if (lens > L).any() else None,
        'by_length': dict(zip(map(str, r['lengths']), acc.mean(1).tolist())),
        'by_depth_within': dict(zip(map(str, r['depths']), acc[lens <= L].mean(0).tolist()))
        if (lens <= L).any() else None,
        'decoy_rate': r.get('mean_decoy_rate'), 'train_seconds': r['train_seconds'],
        'eval_seconds': r['eval_seconds']}
  for x, y in COMPARISONS:
    if x in arms and y in arms:
      c = {}
      for where in ('within', 'beyond'):
        a, b = _items(arms[x], L, where == 'within'), _items(arms[y], L, where == 'within')
        if a.size:
          c[where] = measure.paired_difference(a, b)
      out['comparisons'][f'{x} - {y}'] = c
  return out


def markdown(summary: dict) -> str:
  L = summary['train_len']
  lens = summary['lengths']
  lines = [f'| arm | accuracy, T <= {L} | accuracy, T > {L} | ' + ' | '.join(
      f'T={t}' for t in lens) + ' | answers that are a decoy | eval s |',
      '|---' * (len(lens) + 5) + '|']
  fmt = lambda v: '-' if v is None else f'{v:.3f}'
  for a, d in summary['arms'].items():
    lines.append(f'| {a} | {fmt(d["accuracy_within"])} | {fmt(d["accuracy_beyond"])} | ' +
                 ' | '.join(fmt(d['by_length'][str(t)]) for t in lens) +
                 f' | {fmt(d["decoy_rate"])} | {d["eval_seconds"]:.0f} |')
  lines += ['', '| comparison (same examples) | within: mean [95% CI] (MDE) | beyond |',
            '|---|---|---|']
  cell = lambda d: (f'{d["mean"]:+.3f} [{d["ci95"][0]:+.3f}, {d["ci95"][1]:+.3f}] '
                    f'({d["mde"]:.3f}), n={d["sequences"]}') if d else '-'
  for name, c in summary['comparisons'].items():
    lines.append(f'| {name} | {cell(c.get("within"))} | {cell(c.get("beyond"))} |')
  return '\n'.join(lines)


def write_summary(results: str, log=print) -> dict:
  arms = {}
  for a in exp_config.ARMS:
    p = os.path.join(results, f'{a}.json')
    if os.path.isfile(p):
      with open(p) as f:
        arms[a] = json.load(f)
  if not arms:
    raise FileNotFoundError(f'{results}: no arm result file ({", ".join(exp_config.ARMS)}.json).')
  summary = summarize(arms)
  return write_summary_files(results, summary, markdown(summary), log)


def default_grid() -> dict:
  return {'lengths': list(exp_config.LENGTHS), 'depths': list(exp_config.DEPTHS),
          'num_examples': exp_config.NUM_EXAMPLES}


def eval_decoys(config, grid: dict) -> int:
  """Decoys in the test prompts: the grid's 'eval_decoys', else the training task's."""
  return int(grid.get('eval_decoys', config.data.passkey_decoys))


def check_grid(config, grid: dict) -> None:
  """DataError naming the first length of the grid too short for the task's template (with the
  test prompts' decoys and the config's tokenizer), before any arm trains or decodes."""
  tok = get_tokenizer(config.data.tokenizer, config.data.eos_token)
  n = eval_decoys(config, grid)
  if n < 0:
    raise ValueError(f'--eval_decoys={n}; expected >= 0.')
  for T in grid['lengths']:
    PasskeyTask(tok, int(T), 0.0, 0, n, config.data.passkey_template)


def run(workdir: str, results: str, arms, grid: Optional[dict] = None,
        steps: Optional[int] = None, log=print, config_fn: Callable = arm_config) -> dict:
  grid = grid or default_grid()
  check_grid(config_fn(arms[0], steps), grid)
  t0 = time.time()
  for arm in arms:
    run_arm(arm, workdir, results, grid, steps, log, config_fn)
    log(f'elapsed {time.time() - t0:.0f} s')
  return write_summary(results, log)


def define_flags() -> None:
  """The CLI flags (defined by the main only: importing this module defines none)."""
  flags.DEFINE_string('workdir', 'runs/passkey_decoy', 'where each arm trains (<workdir>/<arm>)')
  flags.DEFINE_string('results', 'docs/results/passkey_decoy', 'where the result files go')
  flags.DEFINE_list('arms', list(exp_config.ARMS), 'arms (configs/passkey_decoy.py ARMS)')
  flags.DEFINE_integer('num_examples', exp_config.NUM_EXAMPLES, 'test examples per grid cell')
  flags.DEFINE_integer('steps', None, 'override train.num_steps of every trained arm (smoke runs)')
  flags.DEFINE_integer('eval_decoys', None, 'decoys in the test prompts (default: the training '
                       "task's, configs/passkey_decoy.py DECOYS)")
  flags.DEFINE_list('lengths', None, 'test lengths (default configs/passkey_decoy.py LENGTHS)')
  flags.DEFINE_bool('summarize_only', False, 'only recompute the summary from the result files')


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  if FLAGS.num_examples < 1:
    cli.exit_with_error(ValueError(f'--num_examples={FLAGS.num_examples}; expected >= 1.'))
  grid = {**default_grid(), 'num_examples': FLAGS.num_examples}
  if FLAGS.eval_decoys is not None:
    grid['eval_decoys'] = FLAGS.eval_decoys
  try:
    arms = known_names('--arms', FLAGS.arms, exp_config.ARMS, 'configs/passkey_decoy.py ARMS')
    if FLAGS.lengths:
      grid['lengths'] = integers('--lengths', FLAGS.lengths)
    if FLAGS.summarize_only:
      write_summary(FLAGS.results)
    else:
      run(FLAGS.workdir, FLAGS.results, arms, grid, FLAGS.steps)
  except (FileNotFoundError, ValueError, DataError) as e:
    cli.exit_with_error(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
