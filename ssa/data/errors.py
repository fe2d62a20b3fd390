"""The one exception type of ssa.data.

Every user-facing failure of the data package (missing path, empty corpus, corpus shorter than one
sequence, bad tokenizer spec, failed download, bad config field) raises `DataError`, a ValueError
whose message names the file or config field and says what was expected. Errors are raised while
the pipeline is being built (eagerly), not from inside grain worker threads.
"""


class DataError(ValueError):
  """Bad data input or data config; the message names the file/field and what was expected."""
