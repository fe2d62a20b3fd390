"""`python export.py ...` from a checkout: the command of ssa/commands/export.py (its docstring has
the usage; installed as `ssa-export`, pyproject.toml)."""

from ssa import commands

if __name__ == '__main__':
  commands.export()
