"""`python train.py ...` from a checkout: the command of ssa/commands/train.py (its docstring has
the usage; installed as `ssa-train`, pyproject.toml)."""

from ssa import commands

if __name__ == '__main__':
  commands.train()
