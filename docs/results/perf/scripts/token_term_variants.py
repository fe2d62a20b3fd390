"""Token term fwd+bwd at a given [B, T, F, D]: the shipped form vs variants (scratch benchmark
behind docs/results/perf/ssa_overhead_2026-12-06.txt; none adopted). Run from the repo root:
    MALLOC_ARENA_MAX=1 python docs/results/perf/scripts/token_term_variants.py 16 128 4 32 cur cv bd
B, T, F, D then variant names (cur noact tanhg cv ein bd bd0); prints grad error vs cur and medians."""
import time, sys
import jax, jax.numpy as jnp, numpy as np
B,T,F,D = [int(x) for x in (sys.argv[1:5] if len(sys.argv)>4 else (16,128,4,32))]
H = F
x = jax.random.normal(jax.random.PRNGKey(0), (B,T,F,D))
u = jax.random.normal(jax.random.PRNGKey(1), (F,D)) * 0.1
g = jax.random.normal(jax.random.PRNGKey(2), (B,T,H))

def cur(x, u):
  h = jax.nn.gelu(x, approximate=False)
  f = jnp.sum(h.reshape(B*T,F,D) * u, -1)
  return jnp.tanh(f.reshape(B,T,H,F//H).sum(-1))

def noact(x, u):
  f = jnp.sum(x.reshape(B*T,F,D) * u, -1)
  return jnp.tanh(f.reshape(B,T,H,F//H).sum(-1))

def tanhg(x, u):
  h = jax.nn.gelu(x, approximate=True)
  f = jnp.sum(h.reshape(B*T,F,D) * u, -1)
  return jnp.tanh(f.reshape(B,T,H,F//H).sum(-1))

@jax.custom_vjp
def gelu_cv(x):
  return 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))
def gelu_fwd(x):
  return gelu_cv(x), x
def gelu_bwd(x, gy):
  cdf = 0.5 * (1.0 + jax.lax.erf(x * 0.7071067811865476))
  pdf = jnp.exp(-0.5 * x * x) * 0.3989422804014327
  return (gy * (cdf + x * pdf),)
gelu_cv.defvjp(gelu_fwd, gelu_bwd)
def cv(x, u):
  h = gelu_cv(x)
  f = jnp.sum(h.reshape(B*T,F,D) * u, -1)
  return jnp.tanh(f.reshape(B,T,H,F//H).sum(-1))

def ein(x, u):
  h = jax.nn.gelu(x, approximate=False)
  f = jnp.einsum('nfd,fd->nf', h.reshape(B*T,F,D), u)
  return jnp.tanh(f.reshape(B,T,H,F//H).sum(-1))

def bd(x, u):
  h = gelu_cv(x)
  Fd = u.shape[0]
  U = (jnp.eye(Fd, dtype=u.dtype)[:, None, :] * u[:, :, None]).reshape(Fd * D, Fd)
  f = h.reshape(B*T, Fd*D) @ U
  return jnp.tanh(f.reshape(B,T,H,Fd//H).sum(-1))

def bd0(x, u):
  h = jax.nn.gelu(x, approximate=False)
  Fd = u.shape[0]
  U = (jnp.eye(Fd, dtype=u.dtype)[:, None, :] * u[:, :, None]).reshape(Fd * D, Fd)
  f = h.reshape(B*T, Fd*D) @ U
  return jnp.tanh(f.reshape(B,T,H,Fd//H).sum(-1))

def bench(fn, name):
  def loss(x, u): return jnp.sum(fn(x, u) * g)
  fb = jax.jit(jax.grad(loss, argnums=(0,1)))
  ff = jax.jit(fn)
  for f, tag in ((ff, 'fwd'), (fb, 'fwd+bwd')):
    r = f(x, u); jax.block_until_ready(r)
    ts = []
    for _ in range(300):
      t = time.perf_counter(); r = f(x, u); jax.block_until_ready(r); ts.append(time.perf_counter()-t)
    print(f'{name:8s} {tag:8s} median {1e3*np.median(ts):.3f} ms', flush=True)
ref = jax.grad(lambda x,u: jnp.sum(cur(x,u)*g), argnums=(0,1))(x,u)
for name in sys.argv[5:] or ['cur','noact','tanhg','cv','ein']:
  fn = globals()[name]
  got = jax.grad(lambda x,u: jnp.sum(fn(x,u)*g), argnums=(0,1))(x,u)
  err = max(float(jnp.max(jnp.abs(a-b))/jnp.max(jnp.abs(b))) for a,b in zip(got, ref))
  print(name, 'grad rel err vs cur', err)
  bench(fn, name)
