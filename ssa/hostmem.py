"""Host memory: glibc malloc settings that stop XLA-CPU training from page-faulting every step.

XLA's CPU runtime allocates each step's large temporaries with malloc and frees them when the step
ends. glibc serves allocations above its mmap threshold (at most 32 MiB, and any large one made
from a thread's arena) with a fresh mmap and returns them to the OS on free, so every step
touches its temporaries' pages anew: the quick-start model took ~48,600 minor page faults per
step (~190 MB of fresh pages), a quarter of its CPU time in the kernel. With one arena, no mmap
for allocations and no trimming, freed memory stays in the heap and the next step reuses it:
0 faults per step after the first steps (measured: docs in README "Measured results").

glibc reads these settings only from the environment at process start (mallopt() later changes
nothing measurable here), so `reexec_with_tuned_malloc()` re-executes the current command once with

    MALLOC_ARENA_MAX=1  MALLOC_MMAP_MAX_=0  MALLOC_TRIM_THRESHOLD_=17179869184

when none of them is set already, on Linux, when no accelerator plugin is installed (CUDA, ROCm or
TPU: their hosts keep glibc's defaults), unless SSA_MALLOC=system. The cost: memory freed by the
process is kept for reuse instead of being returned to the OS (peak RSS is what the run needed).
Standard library only; called first thing by train.py, eval.py, sweep.py and the train-step
benchmark.
"""

from __future__ import annotations

import importlib.util
import os
import sys

TUNED = {'MALLOC_ARENA_MAX': '1', 'MALLOC_MMAP_MAX_': '0',
         'MALLOC_TRIM_THRESHOLD_': str(1 << 34)}
ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                       'jax_rocm7_plugin', 'libtpu')


def wanted(environ=None) -> bool:
  """True when the settings should be applied to this process (see the module docstring)."""
  env = os.environ if environ is None else environ
  if env.get('SSA_MALLOC', 'tuned') == 'system' or not sys.platform.startswith('linux'):
    return False
  if any(k in env for k in TUNED):
    return False   # already applied (or chosen by the user)
  platforms = env.get('JAX_PLATFORMS', '')
  if platforms and set(p.strip() for p in platforms.split(',')) != {'cpu'}:
    return False
  if not platforms and any(importlib.util.find_spec(p) is not None for p in ACCELERATOR_PLUGINS):
    return False
  return True


def reexec_with_tuned_malloc() -> None:
  """Re-executes this command with the TUNED environment when `wanted()`; returns otherwise."""
  if not wanted():
    return
  env = dict(os.environ, **TUNED)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)
