"""`python eval.py ...` from a checkout: the command of ssa/commands/eval.py (its docstring has
the usage; installed as `ssa-eval`, pyproject.toml)."""

from ssa import commands

if __name__ == '__main__':
  commands.evaluate()
