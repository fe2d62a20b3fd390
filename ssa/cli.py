"""Shared pieces of the command-line mains (sweep.py, `python -m ssa.experiments.*`).

  check_no_args            app.UsageError for positional arguments
  run                      app.run with a flags parser that turns every bad flag (a missing
                           --config file, one without get_config, a misspelled --config.x field,
                           a value of the wrong type) into one line and exit status 2
  quiet_logging            absl logging at WARNING unless --verbosity was given
  exit_with_error          'ERROR: <type>: <message>' on stderr, then exit status 2
  run_config_experiment    --config=FILE --outdir=DIR mains (denoising, graph_toy, passkey)
  define_runs_flags / analysis_main
                           --runs=DIR --outdir=DIR mains that analyse finished runs (dilution,
                           efficiency)

Importing this module defines no flags: each helper defines them when a main calls it.
"""

from __future__ import annotations

import difflib
import errno
import importlib.util
import logging as std_logging
import os
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

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


class _DropUnretrievedTaskErrors(std_logging.Filter):
  """asyncio's 'Task exception was never retrieved' (orbax's background writes after the first
  failed one: hundreds of lines per failed save); the failure itself is raised as one
  CheckpointError."""

  def filter(self, record):
    return 'exception was never retrieved' not in record.getMessage()


class _DropOrbaxBackgroundErrors(std_logging.Filter):
  """orbax's ERROR records (with tracebacks) from its background save threads: every failed
  save is re-raised in the main thread, where ssa/checkpoint.py turns it into one
  CheckpointError that starts with the cause. --verbosity=0 (or higher) keeps them."""

  def filter(self, record):
    return not (record.levelno >= std_logging.ERROR and
                f'{os.sep}orbax{os.sep}' in (record.pathname or ''))


class _DropTfdsConfigEcho(std_logging.Filter):
  """tfds's 'Using custom data configuration: LocalTextConfig(...)' at every dataset open."""

  def filter(self, record):
    return not record.getMessage().startswith('Using custom data configuration')


_QUIETED = []


def quiet_logging() -> None:
  """absl logging at WARNING unless --verbosity was given (orbax logs every save at INFO), and
  no asyncio echo of a failed background save (it is raised as one CheckpointError). `run` calls
  it before every main; calling it again does nothing."""
  if _QUIETED:
    return
  _QUIETED.append(True)
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger('absl').addFilter(_DropOrbaxBackgroundErrors())
  std_logging.getLogger('asyncio').addFilter(_DropUnretrievedTaskErrors())
  std_logging.getLogger('absl').addFilter(_DropTfdsConfigEcho())


def error_line(e: BaseException) -> str:
  """'ERROR: <type>: <message>' on one line (an OSError: its cause first, then the file)."""
  if isinstance(e, OSError) and e.strerror:
    name = errno.errorcode.get(e.errno, '')
    where = f': {e.filename}' if e.filename else ''
    return f'ERROR: OSError: {e.strerror}{f" ({name})" if name else ""}{where}'
  text = ' '.join(str(e).split('\n')).strip()
  return f'ERROR: {type(e).__name__}: {text}'


def exit_with_error(e: BaseException, status: int = 2) -> NoReturn:
  """Prints error_line(e) to stderr and exits with `status`."""
  print(error_line(e), file=sys.stderr)
  sys.exit(status)


def _flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The value of --name=V / --name V in argv (the last one), else None."""
  value = None
  for i, a in enumerate(argv):
    if a.startswith(f'--{name}='):
      value = a.split('=', 1)[1]
    elif a == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _config_file_problem(argv: Sequence[str], name: str) -> Optional[str]:
  """What is wrong with the config file flag --name (missing file, no get_config, a failing
  get_config, an override of a field it does not have), or None."""
  spec = _flag_value(argv, name)
  if spec is None:
    return None
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    what = 'is a directory' if os.path.isdir(path) else 'does not exist'
    return f'--{name}={spec}: the config file {path!r} {what}; expected a Python file ' \
           'defining get_config() (e.g. configs/tiny.py).'
  try:
    module_spec = importlib.util.spec_from_file_location('_ssa_config_check', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    return f'--{name}={spec}: loading {path!r} failed: {type(e).__name__}: {_first_line(e)}'
  if not callable(getattr(module, 'get_config', None)):
    return f'--{name}={spec}: {path!r} defines no get_config(); expected a function ' \
           'get_config() returning an ml_collections.ConfigDict.'
  try:
    config = module.get_config(*([arg] if arg else []))
  except Exception as e:  # pylint: disable=broad-except
    return f'--{name}={spec}: get_config({arg!r}) failed: {type(e).__name__}: {_first_line(e)}'
  fields = _dotted_fields(config)
  leaves = [f for f in fields if not any(g.startswith(f + '.') for g in fields)]
  for a in argv:
    if not a.startswith(f'--{name}.'):
      continue
    key = a[len(name) + 3:].split('=', 1)[0]
    if key not in fields:
      close = difflib.get_close_matches(key, leaves, n=3, cutoff=0.6)
      hint = f'; did you mean {" or ".join(close)}?' if close else '.'
      return f'--{name}.{key}: the config has no field {key!r}{hint}'
  return None


def _dotted_fields(config, prefix: str = '') -> list[str]:
  out = []
  for key, value in (config.items() if hasattr(config, 'items') else ()):
    out.append(f'{prefix}{key}')
    out += _dotted_fields(value, f'{prefix}{key}.')
  return out


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  if isinstance(e, (KeyError, AttributeError)) and text[:1] in '\'"':
    text = text[1:-1].replace('\\n', '\n')  # repr of a KeyError message
  return text.splitlines()[0] if text else type(e).__name__


def parse_flags(argv: Sequence[str], config_flags_names: Sequence[str] = ('config',)):
  """app.run's flags parser: parses argv, loads the config file flags, and on any problem prints
  ONE line 'ERROR: FlagError: ...' naming the flag and what was expected, then exits with 2."""
  # ml_collections reports a bad config file only when the config is first used (deep in the
  # run, as a chained traceback): check the file and its overrides here first.
  problem = next((p for p in (_config_file_problem(argv, n) for n in config_flags_names) if p),
                 None)
  if problem is None:
    try:
      return FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except  (flags.Error, TypeError, ...)
      problem = _first_line(e)
  print(f'ERROR: FlagError: {problem}', file=sys.stderr)
  sys.exit(2)


def run(main: Callable[[Sequence[str]], Any], config_flags_names: Sequence[str] = ('config',)):
  """app.run(main) with parse_flags as the flags parser; quiet_logging() before main, so every
  CLI is quiet the same way (--verbosity=0 restores absl's INFO lines)."""

  def quiet_main(argv):
    quiet_logging()
    return main(argv)
  app.run(quiet_main, flags_parser=lambda argv: parse_flags(argv, config_flags_names))


def run_config_experiment(run_fn: Callable[..., Any], *, config_help: str, outdir_help: str,
                          string_flags: Sequence[tuple[str, str]] = ()) -> None:
  """Defines the required --config (a config file, locked) and --outdir, plus one optional string
  flag (default None) per (name, help) of `string_flags`, then app.run's a main that calls
  run_fn(config, outdir, **{name: value}) (quiet logging, as every `run` main)."""
  config_flags.DEFINE_config_file('config', None, config_help, lock_config=True)
  flags.DEFINE_string('outdir', None, outdir_help)
  for name, help_text in string_flags:
    flags.DEFINE_string(name, None, help_text)
  flags.mark_flags_as_required(['config', 'outdir'])

  def main(argv):
    check_no_args(argv)
    run_fn(FLAGS.config, FLAGS.outdir, **{name: FLAGS[name].value for name, _ in string_flags})

  run(main)


def define_runs_flags(outputs: str) -> None:
  """--runs (a directory of runs VARIANT_sSEED) and --outdir (where `outputs` go)."""
  flags.DEFINE_string('runs', None, 'Directory holding the runs VARIANT_sSEED (a sweep size dir).')
  flags.DEFINE_string('outdir', None, f'Where {outputs} go.')


def analysis_main(argv: Sequence[str], analyse: Callable[[str], dict],
                  write: Callable[[dict, str], Any]) -> None:
  """Main of a --runs/--outdir analysis: result = analyse(runs) (FileNotFoundError / ValueError
  exit with status 2, naming the problem), then write(result, outdir) into the created outdir."""
  check_no_args(argv)
  quiet_logging()
  if not FLAGS.runs or not FLAGS.outdir:
    raise app.UsageError('--runs and --outdir are required.')
  try:
    result = analyse(FLAGS.runs)
  except (FileNotFoundError, ValueError) as e:
    exit_with_error(e)
  os.makedirs(FLAGS.outdir, exist_ok=True)
  write(result, FLAGS.outdir)
