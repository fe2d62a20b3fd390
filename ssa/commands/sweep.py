r"""Run the paper's ablation sweeps (configs/sweeps.py): every (variant, seed), one after the other.

    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --root=runs/sweeps
    python sweep.py --sweep=all --size=small --seeds=0,1,2        # every sweep, shared runs once
    python sweep.py --sweep=strategies --size=small --seeds=0 --set=train.num_steps=600 \
        --root=runs/long
    python sweep.py --sweep=all --size=paper --seeds=0,1 --root=gs://B/sweeps --print_commands \
        --train_flags=--multihost        # one train.py command per run (cluster / TPU launchers)
    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --collect_only

Workdirs are ROOT/SIZE/VARIANT_sSEED (run.json, result.json, checkpoints, metrics.jsonl); finished
runs are skipped and interrupted ones resumed, so re-running the same command continues a sweep.
Tables go to ROOT/SIZE/SWEEP.md and stdout. Ctrl-C / SIGTERM saves the current run's checkpoint and
stops the sweep. A workdir holding another run (different run.json) stops it with status 2.
See ssa/sweep.py for the files and the table's columns.
"""

import sys


from absl import app
from absl import flags

from ssa import cli
from ssa import sweep
from ssa import config_lib
from ssa.config_lib import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string('sweep', None, 'Sweep name (configs/sweeps.py SWEEPS), a comma-separated '
                    'list, or "all".')
flags.DEFINE_string('size', 'small', "'small' (CPU, ~30 s per run) or 'paper' (GPT-2 124M "
                    'recipe).')
flags.DEFINE_string('seeds', '0', 'Comma-separated seeds (config.seed = config.data.seed).')
flags.DEFINE_string('root', 'runs/sweeps', 'Root directory; runs go to ROOT/SIZE/VARIANT_sSEED.')
flags.DEFINE_multi_string('set', [], 'key=value override of a config field for every run '
                          '(repeatable; Python literals), e.g. --set=train.num_steps=600. It is '
                          'recorded in run.json, so use a new --root for a changed setting.')
flags.DEFINE_bool('print_commands', False, 'Print one train.py command per run; run nothing.')
flags.DEFINE_string('train_flags', '', 'With --print_commands: flags appended to each command '
                    '(e.g. --multihost).')
flags.DEFINE_string('python', 'python', 'With --print_commands: the interpreter of each command.')
flags.DEFINE_bool('collect_only', False, 'Only build the tables from existing results.')
flags.mark_flags_as_required(['sweep'])


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  try:
    extra = sweep.parse_sets(FLAGS.set)
    runs = sweep.plan(FLAGS.sweep, FLAGS.size, FLAGS.seeds, FLAGS.root, extra)
    for run in runs:  # bad --set fields or values fail here, before anything runs
      config_lib.validate(sweep.make_config(run))
    if FLAGS.print_commands:
      for run in runs:
        print(sweep.command(run, FLAGS.python, FLAGS.train_flags))
      return
    if FLAGS.collect_only:
      missing = []
      for name in sweep.sweep_names(FLAGS.sweep):
        md, miss = sweep.collect(name, FLAGS.size, FLAGS.seeds, FLAGS.root, extra=extra)
        print(md + '\n')
        missing += [r for r in miss if r not in missing]
      if missing:
        print(f'{len(missing)} of {len(runs)} runs have no result yet.', file=sys.stderr)
      return
    out = sweep.run_sweep(FLAGS.sweep, FLAGS.size, FLAGS.seeds, FLAGS.root, extra=extra,
                          log=lambda s: print(s, flush=True))
  except (sweep.SweepError, ConfigError, ValueError) as e:
    cli.exit_with_error(e)
  if out['stopped']:
    sys.exit(130)  # interrupted: rerun the same command to continue
  if any(st == 'failed' for st in out['status'].values()):
    sys.exit(1)

