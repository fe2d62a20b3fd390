"""SIGTERM / SIGINT during training: a request to stop cleanly (checkpoint, then return)."""

from __future__ import annotations

import signal
import threading
from typing import Optional


class StopFlag:
  """Context manager: while active, SIGTERM and SIGINT set `requested` to the signal's name
  (a second Ctrl-C raises KeyboardInterrupt at once). Handlers are installed only on the main
  thread (Python allows no others) and restored on exit."""

  def __init__(self):
    self.requested: Optional[str] = None
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # second Ctrl-C: stop now
    self.requested = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
