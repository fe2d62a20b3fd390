"""Test setup: 8 simulated CPU devices (set before jax is imported), LLVM opt level 0, float32
matmuls, one XLA compilation cache per checkout."""
import os
import sys

# LLVM optimisation level 0 for the tests' CPU code (SSA_TEST_XLA_OPT=default keeps XLA's own):
# the tests run small programs a few times, so compiling dominates them; level 0 compiles a tiny
# train step ~40% faster and runs it ~1.5x slower. HLO passes (fusion, buffer assignment) are
# unchanged; a test comparing two computations runs both at the same level.
_OPT = '' if os.environ.get('SSA_TEST_XLA_OPT') == 'default' else ' --xla_backend_optimization_level=0'
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8' + _OPT).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# transformers copies remote code (the hf_remote exports) into HF_MODULES_CACHE and puts that
# directory on sys.path once per process: one temporary cache per test process (each xdist
# worker imports this file itself), set before transformers is imported.
import atexit  # noqa: E402  pylint: disable=g-import-not-at-top
import shutil  # noqa: E402  pylint: disable=g-import-not-at-top
import tempfile  # noqa: E402  pylint: disable=g-import-not-at-top
_HF_HOME = tempfile.mkdtemp(prefix=f'ssa_tests_hf_{os.getpid()}_')
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ['HF_HOME'] = _HF_HOME
os.environ['HF_MODULES_CACHE'] = os.path.join(_HF_HOME, 'modules')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)
# One persistent XLA compilation cache for the test session, shared by the xdist workers and the
# subprocesses the CLI tests start (they inherit the environment): many tests compile the same
# small programs. SSA_TEST_JAX_CACHE=off turns it off; the default lives in the (git-ignored)
# .jax_test_cache of the checkout, so a fresh checkout starts cold.
_CACHE = os.environ.get('SSA_TEST_JAX_CACHE', os.path.join(_ROOT, '.jax_test_cache'))
if _CACHE != 'off':
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _CACHE)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

import jax  # noqa: E402

jax.config.update('jax_default_matmul_precision', 'highest')
