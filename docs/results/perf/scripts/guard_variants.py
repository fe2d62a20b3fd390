"""NaN-guard variants on a 124M-parameter AdamW update (scratch benchmark behind
docs/results/perf/nan_guard_2026-12-06.txt; none adopted):
    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 \\
      python docs/results/perf/scripts/guard_variants.py none where where2 cond_sum twopass tpw
Modes: none, gradwhere (finite gradient norm + select), gradcond (the same, update under a cond), where (all(isfinite) + select), where2 (sum-of-x*0 check + select), check[_sum],
cond[_sum], twopass[_sum] (check, then update under a cond), tpw (check, barrier, update + select)."""
import time, functools, sys
import jax, jax.numpy as jnp, optax, numpy as np
N = 124_000_000
shapes = [(50304, 768)] + [(768, 768*4)]*24 + [(768*4,768)]*12 + [(768,768*3)]*12
sizes = [int(np.prod(s)) for s in shapes]
params = {f'p{i}': jnp.ones(s, jnp.float32) * 0.01 for i, s in enumerate(shapes)}
tx = optax.adamw(1e-3)
opt = tx.init(params)
state = (params, opt, jnp.ones((), bool))

def all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]))

def all_finite_sum(tree):
  tot = sum(jnp.sum(x * 0.0, dtype=jnp.float32) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))
  return jnp.isfinite(tot)

def apply(o):  # the AdamW update of (params, opt_state, grads), for the cond variants
  p, op, g = o
  u, nop = tx.update(g, op, p)
  return optax.apply_updates(p, u), nop

def step(state, grads, mode):
  params, opt, fin = state
  upd, nopt = tx.update(grads, opt, params)
  np_ = optax.apply_updates(params, upd)
  if mode.startswith('twopass'):
    check = all_finite_sum if mode.endswith('_sum') else all_finite
    ok = fin & check((np_, nopt))
    n = jax.lax.cond(ok, apply, lambda o: (o[0], o[1]), (params, opt, grads))
    return (*n, ok)
  if mode == 'tpw':
    ok = fin & all_finite_sum((np_, nopt))
    old = jax.lax.optimization_barrier((params, opt, grads))
    u2, o2 = tx.update(old[2], old[1], old[0])
    p2 = optax.apply_updates(old[0], u2)
    n = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (p2, o2), old[:2])
    return (*n, ok)
  if mode == 'where2':
    ok = fin & all_finite_sum((np_, nopt))
    n = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (np_, nopt), (params, opt))
    return (*n, ok)
  if mode == 'none':
    return (np_, nopt, fin)
  if mode == 'gradcond':  # ok from the gradient norm only; the update runs under a cond
    ok = fin & jnp.isfinite(optax.tree.norm(grads))
    n = jax.lax.cond(ok, apply, lambda o: (o[0], o[1]), (params, opt, grads))
    return (*n, ok)
  if mode == 'gradwhere':  # ok from the gradient norm only (before the update), then a select
    ok = fin & jnp.isfinite(optax.tree.norm(grads))
    n = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (np_, nopt), (params, opt))
    return (*n, ok)
  if mode.endswith('_sum'):
    ok = fin & all_finite_sum((np_, nopt)); mode = mode[:-4]
  else:
    ok = fin & all_finite((np_, nopt))
  if mode == 'check':
    return (np_, nopt, ok)
  if mode == 'where':
    n = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (np_, nopt), (params, opt))
    return (*n, ok)
  if mode == 'cond':
    n = jax.lax.cond(ok, lambda: (np_, nopt), lambda: (params, opt))
    return (*n, ok)

grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
for mode in sys.argv[1:]:
  f = jax.jit(functools.partial(step, mode=mode), donate_argnums=0)
  s = f(state, grads); jax.block_until_ready(s)
  ts = []
  for _ in range(7):
    t = time.perf_counter(); s = f(s, grads); jax.block_until_ready(s); ts.append(time.perf_counter() - t)
  state = s
  print(mode, 'median ms', round(1e3*float(np.median(ts)), 1), [round(1e3*x) for x in ts], flush=True)
