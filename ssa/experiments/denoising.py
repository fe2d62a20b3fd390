r"""Theory experiment (b): denoising with vanilla vs value-selective attention (docs/theory.md).

    python -m ssa.experiments.denoising --config=configs/theory_denoising.py:small --outdir=DIR

Task: ssa/data/synthetic.py's denoising task. mu ~ N(0, I_d); a context of n tokens of which k
carry signal, z_j = mu + sigma_signal eps_j, the others are noise, z_j = sigma_noise eps_j; token
x_j = [z_j, s_j] with s_j = 1 on signal. Target mu. This experiment draws k uniformly in
[num_signal_min, num_signal_max] per example (with a fixed k, vanilla attention can already be
Bayes-optimal: docs/theory.md).

Estimators (MSE = mean over coordinates of the squared error, averaged over examples and k):
  vanilla          mu_hat = W_o sum_j softmax_j(q . (x_j W_k + b_k) / sqrt(d_k)) (x_j W_v + b_v)
                   with a learned query vector q (one-layer attention read out at one query)
  value-selective  the same, each value row scaled by tau_v(x_j) = 1 + tanh(u^T gelu(x_j W_v + b_v))
                   (docs/ssa.md §1.3, token term with weight sharing, u = 0 at init)
  naive            mean of all n tokens (synthetic.denoising_naive_estimate)
  Bayes            posterior mean sum_{signal} z_j / (k + sigma_signal^2)
                   (synthetic.denoising_bayes_estimate), MSE sigma_signal^2 / (k + sigma_signal^2)
The attention models train with one protocol for both: tokens divided per channel by a fixed RMS
measured on one training batch at init (cfg.input_norm; without it the σ_noise = 8 tokens saturate
the initial softmax and training can stall at mu_hat = 0, docs/theory.md), gradient clipping
(cfg.grad_clip), linear warm-up then cosine decay (Adam), on fresh batches sampled inside the jitted
step (`sample_batch`, the same law as synthetic.denoising_example); all four are evaluated on the
same test set built with synthetic.denoising_example (split 'test'), eval_per_k examples per k.

Writes DIR/denoising.json and DIR/denoising_mse.png (bar chart and MSE vs k) and prints a table.
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
from ssa.data import synthetic
from ssa.experiments.common import mean_std, write_json

MODELS = ('vanilla', 'value_selective')
METHODS = ('vanilla', 'value_selective', 'naive', 'bayes')


# ----------------------------------------------------------------------------- closed forms

def bayes_mse(k, sigma_signal: float):
  """Expected squared error per coordinate of the posterior mean given k signal tokens."""
  return sigma_signal ** 2 / (np.asarray(k, np.float64) + sigma_signal ** 2)


def naive_mse(k, n: int, sigma_signal: float, sigma_noise: float):
  """Expected squared error per coordinate of the mean of all n tokens given k signal tokens:
  (1 - k/n)^2 + (k sigma_signal^2 + (n - k) sigma_noise^2) / n^2."""
  k = np.asarray(k, np.float64)
  return (1 - k / n) ** 2 + (k * sigma_signal ** 2 + (n - k) * sigma_noise ** 2) / n ** 2


def ks(cfg) -> np.ndarray:
  if not 0 < cfg.num_signal_min <= cfg.num_signal_max <= cfg.num_tokens:
    raise ValueError(f'denoising: need 0 < num_signal_min ({cfg.num_signal_min}) <= '
                     f'num_signal_max ({cfg.num_signal_max}) <= num_tokens ({cfg.num_tokens}).')
  return np.arange(cfg.num_signal_min, cfg.num_signal_max + 1)


# ----------------------------------------------------------------------------- data

def sample_batch(key, cfg, batch_size: int):
  """(inputs [B, n, d+1], mu [B, d]) with k ~ U{num_signal_min..num_signal_max} per example; the
  same law as synthetic.denoising_example (jax, so it runs inside the jitted train step)."""
  n, d = cfg.num_tokens, cfg.dim
  k_mu, k_k, k_eps = jax.random.split(key, 3)
  mu = jax.random.normal(k_mu, (batch_size, d))
  k = jax.random.randint(k_k, (batch_size, 1), cfg.num_signal_min, cfg.num_signal_max + 1)
  # The signal tokens are the first k: the models have no positional input (permutation
  # invariant), so this equals the law with random positions and avoids a sort per step.
  signal = jnp.arange(n)[None, :] < k
  eps = jax.random.normal(k_eps, (batch_size, n, d))
  z = jnp.where(signal[..., None], mu[:, None] + cfg.sigma_signal * eps, cfg.sigma_noise * eps)
  return jnp.concatenate([z, signal[..., None].astype(z.dtype)], -1), mu


def test_set(cfg) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """{k: (inputs [m, n, d+1], mu [m, d])} from synthetic.denoising_example, split 'test'."""
  out = {}
  for k in ks(cfg):
    rows = [synthetic.denoising_example(
        int(k) * 1_000_000 + i, num_tokens=cfg.num_tokens, dim=cfg.dim, num_signal=int(k),
        sigma_signal=cfg.sigma_signal, sigma_noise=cfg.sigma_noise, seed=0, split='test')
            for i in range(cfg.eval_per_k)]
    out[int(k)] = (np.stack([r['inputs'] for r in rows]), np.stack([r['targets'] for r in rows]))
  return out


# ----------------------------------------------------------------------------- model

def input_scale(cfg, seed: int) -> jnp.ndarray:
  """Per-channel RMS [d+1] of the token inputs, estimated on one fresh training batch (1024
  examples, its own key): the fixed input scaling of cfg.input_norm (ones when it is off)."""
  if not cfg.input_norm:
    return jnp.ones(cfg.dim + 1)
  x, _ = sample_batch(jax.random.PRNGKey(20_000 + seed), cfg, 1024)
  return jnp.sqrt(jnp.mean(x ** 2, axis=(0, 1)))


def init_params(cfg, seed: int) -> dict:
  din, dk, dv = cfg.dim + 1, cfg.key_dim, cfg.value_dim
  ks_ = jax.random.split(jax.random.PRNGKey(seed), 4)
  return {'q': jax.random.normal(ks_[0], (dk,)),
          'wk': jax.random.normal(ks_[1], (din, dk)) / math.sqrt(din), 'bk': jnp.zeros(dk),
          'wv': jax.random.normal(ks_[2], (din, dv)) / math.sqrt(din), 'bv': jnp.zeros(dv),
          'wo': jax.random.normal(ks_[3], (dv, cfg.dim)) / math.sqrt(dv),
          'bo': jnp.zeros(cfg.dim), 'u': jnp.zeros(dv),
          # separate token-term projection, read only when cfg.weight_sharing is False
          'wt': jax.random.normal(jax.random.PRNGKey(seed + 7919), (din, dv)) / math.sqrt(din),
          'bt': jnp.zeros(dv),
          # fixed (never trained) input scaling: tokens enter both models as x / x_scale
          'x_scale': input_scale(cfg, seed)}


def _scaled(params, x):
  return x / params['x_scale'] if 'x_scale' in params else x


def value_temperature(params, x, weight_sharing: bool = True):
  """tau_v(x_j) = 1 + tanh(u^T gelu(x_j W + b)) [..., n] (docs/ssa.md §1.3): W, b = W_v, b_v with
  weight sharing, else a separate projection (wt, bt)."""
  x = _scaled(params, x)
  v = x @ params['wv'] + params['bv'] if weight_sharing else x @ params['wt'] + params['bt']
  return 1.0 + jnp.tanh(jax.nn.gelu(v, approximate=False) @ params['u'])


def predict(params, x, model: str, weight_sharing: bool = True):
  """mu_hat [B, d] of one-layer attention with a learned query vector; x [B, n, d+1] (raw
  tokens: the fixed input scaling params['x_scale'] is applied here and in value_temperature)."""
  xs = _scaled(params, x)
  k = xs @ params['wk'] + params['bk']
  v = xs @ params['wv'] + params['bv']
  a = jax.nn.softmax(k @ params['q'] / math.sqrt(k.shape[-1]), axis=-1)   # [B, n]
  if model == 'value_selective':
    v = value_temperature(params, x, weight_sharing)[..., None] * v
  elif model != 'vanilla':
    raise ValueError(f'denoising: model {model!r}; expected one of {MODELS}.')
  return jnp.einsum('bn,bnv->bv', a, v) @ params['wo'] + params['bo']


def mse(pred, target) -> float:
  return float(np.mean((np.asarray(pred, np.float64) - np.asarray(target, np.float64)) ** 2))


def make_trainer(cfg, model: str):
  """Jitted run of cfg.num_steps Adam steps on fresh batches: (params, key) -> (params, losses).
  The protocol is the same for both models: global-norm gradient clipping (cfg.grad_clip, 0 =
  off), linear warm-up over cfg.warmup_steps then cosine decay to 0 from cfg.lr."""
  if not 0 <= cfg.warmup_steps < cfg.num_steps:
    raise ValueError(f'denoising: need 0 <= warmup_steps ({cfg.warmup_steps}) < num_steps '
                     f'({cfg.num_steps}).')
  if cfg.warmup_steps > 0:
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.num_steps)
  else:
    schedule = optax.cosine_decay_schedule(cfg.lr, cfg.num_steps)
  opt = optax.adam(schedule)
  if cfg.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)

  def loss_fn(params, x, mu):
    return jnp.mean((predict(params, x, model, cfg.weight_sharing) - mu) ** 2)

  @jax.jit
  def run(params, key):
    def step(carry, key):
      params, state = carry
      x, mu = sample_batch(key, cfg, cfg.batch_size)
      loss, grads = jax.value_and_grad(loss_fn)(params, x, mu)
      grads = dict(grads, x_scale=jnp.zeros_like(grads['x_scale']))  # fixed, never trained
      if model == 'vanilla':
        grads = dict(grads, u=jnp.zeros_like(grads['u']))  # vanilla ignores u: keep it at 0
      if model == 'vanilla' or cfg.weight_sharing:
        grads = dict(grads, wt=jnp.zeros_like(grads['wt']), bt=jnp.zeros_like(grads['bt']))
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)),
                                       jax.random.split(key, cfg.num_steps))
    return params, losses

  return run


def train(cfg, params, seed: int, model: str, trainer=None):
  """(params, loss curve subsampled to ~cfg.log_points points)."""
  trainer = trainer or make_trainer(cfg, model)
  params, losses = trainer(params, jax.random.PRNGKey(10_000 + seed))
  losses = np.asarray(losses)
  every = max(cfg.num_steps // cfg.log_points, 1)
  return params, [float(losses[max(i - every + 1, 0):i + 1].mean())
                  for i in range(every - 1, cfg.num_steps, every)]


# ----------------------------------------------------------------------------- experiment

def run_experiment(cfg, outdir: str | None = None, verbose: bool = True) -> dict:
  t0 = time.time()
  kk = ks(cfg)
  data = test_set(cfg)
  per_k = {m: [] for m in METHODS}  # [seeds or 1][k]
  per_k['bayes'].append([mse(synthetic.denoising_bayes_estimate(x, cfg.sigma_signal), mu)
                         for x, mu in data.values()])
  per_k['naive'].append([mse(synthetic.denoising_naive_estimate(x), mu) for x, mu in data.values()])
  trainers = {m: make_trainer(cfg, m) for m in MODELS}
  curves, tau_stats = {m: [] for m in MODELS}, []
  for seed in range(cfg.num_seeds):
    p0 = init_params(cfg, seed)
    for m in MODELS:
      params, curve = train(cfg, p0, seed, m, trainers[m])
      curves[m].append(curve)
      per_k[m].append([mse(predict(params, jnp.asarray(x), m, cfg.weight_sharing), mu)
                       for x, mu in data.values()])
      if m == 'value_selective':
        x = np.concatenate([x for x, _ in data.values()])
        t = np.asarray(value_temperature(params, jnp.asarray(x), cfg.weight_sharing))
        sig = x[..., -1] > 0.5
        tau_stats.append({'signal': float(t[sig].mean()), 'noise': float(t[~sig].mean())})
  overall = {m: [float(np.mean(r)) for r in per_k[m]] for m in METHODS}  # k uniform: mean over k
  closed = {'bayes': float(bayes_mse(kk, cfg.sigma_signal).mean()),
            'naive': float(naive_mse(kk, cfg.num_tokens, cfg.sigma_signal, cfg.sigma_noise).mean())}
  result = {
      'experiment': 'denoising', 'config': cfg.to_dict(), 'ks': kk.tolist(),
      'mse': {m: mean_std(overall[m]) for m in METHODS},
      'mse_closed_form': closed,
      'mse_per_seed': {m: [round(x, 5) for x in overall[m]] for m in MODELS},
      'mse_by_k': {m: [round(float(x), 5) for x in np.mean(per_k[m], axis=0)] for m in METHODS},
      'mse_by_k_closed_form': {
          'bayes': [round(float(x), 5) for x in bayes_mse(kk, cfg.sigma_signal)],
          'naive': [round(float(x), 5) for x in naive_mse(kk, cfg.num_tokens, cfg.sigma_signal,
                                                          cfg.sigma_noise)]},
      'excess_over_bayes': {m: mean_std(np.asarray(overall[m]) / overall['bayes'][0] - 1.0)
                            for m in MODELS},
      'value_selective_better_seeds':
          f"{sum(a < b for a, b in zip(overall['value_selective'], overall['vanilla']))}/"
          f"{cfg.num_seeds}",
      'tau_v_mean': {'signal': mean_std([t['signal'] for t in tau_stats]),
                     'noise': mean_std([t['noise'] for t in tau_stats])},
      'loss_curve_seed0': {m: [round(x, 5) for x in curves[m][0]] for m in MODELS},
  }
  result['wall_s'] = round(time.time() - t0, 1)
  if outdir:
    write_json(outdir, 'denoising.json', result)
    figure(result, per_k, os.path.join(outdir, 'denoising_mse.png'))
  if verbose:
    print(summary_text(result))
  return result


def summary_text(r: dict) -> str:
  c = r['config']
  lines = [f"denoising: n={c['num_tokens']}, d={c['dim']}, k ~ U{{{c['num_signal_min']}.."
           f"{c['num_signal_max']}}}, sigma_signal={c['sigma_signal']}, sigma_noise="
           f"{c['sigma_noise']}, {c['num_seeds']} seeds x {c['num_steps']} steps x batch "
           f"{c['batch_size']}, {c['eval_per_k']} test examples per k",
           f"{'method':16s} {'test MSE / coord':>20s} {'closed form':>12s} {'excess over Bayes':>18s}"]
  for m in METHODS:
    s = r['mse'][m]
    cf = f"{r['mse_closed_form'][m]:.4f}" if m in r['mse_closed_form'] else '-'
    ex = r['excess_over_bayes'].get(m)
    ex = f"{100 * ex['mean']:+.1f}% ± {100 * ex['std']:.1f}%" if ex else '-'
    lines.append(f"{m:16s} {s['mean']:10.4f} ± {s['std']:.4f} {cf:>12s} {ex:>18s}")
  t = r['tau_v_mean']
  lines.append(f"value-selective < vanilla in {r['value_selective_better_seeds']} seeds; mean "
               f"tau_v on signal tokens {t['signal']['mean']:.3f}, on noise tokens "
               f"{t['noise']['mean']:.3f}")
  lines.append(f"wall time {r['wall_s']} s")
  return '\n'.join(lines)


def figure(result, per_k, path):
  plt = plots._plt()  # pylint: disable=protected-access
  colours = {'vanilla': 'tab:blue', 'value_selective': 'tab:orange', 'naive': 'tab:gray',
             'bayes': 'tab:green'}
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
  means = [result['mse'][m]['mean'] for m in METHODS]
  a1.bar(range(4), means, yerr=[result['mse'][m]['std'] for m in METHODS], capsize=4,
         color=[colours[m] for m in METHODS])
  for i, v in enumerate(means):
    a1.text(i, v, f'{v:.3f}', ha='center', va='bottom', fontsize=8)
  a1.set_xticks(range(4), ['vanilla', 'value-\nselective', 'naive', 'Bayes'])
  a1.set_yscale('log')
  a1.set_ylabel('test MSE per coordinate (log)')
  a1.set_title('MSE, mean ± std over seeds (k uniform)', fontsize=9)
  kk = np.asarray(result['ks'])
  for m in METHODS:
    r = np.asarray(per_k[m])
    sd = r.std(0, ddof=1) if len(r) > 1 else 0 * r[0]
    a2.errorbar(kk, r.mean(0), sd, color=colours[m], marker='o', ms=3, capsize=2,
                label=m.replace('_', '-'))
  for m, ls in (('bayes', ':'), ('naive', ':')):
    a2.plot(kk, result['mse_by_k_closed_form'][m], ls, color='k', lw=1)
  a2.plot([], [], ':', color='k', lw=1, label='closed forms')
  a2.set_yscale('log')
  a2.set_xlabel('number of signal tokens k')
  a2.set_ylabel('test MSE per coordinate (log)')
  a2.set_title('MSE vs k', fontsize=9)
  a2.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


# ----------------------------------------------------------------------------- entry point

if __name__ == '__main__':
  cli.run_config_experiment(
      run_experiment, config_help='configs/theory_denoising.py:small|paper',
      outdir_help='Directory for denoising.json and denoising_mse.png.')
