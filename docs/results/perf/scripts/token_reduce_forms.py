"""Token-term reduction variants at the quick-start shape [16, 128, 4, 32], forward only (scratch
benchmark behind README "Measured results", SSA overhead re-measured, 2026-12-06 session 4):
    MALLOC_ARENA_MAX=1 python docs/results/perf/scripts/token_reduce_forms.py
Figures (session 4): fused_sum 0.679 ms, barrier_sum 0.657, einsum 0.507, sum_only 0.235, gelu_only 0.291."""
import time, sys, jax, jax.numpy as jnp, numpy as np
B,T,H,D = 16,128,4,32
x = jax.random.normal(jax.random.PRNGKey(0), (B,T,H,D)); u = jax.random.normal(jax.random.PRNGKey(1), (H,D))
g = lambda x: jax.nn.gelu(x, approximate=False)
v = {
 'fused_sum': lambda x,u: jnp.sum(g(x)*u, -1),
 'barrier_sum': lambda x,u: jnp.sum(jax.lax.optimization_barrier(g(x))*u, -1),
 'einsum': lambda x,u: jnp.einsum('bthd,hd->bth', g(x), u),
 'barrier_einsum': lambda x,u: jnp.einsum('bthd,hd->bth', jax.lax.optimization_barrier(g(x)), u),
 'sum_only': lambda x,u: jnp.sum(x*u, -1),
 'gelu_only': lambda x,u: g(x),
 'x_tau_scale': lambda x,u: x*jnp.tanh(jnp.sum(x*u,-1))[...,None],
}
fs = {n: jax.jit(f) for n,f in v.items()}
for f in fs.values(): jax.block_until_ready(f(x,u))
ts = {n:[] for n in fs}
for _ in range(300):
  for n,f in fs.items():
    t=time.perf_counter(); jax.block_until_ready(f(x,u)); ts[n].append(time.perf_counter()-t)
for n in ts: print(f'{n:15s} {1e3*np.median(ts[n]):.3f} ms')
