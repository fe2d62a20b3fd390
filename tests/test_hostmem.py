"""ssa/hostmem.py: when the malloc settings apply, and that the entry points re-execute with them."""

import os
import subprocess
import sys

import pytest

from ssa import hostmem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
linux_only = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc settings')


@linux_only
def test_wanted_on_cpu_only_and_never_twice():
  clean = {k: v for k, v in os.environ.items() if k not in hostmem.TUNED and k != 'SSA_MALLOC'}
  assert hostmem.wanted(dict(clean, JAX_PLATFORMS='cpu'))
  assert not hostmem.wanted(dict(clean, JAX_PLATFORMS='cpu', SSA_MALLOC='system'))
  assert not hostmem.wanted(dict(clean, JAX_PLATFORMS='cuda'))
  assert not hostmem.wanted(dict(clean, JAX_PLATFORMS='cpu', MALLOC_ARENA_MAX='4'))  # user's own


@linux_only
def test_entry_point_reexecutes_once_with_the_settings(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in hostmem.TUNED and k != 'SSA_MALLOC'}
  env.update(JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  code = ('from ssa import hostmem; import os; print("start", flush=True); '
          'hostmem.reexec_with_tuned_malloc(); '
          'print([os.environ.get(k) for k in sorted(hostmem.TUNED)])')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=60, check=True).stdout.split('\n')
  assert out.count('start') == 2   # the command ran again, once
  assert out[2] == str([hostmem.TUNED[k] for k in sorted(hostmem.TUNED)])
  env['SSA_MALLOC'] = 'system'
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       timeout=60, check=True).stdout.split('\n')
  assert out.count('start') == 1 and out[1] == str([None] * 3)
