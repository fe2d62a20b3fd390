"""`python sweep.py ...` from a checkout: the command of ssa/commands/sweep.py (its docstring has
the usage; installed as `ssa-sweep`, pyproject.toml)."""

from ssa import commands

if __name__ == '__main__':
  commands.sweep()
