"""The project's configuration error (the bottom of the import graph: every layer raises it).

ssa.config_lib re-exports it, so `ssa.config_lib.ConfigError` is the same class.
"""


class ConfigError(ValueError):
  """A config field has a value the code cannot use; the message names the field."""
