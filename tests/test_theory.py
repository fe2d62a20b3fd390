"""Theory experiments (ssa/experiments): metrics on known answers, closed forms, tiny training."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from configs import theory_denoising, theory_graph
from ssa.data import synthetic
from ssa.experiments import denoising, graph_toy


def _graph_cfg(**kw):
  c = theory_graph.get_config('small')
  c.unlock()
  c.update(dict(num_nodes=12, max_degree=5, embed_dim=12, key_dim=12, num_steps=150,
                num_seeds=1, weight_decay=0.0, log_points=5), **kw)
  return c


def test_graph_metrics_known_answers():
  g = synthetic.Graph(20, 1, 6, seed=3)
  p = g.target_law()
  assert graph_toy.l1_error(p, p) == 0.0
  with np.errstate(divide='ignore'):
    ce = graph_toy.cross_entropy(p, np.log(p))
  assert ce == pytest.approx(np.mean(np.log(g.degrees)), abs=1e-12)
  assert graph_toy.entropy(p) == pytest.approx(np.mean(np.log(g.degrees)), abs=1e-12)
  uniform = np.full_like(p, 1.0 / 20)
  assert graph_toy.cross_entropy(p, np.log(uniform)) == pytest.approx(math.log(20))
  assert graph_toy.l1_error(uniform, p) == pytest.approx(np.mean(2 - 2 * g.degrees / 20))


def test_operator_norm_is_largest_singular_value():
  m = np.random.default_rng(0).standard_normal([7, 5])
  assert graph_toy.operator_norm(m) == pytest.approx(np.linalg.svd(m)[1][0], rel=1e-12)
  assert graph_toy.operator_norm(np.diag([3.0, -5.0, 1.0])) == pytest.approx(5.0)


def test_ssa_starts_equal_to_vanilla_and_training_reduces_loss():
  cfg = _graph_cfg()
  _, p_star, e = graph_toy.problem(cfg, 0)
  p0 = graph_toy.init_params(cfg, 0)
  lv = graph_toy.log_probs(p0, jnp.asarray(e), 'vanilla')
  for m in ('ssa_tanh', 'ssa_softplus'):
    np.testing.assert_allclose(graph_toy.log_probs(p0, jnp.asarray(e), m), lv, atol=1e-6)
  h = graph_toy.entropy(p_star)
  for m in ('vanilla', 'ssa_tanh'):
    params, curve = graph_toy.train(cfg, p0, e, p_star, m)
    ev, _ = graph_toy.evaluate(params, e, p_star, m)
    assert curve[0] > h + 0.5            # near-uniform start: CE about log V
    assert ev['ce'] < curve[0] - 0.5     # 150 Adam steps cut the cross-entropy by > 0.5 nats
    assert ev['ce'] >= h - 1e-6          # never below the entropy


def test_denoising_closed_forms_match_samples():
  n, d, ss, sn = 16, 4, 1.5, 3.0
  for k in (1, 5):
    rows = [synthetic.denoising_example(i, num_tokens=n, dim=d, num_signal=k, sigma_signal=ss,
                                        sigma_noise=sn, split='validation') for i in range(2000)]
    x = np.stack([r['inputs'] for r in rows])
    mu = np.stack([r['targets'] for r in rows])
    se_b = ((synthetic.denoising_bayes_estimate(x, ss) - mu) ** 2).mean(-1)
    se_n = ((synthetic.denoising_naive_estimate(x) - mu) ** 2).mean(-1)
    for se, cf in ((se_b, denoising.bayes_mse(k, ss)), (se_n, denoising.naive_mse(k, n, ss, sn))):
      assert abs(se.mean() - cf) < 4 * se.std() / math.sqrt(se.size), (k, se.mean(), cf)


def test_denoising_jax_sampler_has_the_task_law():
  cfg = theory_denoising.get_config('small')
  cfg.unlock()
  cfg.update(dict(num_tokens=16, dim=4, num_signal_min=3, num_signal_max=3, sigma_signal=1.5,
                  sigma_noise=3.0))
  import jax  # pylint: disable=g-import-not-at-top
  x, mu = denoising.sample_batch(jax.random.PRNGKey(0), cfg, 20000)
  x, mu = np.asarray(x), np.asarray(mu)
  assert (x[..., -1].sum(-1) == 3).all()
  se = ((synthetic.denoising_bayes_estimate(x, 1.5) - mu) ** 2).mean(-1)
  assert abs(se.mean() - denoising.bayes_mse(3, 1.5)) < 4 * se.std() / math.sqrt(se.size)


def test_denoising_training_reduces_loss():
  cfg = theory_denoising.get_config('small')
  cfg.unlock()
  cfg.update(dict(num_tokens=8, dim=2, num_signal_min=1, num_signal_max=4, batch_size=64,
                  sigma_signal=1.0, sigma_noise=2.0, num_steps=300, log_points=6, eval_per_k=64))
  data = denoising.test_set(cfg)
  p0 = denoising.init_params(cfg, 0)
  x = np.concatenate([v[0] for v in data.values()])
  mu = np.concatenate([v[1] for v in data.values()])
  before = denoising.mse(denoising.predict(p0, jnp.asarray(x), 'vanilla'), mu)
  params, curve = denoising.train(cfg, p0, 0, 'vanilla')
  after = denoising.mse(denoising.predict(params, jnp.asarray(x), 'vanilla'), mu)
  assert after < 0.5 * before and after < 0.6, (before, after)  # Bayes: 0.32
  assert curve[-1] < curve[0]
  np.testing.assert_allclose(denoising.predict(p0, jnp.asarray(x), 'value_selective'),
                             denoising.predict(p0, jnp.asarray(x), 'vanilla'), atol=1e-6)


def test_denoising_input_scaling_is_fixed_and_unsaturates_the_softmax():
  import jax  # pylint: disable=g-import-not-at-top
  cfg = theory_denoising.get_config('small')
  cfg.unlock()
  cfg.update(dict(num_steps=20, warmup_steps=5, log_points=2))
  p0 = denoising.init_params(cfg, 0)
  # the z channels have RMS ~ 7 (sigma_noise = 8), the flag channel ~ 0.5
  assert 5 < float(p0['x_scale'][0]) < 9 and 0.3 < float(p0['x_scale'][-1]) < 0.7
  x, _ = denoising.sample_batch(jax.random.PRNGKey(1), cfg, 256)
  logits = lambda p: (denoising._scaled(p, x) @ p['wk'] + p['bk']) @ p['q'] / math.sqrt(cfg.key_dim)
  raw = dict(p0, x_scale=jnp.ones_like(p0['x_scale']))
  assert float(logits(p0).std()) < 2 < float(logits(raw).std())  # raw inputs saturate the softmax
  for m in denoising.MODELS:
    params, _ = denoising.train(cfg, p0, 0, m)
    np.testing.assert_array_equal(params['x_scale'], p0['x_scale'])
  cfg.input_norm = False
  np.testing.assert_array_equal(denoising.init_params(cfg, 0)['x_scale'], np.ones(cfg.dim + 1))


def test_bad_size_and_fields_raise():
  for mod in (theory_graph, theory_denoising):
    with pytest.raises(ValueError, match='unknown size'):
      mod.get_config('huge')
  with pytest.raises(ValueError, match='tau_forms'):
    graph_toy.model_names(_graph_cfg(tau_forms=('cubic',)))
  cfg = theory_denoising.get_config('small')
  cfg.unlock()
  cfg.num_signal_max = 99
  with pytest.raises(ValueError, match='num_signal_max'):
    denoising.ks(cfg)
