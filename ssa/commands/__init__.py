"""The command lines: `ssa-train`, `ssa-eval`, `ssa-sweep`, `ssa-export` once the package is
installed (pyproject.toml), or `python train.py` ... from a checkout; both run the same main().

Each entry point first re-executes itself with the tuned malloc settings where they apply
(ssa/hostmem.py), before the command's module (and JAX) is imported, then parses the flags.
"""

import importlib

from ssa import cli
from ssa import hostmem

COMMANDS = ('train', 'eval', 'sweep', 'export')


def run(command: str) -> None:
  """Runs ssa/commands/<command>.py's main() as a command line (flags from sys.argv)."""
  if command != 'export':  # export reads a checkpoint once: the default malloc is fine there
    hostmem.reexec_with_tuned_malloc()
  cli.run(importlib.import_module(f'ssa.commands.{command}').main)


def train() -> None:
  run('train')


def evaluate() -> None:
  run('eval')


def sweep() -> None:
  run('sweep')


def export() -> None:
  run('export')
