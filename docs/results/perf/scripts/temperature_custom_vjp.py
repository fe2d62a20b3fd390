"""The whole SSA temperature-and-scale op (x * (pos + tanh(u . gelu(x)))) fwd+bwd: autodiff vs a
hand-written custom VJP (scratch benchmark, 2026-12-06 session 4; at 16 128 4 32: auto 1.398 ms,
fused 1.280 ms; not adopted).
    MALLOC_ARENA_MAX=1 python docs/results/perf/scripts/temperature_custom_vjp.py B T H D"""
import time, sys, jax, jax.numpy as jnp, numpy as np
B,T,H,D = [int(a) for a in sys.argv[1:5]]
k = jax.random.split(jax.random.PRNGKey(0), 5)
x = jax.random.normal(k[0], (B,T,H,D)); u = jax.random.normal(k[1], (H,D))*0.1
pos = 1 + 0.1*jnp.log(jnp.arange(1,T+1,dtype=jnp.float32))[None,:,None]*jnp.ones((B,T,H))
G = jax.random.normal(k[2], (B,T,H,D)); R = jnp.sqrt(0.5)
def auto(x, u, pos):
  h = jax.nn.gelu(x, approximate=False)
  t = jnp.tanh(jnp.sum(h*u, -1))
  tau = pos + t
  return x * tau[...,None]
@jax.custom_vjp
def fused(x, u, pos):
  return auto(x, u, pos)
def f_fwd(x, u, pos):
  h = jax.nn.gelu(x, approximate=False)
  t = jnp.tanh(jnp.sum(h*u, -1))
  tau = pos + t
  return x * tau[...,None], (x, u, t, tau)
def f_bwd(res, g):
  x, u, t, tau = res
  dtau = jnp.sum(g*x, -1)
  df = dtau * (1 - t*t)
  cdf = 0.5*(1+jax.lax.erf(x*R)); pdf = jnp.exp(-0.5*x*x)*0.3989422804014327
  dx = g*tau[...,None] + (df[...,None]*u)*(cdf + x*pdf)
  du = jnp.einsum('bth,bthd->hd', df, x*cdf)
  return dx, du, dtau
fused.defvjp(f_fwd, f_bwd)
def bench(fn, name):
  loss = lambda x,u,pos: jnp.sum(fn(x,u,pos)*G)
  fb = jax.jit(jax.grad(loss, argnums=(0,1,2)))
  r = fb(x,u,pos); jax.block_until_ready(r)
  return fb, r
fa, ra = bench(auto,'auto'); ff, rf = bench(fused,'fused')
print('max rel err', [float(jnp.max(jnp.abs(a-b))/jnp.max(jnp.abs(a))) for a,b in zip(ra,rf)])
ts={'auto':[], 'fused':[]}
for _ in range(400):
  for n,f in (('auto',fa),('fused',ff)):
    t=time.perf_counter(); jax.block_until_ready(f(x,u,pos)); ts[n].append(time.perf_counter()-t)
for n in ts: print(n, f'{1e3*np.median(ts[n]):.3f} ms')
