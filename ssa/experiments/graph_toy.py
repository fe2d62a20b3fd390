r"""Theory experiment (a): graph next-token toy, vanilla attention vs SSA (docs/theory.md).

    python -m ssa.experiments.graph_toy --config=configs/theory_graph.py:small --outdir=DIR

Tokens are the V nodes of a random directed graph (ssa.data.synthetic.Graph, out-degrees vary);
the target law P*(.|i) is uniform over i's out-neighbours. A one-layer attention model maps a query
token i to a next-token law: the query e_i attends over all V vocabulary tokens as keys and the
attention row IS the prediction,

    P(j | i) = softmax_j( tau(i) * (e_i W_q)(e_j W_k)^T / sqrt(d_k) )

with fixed random embeddings e_j. Vanilla: tau = 1. SSA: tau(i) = 1 + tanh(u^T gelu(e_i W_q))
(the token term of docs/ssa.md §1.2 with weight sharing, u = 0 at init so SSA starts equal to
vanilla) or an unbounded softplus form (config tau_forms). All train on the expected cross-entropy
-mean_i sum_j P*(j|i) log P(j|i), full batch, Adam, from the same init, for every seed.

Writes DIR/graph_toy.json (numbers) and DIR/graph_heatmaps.png, DIR/graph_opnorm_hist.png,
DIR/graph_tau_vs_degree.png, and prints a summary table.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssa import cli
from ssa import plots
from ssa.data.synthetic import Graph
from ssa.experiments.common import mean_std, write_json

TAU_FORMS = ('tanh', 'softplus')


def model_names(cfg) -> list[str]:
  """'vanilla' and one 'ssa_<form>' per entry of cfg.tau_forms."""
  for f in cfg.tau_forms:
    if f not in TAU_FORMS:
      raise ValueError(f'graph toy: tau_forms entry {f!r}; expected one of {TAU_FORMS}.')
  return ['vanilla'] + [f'ssa_{f}' for f in cfg.tau_forms]


# ----------------------------------------------------------------------------- metrics

def cross_entropy(p_star, log_p) -> float:
  """-mean_i sum_j P*(j|i) log P(j|i) (terms with P* = 0 count 0)."""
  p_star, log_p = np.asarray(p_star, np.float64), np.asarray(log_p, np.float64)
  return float(-np.where(p_star > 0, p_star * np.where(p_star > 0, log_p, 0.0), 0.0).sum(-1).mean())


def entropy(p_star) -> float:
  """mean_i H(P*(.|i)) = mean_i log deg(i) for the uniform-over-neighbours law."""
  p = np.asarray(p_star, np.float64)
  return float(-np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1).mean())


def l1_error(p, p_star) -> float:
  """mean_i sum_j |P(j|i) - P*(j|i)| (in [0, 2])."""
  return float(np.abs(np.asarray(p, np.float64) - np.asarray(p_star, np.float64)).sum(-1).mean())


def operator_norm(m) -> float:
  """Largest singular value ||M||_2."""
  return float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0])


# ----------------------------------------------------------------------------- model

def problem(cfg, seed: int):
  """(graph, P* [V, V] float32, embeddings E [V, d] float32) of one seed."""
  g = Graph(cfg.num_nodes, cfg.min_degree, cfg.max_degree, seed=cfg.graph_seed + seed)
  rng = np.random.default_rng([seed, 2024])
  e = rng.standard_normal([cfg.num_nodes, cfg.embed_dim]) / math.sqrt(cfg.embed_dim)
  return g, g.target_law().astype(np.float32), e.astype(np.float32)


def init_params(cfg, seed: int) -> dict:
  """W_q, W_k ~ N(0, init_std^2 / d); u = 0 (SSA only reads u). Same init for both models."""
  kq, kk = jax.random.split(jax.random.PRNGKey(seed))
  std = cfg.init_std / math.sqrt(cfg.embed_dim)
  shape = (cfg.embed_dim, cfg.key_dim)
  return {'wq': std * jax.random.normal(kq, shape), 'wk': std * jax.random.normal(kk, shape),
          'u': jnp.zeros([cfg.key_dim])}


def temperature(params, e, tau_form: str):
  """tau(i) [V] of the SSA model: token term of docs/ssa.md §1.2 with weight sharing (reads
  e_i W_q)."""
  f = jax.nn.gelu(e @ params['wq'], approximate=False) @ params['u']
  if tau_form == 'tanh':
    return 1.0 + jnp.tanh(f)
  if tau_form == 'softplus':
    return jax.nn.softplus(f + math.log(math.e - 1.0))  # = 1 at u = 0, unbounded above
  raise ValueError(f'graph toy: tau_form={tau_form!r}; expected "tanh" or "softplus".')


def log_probs(params, e, model: str):
  """log P [V, V]: row i = the query node i's predicted next-token law. model: 'vanilla' or
  'ssa_<tau_form>'."""
  q, k = e @ params['wq'], e @ params['wk']
  logits = q @ k.T / math.sqrt(q.shape[-1])
  if model.startswith('ssa_'):
    logits = temperature(params, e, model[4:])[:, None] * logits
  elif model != 'vanilla':
    raise ValueError(f'graph toy: model {model!r}; expected vanilla or ssa_<tau_form>.')
  return jax.nn.log_softmax(logits, axis=-1)


def loss_fn(params, e, p_star, model):
  return -(p_star * log_probs(params, e, model)).sum(-1).mean()


def make_trainer(cfg, model: str):
  """Jitted full-batch Adam(W) run of cfg.num_steps: (params, e, P*) -> (params, losses [steps])."""
  opt = optax.adamw(cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay else \
      optax.adam(cfg.lr)
  @jax.jit
  def run(params, e, p_star):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params, e, p_star, model)
      if model == 'vanilla':
        grads = dict(grads, u=jnp.zeros_like(grads['u']))  # vanilla ignores u: keep it at 0
      updates, state = opt.update(grads, state, params)
      if model == 'vanilla':
        updates = dict(updates, u=jnp.zeros_like(updates['u']))
      return (optax.apply_updates(params, updates), state), loss
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None,
                                       length=cfg.num_steps)
    return params, losses

  return run


def train(cfg, params, e, p_star, model: str, trainer=None):
  """Full-batch training; returns (params, loss curve subsampled to ~cfg.log_points points)."""
  trainer = trainer or make_trainer(cfg, model)
  params, losses = trainer(params, jnp.asarray(e), jnp.asarray(p_star))
  losses = np.asarray(losses)
  every = max(cfg.num_steps // cfg.log_points, 1)
  return params, [float(x) for x in losses[::every]] + [float(losses[-1])]


def evaluate(params, e, p_star, model: str):
  """({'ce', 'l1', 'opnorm', 'frobenius'[, 'tau']}, P [V, V]) of trained params."""
  lp = np.asarray(log_probs(params, jnp.asarray(e), model), np.float64)
  w = np.asarray(params['wq'], np.float64) @ np.asarray(params['wk'], np.float64).T
  out = {'ce': cross_entropy(p_star, lp), 'l1': l1_error(np.exp(lp), p_star),
         'opnorm': operator_norm(w), 'frobenius': float(np.linalg.norm(w))}
  if model.startswith('ssa_'):
    out['tau'] = np.asarray(temperature(params, jnp.asarray(e), model[4:]), np.float64)
  return out, np.exp(lp)


def degree_table(degrees: list[np.ndarray], taus: list[np.ndarray]) -> dict:
  """Temperature by node degree pooled over seeds, and the share of tau's variance explained by
  degree per seed (one-way ANOVA R^2: 1 = same degree gives exactly the same temperature)."""
  deg, tau = np.concatenate(degrees), np.concatenate(taus)
  rows = []
  for d in np.unique(deg):
    t = tau[deg == d]
    rows.append({'degree': int(d), 'count': int(t.size), 'tau_mean': float(t.mean()),
                 'tau_std': float(t.std())})
  r2, corr = [], []
  for d_s, t_s in zip(degrees, taus):
    within = sum(((t_s[d_s == d] - t_s[d_s == d].mean()) ** 2).sum() for d in np.unique(d_s))
    total = ((t_s - t_s.mean()) ** 2).sum()
    r2.append(float(1.0 - within / total) if total > 0 else float('nan'))
    corr.append(float(np.corrcoef(d_s, t_s)[0, 1]) if t_s.std() > 0 else float('nan'))
  return {'rows': rows, 'r2_by_degree': r2, 'corr_degree_tau': corr}


def run_experiment(cfg, outdir: str | None = None, verbose: bool = True) -> dict:
  """All seeds, all models; writes the JSON and figures when outdir is given."""
  t0 = time.time()
  models = model_names(cfg)
  ssa_models = models[1:]
  metrics = ('ce', 'l1', 'opnorm', 'frobenius')
  per_seed = {m: {k: [] for k in metrics + ('loss_curve',)} for m in models}
  entropies, degrees, example = [], [], None
  taus = {m: [] for m in ssa_models}
  trainers = {m: make_trainer(cfg, m) for m in models}  # compiled once, reused for every seed
  for seed in range(cfg.num_seeds):
    g, p_star, e = problem(cfg, seed)
    entropies.append(entropy(p_star))
    degrees.append(np.asarray(g.degrees))
    p0 = init_params(cfg, seed)
    preds = {}
    for m in models:
      params, curve = train(cfg, p0, e, p_star, m, trainers[m])
      ev, preds[m] = evaluate(params, e, p_star, m)
      for k in metrics:
        per_seed[m][k].append(ev[k])
      per_seed[m]['loss_curve'].append(curve)
      if m in taus:
        taus[m].append(ev['tau'])
    if seed == 0:
      example = {'p_star': p_star, 'degrees': np.asarray(g.degrees), **preds}
  summary = {m: {k: mean_std(per_seed[m][k]) for k in metrics} for m in models}
  wins = {m: {k: f"{sum(a < b for a, b in zip(per_seed[m][k], per_seed['vanilla'][k]))}/"
                 f"{cfg.num_seeds}" for k in ('ce', 'l1', 'opnorm')} for m in ssa_models}
  temps = {}
  for m in ssa_models:
    table = degree_table(degrees, taus[m])
    allt = np.concatenate(taus[m])
    temps[m] = {'by_degree': table['rows'], 'r2_by_degree': mean_std(table['r2_by_degree']),
                'corr_with_degree': mean_std(table['corr_degree_tau']),
                'range': [float(allt.min()), float(allt.max())]}
  result = {
      'experiment': 'graph_toy', 'config': cfg.to_dict(),
      'entropy_lower_bound': mean_std(entropies),
      'summary': summary,
      'lower_than_vanilla_seeds': wins,
      'per_seed': {m: {k: [round(x, 5) for x in per_seed[m][k]] for k in metrics} for m in models},
      'loss_curve_seed0': {m: [round(x, 5) for x in per_seed[m]['loss_curve'][0]] for m in models},
      'temperature': temps,
  }
  result['wall_s'] = round(time.time() - t0, 1)
  if outdir:
    write_json(outdir, 'graph_toy.json', result)
    figures(result, example, per_seed, degrees, taus, outdir)
  if verbose:
    print(summary_text(result))
  return result


def summary_text(r: dict) -> str:
  s, c = r['summary'], r['config']
  lines = [f"graph toy: V={c['num_nodes']}, degrees {c['min_degree']}-{c['max_degree']}, "
           f"{c['num_seeds']} seeds, {c['num_steps']} steps, lr {c['lr']}, weight decay "
           f"{c['weight_decay']}; entropy (CE lower bound) {r['entropy_lower_bound']['mean']:.4f}",
           f"{'model':13s} {'cross-entropy':>17s} {'L1 error':>17s} {'||W_q W_k^T||_2':>19s}"]
  for m in s:
    lines.append(f"{m:13s} " + ' '.join(f"{s[m][k]['mean']:8.4f} ± {s[m][k]['std']:6.4f}"
                                         for k in ('ce', 'l1')) +
                 f" {s[m]['opnorm']['mean']:9.2f} ± {s[m]['opnorm']['std']:7.2f}")
  for m, w in r['lower_than_vanilla_seeds'].items():
    lines.append(f"{m} lower than vanilla in: CE {w['ce']} seeds, L1 {w['l1']}, op. norm "
                 f"{w['opnorm']}")
  for m, t in r['temperature'].items():
    lines.append(f'{m} tau by degree (mean±std over nodes, pooled seeds): ' + ', '.join(
        f"{row['degree']}: {row['tau_mean']:.2f}±{row['tau_std']:.2f}" for row in t['by_degree']))
    lines.append(f"  share of tau variance explained by degree (R^2 per seed) "
                 f"{t['r2_by_degree']['mean']:.3f} ± {t['r2_by_degree']['std']:.3f}; "
                 f"corr(degree, tau) {t['corr_with_degree']['mean']:.3f} ± "
                 f"{t['corr_with_degree']['std']:.3f}")
  lines.append(f"wall time {r['wall_s']} s")
  return '\n'.join(lines)


# ----------------------------------------------------------------------------- figures

COLOURS = {'vanilla': 'tab:blue', 'ssa_tanh': 'tab:orange', 'ssa_softplus': 'tab:green'}


def figures(result, example, per_seed, degrees, taus, outdir):
  plt = plots._plt()  # pylint: disable=protected-access
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  models = list(per_seed)
  order = np.argsort(example['degrees'], kind='stable')  # rows sorted by degree
  panels = [('target P*', example['p_star'])] + [(m, example[m]) for m in models]
  fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 1, 3.6))
  vmax = float(example['p_star'].max())
  for ax, (name, p) in zip(axes, panels):
    im = ax.imshow(p[order], cmap='magma', vmin=0, vmax=vmax, aspect='auto',
                   interpolation='nearest')
    if name != 'target P*':
      name += f' (L1 {l1_error(p, example["p_star"]):.3f})'
    ax.set_title(name, fontsize=9)
    ax.set_xlabel('next token j')
  axes[0].set_ylabel('query node i (sorted by degree)')
  fig.colorbar(im, ax=list(axes), shrink=0.8)
  fig.suptitle('seed 0: target and learned next-token laws', fontsize=10)
  fig.savefig(os.path.join(outdir, 'graph_heatmaps.png'), dpi=100, bbox_inches='tight')
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  every = np.concatenate([per_seed[m]['opnorm'] for m in models])
  bins = np.geomspace(every.min() * 0.95, every.max() * 1.05, 25)
  for m in models:
    ax.hist(per_seed[m]['opnorm'], bins=bins, alpha=0.6, color=COLOURS.get(m), label=m)
  ax.set_xscale('log')
  ax.set_xlabel(r'$\|W_q W_k^\top\|_2$ (log scale)')
  ax.set_ylabel('seeds')
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: integer ticks only
  ax.set_title(f'operator norm, {len(per_seed["vanilla"]["opnorm"])} seeds', fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, 'graph_opnorm_hist.png'), dpi=100)
  plt.close(fig)

  ssa_models = list(taus)
  fig, axes = plt.subplots(1, len(ssa_models), figsize=(4.5 * len(ssa_models), 3.5), squeeze=False)
  rng = np.random.default_rng(0)
  for ax, m in zip(axes[0], ssa_models):
    for d, t in zip(degrees, taus[m]):
      ax.scatter(d + rng.uniform(-0.15, 0.15, d.size), t, s=5, alpha=0.4)
    rows = result['temperature'][m]['by_degree']
    ax.errorbar([r['degree'] for r in rows], [r['tau_mean'] for r in rows],
                [r['tau_std'] for r in rows], color='k', marker='o', capsize=3,
                label='mean ± std')
    ax.set_xlabel('node out-degree')
    ax.set_ylabel(r'learned $\tau(i)$')
    ax.set_title(f'{m}: temperature vs degree (colour = seed)', fontsize=9)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, 'graph_tau_vs_degree.png'), dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------- entry point

if __name__ == '__main__':
  cli.run_config_experiment(
      run_experiment, config_help='configs/theory_graph.py:small|paper',
      outdir_help='Directory for graph_toy.json and the PNG figures.')
