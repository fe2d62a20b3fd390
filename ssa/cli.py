"""Shared pieces of the command-line mains (sweep.py, `python -m ssa.experiments.*`).

  check_no_args            app.UsageError for positional arguments
  quiet_logging            absl logging at WARNING unless --verbosity was given
  exit_with_error          'ERROR: <type>: <message>' on stderr, then exit status 2
  run_config_experiment    --config=FILE --outdir=DIR mains (denoising, graph_toy, passkey)
  define_runs_flags / analysis_main
                           --runs=DIR --outdir=DIR mains that analyse finished runs (dilution,
                           efficiency)

Importing this module defines no flags: each helper defines them when a main calls it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.disclaim_key_flags()  # the flags defined here belong to the calling main (--helpshort)


def check_no_args(argv: Sequence[str]) -> None:
  """app.UsageError when argv holds anything after the program name."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')


def quiet_logging() -> None:
  """absl logging at WARNING unless --verbosity was given (orbax logs every save at INFO)."""
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def exit_with_error(e: BaseException, status: int = 2) -> NoReturn:
  """Prints 'ERROR: <type>: <message>' to stderr and exits with `status`."""
  print(f'ERROR: {type(e).__name__}: {e}', file=sys.stderr)
  sys.exit(status)


def run_config_experiment(run_fn: Callable[..., Any], *, config_help: str, outdir_help: str,
                          string_flags: Sequence[tuple[str, str]] = (),
                          quiet: bool = False) -> None:
  """Defines the required --config (a config file, locked) and --outdir, plus one optional string
  flag (default None) per (name, help) of `string_flags`, then app.run's a main that calls
  run_fn(config, outdir, **{name: value}); quiet: quiet_logging() first."""
  config_flags.DEFINE_config_file('config', None, config_help, lock_config=True)
  flags.DEFINE_string('outdir', None, outdir_help)
  for name, help_text in string_flags:
    flags.DEFINE_string(name, None, help_text)
  flags.mark_flags_as_required(['config', 'outdir'])

  def main(argv):
    check_no_args(argv)
    if quiet:
      quiet_logging()
    run_fn(FLAGS.config, FLAGS.outdir, **{name: FLAGS[name].value for name, _ in string_flags})

  app.run(main)


def define_runs_flags(outputs: str) -> None:
  """--runs (a directory of runs VARIANT_sSEED) and --outdir (where `outputs` go)."""
  flags.DEFINE_string('runs', None, 'Directory holding the runs VARIANT_sSEED (a sweep size dir).')
  flags.DEFINE_string('outdir', None, f'Where {outputs} go.')


def analysis_main(argv: Sequence[str], analyse: Callable[[str], dict],
                  write: Callable[[dict, str], Any]) -> None:
  """Main of a --runs/--outdir analysis: result = analyse(runs) (FileNotFoundError / ValueError
  exit with status 2, naming the problem), then write(result, outdir) into the created outdir."""
  check_no_args(argv)
  if not FLAGS.runs or not FLAGS.outdir:
    raise app.UsageError('--runs and --outdir are required.')
  try:
    result = analyse(FLAGS.runs)
  except (FileNotFoundError, ValueError) as e:
    exit_with_error(e)
  os.makedirs(FLAGS.outdir, exist_ok=True)
  write(result, FLAGS.outdir)
