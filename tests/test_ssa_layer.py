"""SSA layer: pre-scaling q, k, v through every backend equals scaling the logits matrix; the
temperature formulas; the public release's PTS formula; config errors name the field."""

import math

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from configs import base
from ssa import attention, config_lib, kernels, strategies
from ssa import model as model_lib
from tests import ssa_testlib as tl

B, T = 2, 12
SEGMENTS = jnp.array([[1] * 5 + [2] * 7, [1] * 12], jnp.int32)


def _grad_errors(got_g, want_g):
  """(global rel. error, worst per-leaf rel. error of temperature params) of two grad trees."""
  flat_got = jax.tree_util.tree_flatten_with_path(got_g)[0]
  flat_want = jax.tree.leaves(want_g)
  scale = max(float(jnp.abs(w).max()) for w in flat_want)
  glob = max(float(jnp.abs(g - w).max()) for (_, g), w in zip(flat_got, flat_want)) / scale
  temp = max([tl.rel_err(g, w) for (path, g), w in zip(flat_got, flat_want)
              if model_lib.is_temperature_path(path)] or [0.0])
  return glob, temp


def _check_paths_agree(apply_fn, params):
  """apply_fn(params, logit_scaling) -> output; compare outputs and gradients of both paths."""

  def loss(p, ls):
    out = apply_fn(p, ls)
    return jnp.sum(out * jax.random.normal(jax.random.PRNGKey(7), out.shape)), out

  (_, got), got_g = jax.value_and_grad(loss, has_aux=True)(params, False)
  (_, want), want_g = jax.value_and_grad(loss, has_aux=True)(params, True)
  assert tl.rel_err(got, want) < 1e-5
  glob, temp = _grad_errors(got_g, want_g)
  assert glob < 1e-5, glob       # all gradients, relative to their largest entry
  assert temp < 1e-4, temp       # every temperature parameter, leaf by leaf


@pytest.fixture
def small_flash_blocks(monkeypatch):
  """flash blocks of 5 rows, so T=12 spans 3 blocks (the last one partial)."""
  from ssa import flash  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(flash, 'DEFAULT_BLOCK_Q', 5)
  monkeypatch.setattr(flash, 'DEFAULT_BLOCK_K', 5)


@pytest.mark.parametrize('family', ['gpt2', 'neox', 'llama'])
@pytest.mark.parametrize('variant', sorted(tl.VARIANTS))
@pytest.mark.parametrize('backend', ['reference', 'xla', 'flash'])
def test_layer_prescaled_equals_logit_scaling(family, variant, backend, small_flash_blocks):
  """Every variant x backend x attention layout (GPT-2 bias, NeoX partial rotary, Llama GQA);
  flash with blocks smaller than T (packed segments cross block boundaries)."""
  mcfg, scfg = tl.configs(family, **tl.VARIANTS[variant], backend=backend)
  layer = attention.Attention(mcfg, scfg)
  x = jax.random.normal(jax.random.PRNGKey(3), (B, T, mcfg.d_model))
  index = jnp.broadcast_to(jnp.arange(T), (B, T))
  n = model_lib.document_positions(SEGMENTS) + 1 if scfg.position_reset_at_eos else index + 1
  log_freq = jax.random.normal(jax.random.PRNGKey(4), (B, T))
  args = (x, index, n, index, SEGMENTS, log_freq)
  params = tl.randomize_temperature_params(nn.unbox(layer.init(jax.random.PRNGKey(0), *args))[
      'params'], 1)
  _check_paths_agree(lambda p, ls: tl.apply_with(ls, layer.apply, {'params': p}, *args), params)


@pytest.mark.parametrize('family', ['gpt2', 'neox', 'llama'])
@pytest.mark.parametrize('variant', ['ssa', 'qkv', 'no_sharing', 'reset_at_eos', 'frequency'])
@pytest.mark.parametrize('backend', ['xla', 'flash'])
def test_model_prescaled_equals_logit_scaling(family, variant, backend, small_flash_blocks):
  model, variables = tl.build(family, **tl.VARIANTS[variant], backend=backend)
  toks = tl.tokens(B, T)
  _check_paths_agree(
      lambda p, ls: tl.apply_with(ls, model.apply, {**variables, 'params': p}, toks,
                                  segment_ids=SEGMENTS), variables['params'])


@pytest.mark.parametrize('segments', [False, True])
def test_splash_kernel_interpret_mode_equals_logit_scaling(segments):
  """The TPU splash path (Pallas interpret mode on CPU) on pre-scaled q, k, v with GQA."""
  Bs, Ts, H, K, D = 1, 256, 2, 1, 128
  ks = jax.random.split(jax.random.PRNGKey(0), 6)
  q, k, v = (jax.random.normal(ks[0], (Bs, Ts, H, D)), jax.random.normal(ks[1], (Bs, Ts, K, D)),
             jax.random.normal(ks[2], (Bs, Ts, K, D)))
  taus = {'q': 1 + 0.2 * jax.random.uniform(ks[3], (Bs, Ts, H)),
          'k': 1 + 0.2 * jax.random.uniform(ks[4], (Bs, Ts, K)),
          'v': 1 + 0.2 * jax.random.uniform(ks[5], (Bs, Ts, K))}
  seg = jnp.array([[1] * 100 + [2] * 156]) if segments else None
  scaled = [attention._scale(t, taus[e]) for e, t in (('q', q), ('k', k), ('v', v))]
  got = kernels._splash(*scaled, seg, D ** -0.5, interpret=True)
  want = attention.logit_scaled_attention(q, k, v, taus, seg)
  assert tl.rel_err(got, want) < 1e-5


def test_reference_backend_returns_row_stochastic_causal_probs():
  q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (1, 6, 4, 8)) for i in range(3))
  out, probs = kernels.attention(q, k[:, :, :2], v[:, :, :2], backend='reference',
                                 return_probs=True)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  assert float(jnp.abs(jnp.triu(probs, 1)).max()) == 0.0
  assert out.shape == (1, 6, 4, 8)


def test_pts_reproduces_public_release_formula_exactly():
  """strategy='pts', theta=2.0, T=2048: logits * (1 + exp(-exp(theta)) * log(n)) (n 1-based)."""
  Tq, theta = 2048, 2.0
  mcfg, scfg = tl.configs('llama', strategy='pts', theta_init=theta, backend='reference')
  model = model_lib.Transformer(mcfg, scfg)
  variables = model_lib.init_params(model, jax.random.PRNGKey(0), 1, Tq)
  toks = tl.tokens(1, Tq)
  _, inter = model.apply(variables, toks, capture=True, mutable=['intermediates'])
  layer = inter['intermediates']['layer_0']['attn']
  tau_q = np.asarray(layer['temperature_q'][0])[0, :, 0]  # [T]; same for every head (per-layer theta)
  s = math.exp(-math.exp(theta))
  want = 1.0 + s * np.log(np.arange(1, Tq + 1, dtype=np.float64))
  np.testing.assert_allclose(tau_q, want, rtol=1e-6)
  # The probabilities are softmax of the release's scaled logits, computed here from q and k.
  cap = {}

  def grab_qk(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name in ('q_proj', 'k_proj') and 'layer_0' in context.module.path:
      cap[context.module.name] = out
    return out

  with nn.intercept_methods(grab_qk):
    _, inter = model.apply(variables, toks, capture=True, mutable=['intermediates'])
  probs = np.asarray(inter['intermediates']['layer_0']['attn']['attention_probs'][0][0],
                     np.float64)
  pos = jnp.arange(Tq)[None]
  q = np.asarray(attention.apply_rope(cap['q_proj'], pos, mcfg.rotary_dim, mcfg.rope_theta))
  k = np.asarray(attention.apply_rope(cap['k_proj'], pos, mcfg.rotary_dim, mcfg.rope_theta))
  k = np.repeat(k, mcfg.n_heads // mcfg.n_kv_heads, axis=2)
  for h in (0, 3):
    logit = q[0, :, h] @ k[0, :, h].T / math.sqrt(mcfg.head_dim)
    logit = logit * (1 + s * np.log(np.arange(1, Tq + 1)))[:, None]  # the release's line
    logit = np.where(np.tril(np.ones((Tq, Tq), bool)), logit, -np.inf)
    p = np.exp(logit - logit.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[h], p, atol=1e-6)


def test_temperature_formulas_per_term_and_combine():
  n = jnp.arange(1, 9, dtype=jnp.float32)[None]
  feat = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 2, 4))
  u = jnp.array([[0.5, -0.2, 0.1, 0.3], [0.0, 0.4, -0.6, 0.2]])
  theta = jnp.array([0.3, -0.1])
  tok = np.tanh(np.einsum('btfd,fd->btf', np.asarray(jax.nn.gelu(feat, approximate=False)), u))
  for slope, s in (('exp_exp', np.exp(-np.exp(theta))), ('sigmoid', 1 / (1 + np.exp(-theta))),
                   ('linear', np.asarray(theta))):
    pos = 1 + np.log(np.arange(1, 9))[None, :, None] * s
    for combine, want in (('add', pos + tok), ('mul', pos * (1 + tok))):
      spec = strategies.TemperatureSpec('ssa', 'pos+tok', config_lib.SSAConfig(
          slope=slope, combine=combine, linear_min_tau=0.05 if slope == 'linear' else None))
      mod = attention.Temperature(spec, 2, 4)
      tau = mod.apply({'params': {'theta': theta, 'u': u}}, feat, n)
      np.testing.assert_allclose(tau, np.maximum(want, 0.05) if slope == 'linear' else want,
                                 rtol=1e-5)


def test_linear_slope_is_clamped_at_min_tau():
  spec = strategies.TemperatureSpec('ssa', 'pos', config_lib.SSAConfig(slope='linear',
                                                                      linear_min_tau=0.05))
  n = jnp.array([[1.0, 10.0, 1000.0]])
  tau = attention.Temperature(spec, 1, 4).apply({'params': {'theta': jnp.array([-0.5])}}, None, n)
  np.testing.assert_allclose(tau[0, :, 0], [1.0, 0.05, 0.05], rtol=1e-6)


def test_yarn_factor_and_constant_init():
  _, scfg = tl.configs(strategy='yarn', yarn_train_len=1024, yarn_context_len=4096)
  assert strategies.yarn_factor(strategies.temperature_specs(scfg)['q'].ssa) == pytest.approx(
      0.1 * math.log(4.0) + 1)
  _, scfg = tl.configs(strategy='vanilla')
  assert strategies.temperature_specs(scfg) == {}


def test_default_theta_gives_same_initial_slope_for_every_parametrisation():
  s0 = math.exp(-math.exp(1.5))
  for slope in config_lib.SLOPES:
    _, scfg = tl.configs(slope=slope, linear_min_tau=0.05)
    theta = scfg.resolved_theta_init()
    assert float(strategies.slope(jnp.float32(theta), slope)) == pytest.approx(s0, rel=1e-5)


def test_log_frequency_table_is_standardised():
  z = strategies.log_frequency_table([10, 1, 0, 100], 6)
  assert z.shape == (6,) and abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-4
  assert z[3] > z[0] > z[1] > z[2] == z[4] == z[5]


@pytest.mark.parametrize('field,value,match', [
    ('strategy', 'softmax1', 'ssa.strategy'),
    ('q', 'position', 'ssa.q'),
    ('combine', 'max', 'ssa.combine'),
    ('slope', 'exp', 'ssa.slope'),
    ('granularity', 'token', 'ssa.granularity'),
    ('phi', 'relu', 'ssa.phi'),
    ('backend', 'flash2', 'ssa.backend'),
    ('theta_init', 6.0, 'ssa.theta_init'),
    ('linear_min_tau', -1.0, 'ssa.linear_min_tau'),
])
def test_invalid_ssa_field_raises_naming_it(field, value, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    tl.configs(**{field: value})


def test_linear_slope_without_clamp_bound_raises():
  with pytest.raises(config_lib.ConfigError, match='ssa.linear_min_tau'):
    tl.configs(slope='linear')


def test_all_none_ssa_raises():
  with pytest.raises(config_lib.ConfigError, match='vanilla'):
    tl.configs(q='none', k='none', v='none')


@pytest.mark.parametrize('backend,platform', [('splash', 'cpu'), ('cudnn', 'cpu'),
                                              ('splash', 'gpu'), ('cudnn', 'tpu')])
def test_backend_missing_on_platform_raises(backend, platform):
  with pytest.raises(kernels.BackendError, match=backend):
    kernels.resolve_backend(backend, jnp.float32, platform)


def test_model_with_splash_backend_on_cpu_raises_naming_field():
  with pytest.raises(kernels.BackendError, match="ssa.backend='splash'"):
    tl.build(backend='splash')  # fails at init, before any training


def test_auto_backend_choice_per_platform():
  assert kernels.resolve_backend('auto', jnp.float32, 'cpu') == 'flash'
  assert kernels.resolve_backend('auto', jnp.bfloat16, 'cpu') == 'flash'
  assert kernels.resolve_backend('auto', jnp.bfloat16, 'gpu') == 'cudnn'
  assert kernels.resolve_backend('auto', jnp.float32, 'gpu') == 'flash'
  assert kernels.resolve_backend('auto', jnp.bfloat16, 'tpu') == 'splash'
  assert kernels.resolve_backend('auto', jnp.bfloat16, 'tpu', decode=True) == 'flash'


def test_probs_only_from_reference_backend():
  q = jnp.ones((1, 4, 2, 8))
  with pytest.raises(kernels.BackendError, match='reference'):
    kernels.attention(q, q, q, backend='xla', return_probs=True)


def test_unknown_config_field_and_bad_model_fields_raise():
  c = base.get_config()
  with pytest.raises(AttributeError, match='strategi'):
    c.ssa.strategi = 'ssa'  # ConfigDict is locked: a typo fails at once
  with pytest.raises(config_lib.ConfigError, match='ssa.strategi'):
    config_lib.ssa_config({**c.ssa.to_dict(), 'strategi': 'x'})
  c.model.n_kv_heads = 3
  with pytest.raises(config_lib.ConfigError, match='model.n_kv_heads'):
    config_lib.model_config(c.model)
  with pytest.raises(ValueError, match='preset'):
    base.get_config('gpt5')


def test_ssa_fields_overridable_from_the_command_line():
  """Through the real CLI (ssa.summary): placeholder fields take values; a typo names the field."""
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = lambda *a: subprocess.run([sys.executable, '-m', 'ssa.summary', *a], cwd=root,  # noqa
                                  capture_output=True, text=True, timeout=120)
  ok = run('--config=configs/base.py:pythia-160m', '--config.ssa.slope=linear',
           '--config.ssa.linear_min_tau=0.05', '--config.ssa.theta_init=0.01',
           '--config.ssa.k=pos', '--config.ssa.weight_sharing=False')
  assert ok.returncode == 0, ok.stderr
  assert 'family=neox' in ok.stdout and 'k: ssa/pos' in ok.stdout
  assert 'weight_sharing=False' in ok.stdout
  bad = run('--config=configs/base.py', '--config.ssa.slop=linear')
  assert bad.returncode != 0 and 'slope' in bad.stderr
