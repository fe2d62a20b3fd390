"""Finiteness check over 124M float32 values: jnp.all(jnp.isfinite) vs a float sum of x*0 (and
reshaped variants); median of 7 ms, then the answers on a clean / NaN / inf array. As run on
2026-12-06 for docs/results/perf/nan_guard_2026-12-06.txt:
    python docs/results/perf/scripts/finite_check.py"""
import time, jax, jax.numpy as jnp, numpy as np
x = jnp.ones((124_000_000,), jnp.float32)
def t(f, name):
  f = jax.jit(f); jax.block_until_ready(f(x)); ts=[]
  for _ in range(7):
    s=time.perf_counter(); jax.block_until_ready(f(x)); ts.append(time.perf_counter()-s)
  print(name, round(1e3*np.median(ts),1), 'ms', bool(f(x)), bool(f(x.at[12345].set(jnp.nan))), bool(f(x.at[99].set(jnp.inf))))
t(lambda x: jnp.all(jnp.isfinite(x)), 'all isfinite')
t(lambda x: jnp.isfinite(jnp.sum(x*0)), 'sum x*0')
t(lambda x: jnp.all(jnp.all(jnp.isfinite(x.reshape(-1, 256)), axis=0)), 'all col256')
t(lambda x: jnp.isfinite(jnp.sum(jnp.sum((x*0).reshape(-1, 256), axis=0))), 'sum col256')
