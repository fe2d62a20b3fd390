"""Elementwise cost at [16, 128, 4, 32]: erf, tanh, exp, exact / tanh / A&S-erf GELU, and their error against
float64 (scratch benchmark, 2026-12-06 session 4: erf 0.065 ms, gelu_exact 0.255 ms).
    MALLOC_ARENA_MAX=1 python docs/results/perf/scripts/elementwise_costs.py"""
import time, jax, jax.numpy as jnp, numpy as np
x = jax.random.normal(jax.random.PRNGKey(0), (16,128,4,32))
def as_erfc_pos(a):  # erfc(a) for a >= 0, Abramowitz & Stegun 7.1.26
  t = 1.0 / (1.0 + 0.3275911 * a)
  p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
  return p * jnp.exp(-a * a)
def gelu_as(x):
  z = x * 0.7071067811865476
  c = as_erfc_pos(jnp.abs(z))
  cdf2 = jnp.where(z >= 0, 2.0 - c, c)   # 1 + erf(z)
  return 0.5 * x * cdf2
fns = {'erf': jax.lax.erf, 'tanh': jnp.tanh, 'exp': jnp.exp, 'gelu_exact': lambda x: jax.nn.gelu(x, approximate=False),
       'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True), 'gelu_as': gelu_as, 'mul': lambda x: x*1.5}
for name, f in fns.items():
  g = jax.jit(f); r = g(x); r.block_until_ready()
  ts=[]
  for _ in range(300):
    t=time.perf_counter(); g(x).block_until_ready(); ts.append(time.perf_counter()-t)
  print(f'{name:12s} {1e3*np.median(ts):.3f} ms')
ref = np.asarray(jax.nn.gelu(x.astype(jnp.float64) if False else x, approximate=False), np.float64)
import scipy.special as sp
xx = np.asarray(x, np.float64); exact = 0.5*xx*(1+sp.erf(xx/np.sqrt(2)))
for name in ('gelu_exact','gelu_as','gelu_tanh'):
  y = np.asarray(jax.jit(fns[name])(x), np.float64)
  print(name, 'max abs err', np.abs(y-exact).max(), 'max rel err (|x|<3)', (np.abs(y-exact)/np.maximum(np.abs(exact),1e-30))[np.abs(xx)<3].max())
