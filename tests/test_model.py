"""Model families with SSA: identity at init, causality, kv-cache decoding, parameter counts,
gradients to every temperature parameter, float32 temperatures, logical axes."""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssa import attention, model as model_lib
from tests import ssa_testlib as tl

FAMILIES = ['gpt2', 'neox', 'llama']


def _drop_temperatures(params):
  """The params tree without the temperature entries (what a vanilla model holds)."""
  if isinstance(params, dict):
    return {k: _drop_temperatures(v) for k, v in params.items()
            if not k.startswith(attention.TEMPERATURE_PREFIX)}
  return params


def _vanilla_logits(family, params, toks, **kw):
  mcfg, scfg = tl.configs(family, strategy='vanilla')
  return jax.jit(model_lib.Transformer(mcfg, scfg).apply)(
      {'params': _drop_temperatures(params)}, toks, **kw)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('variant', [
    dict(theta_init=4.5),                                  # default SSA, slope ~ 1e-40
    dict(q='tok', k='tok', v='tok'),                       # position terms off
    dict(q='pos+tok', k='pos+tok', v='pos+tok', theta_init=4.5, weight_sharing=False),
    dict(combine='mul', theta_init=4.5, granularity='layer'),
])
def test_identity_at_init_equals_vanilla(family, variant):
  model, variables = tl.build(family, randomize_temperatures=False, **variant)
  toks = tl.tokens(2, 16)
  got = jax.jit(model.apply)(variables, toks)
  want = _vanilla_logits(family, variables['params'], toks)
  assert float(jnp.abs(got - want).max()) < 1e-6


def test_pts_theta2_at_2048_differs_from_vanilla_as_formula_predicts():
  """tau = 1 + exp(-exp(2)) log n: exactly 1 at n=1 (first position identical to vanilla), a
  tiny change elsewhere that grows with n (max tau at T=2048 is 1.0047)."""
  Tq = 2048
  mcfg, scfg = tl.configs('llama', strategy='pts', theta_init=2.0)
  model = model_lib.Transformer(mcfg, scfg)
  variables = model_lib.init_params(model, jax.random.PRNGKey(0), 1, Tq)
  toks = tl.tokens(1, Tq)
  got = model.apply(variables, toks)
  want = _vanilla_logits('llama', variables['params'], toks)
  diff_T = np.asarray(jnp.abs(got - want).max(-1))[0]
  scale = float(jnp.abs(want).max())
  # Position 1: float32 rounding only (0 with XLA's default LLVM level, one ulp at the tests' level
  # 0); tau(2) - 1 = 4e-4 already moves the logits by ~1e-4 of their scale.
  assert diff_T[0] <= 1e-6 * scale
  assert 1e-6 * scale < diff_T.max() < 1e-2 * scale
  assert diff_T[-256:].mean() > diff_T[1:257].mean()
  s = math.exp(-math.exp(2.0))
  assert 1 + s * math.log(Tq) == pytest.approx(1.0047, abs=1e-4)


def _closed_form_added(mcfg, shared: bool):
  """Added parameters of the default SSA (q: pos+tok, v: tok, per head) in closed form."""
  H, K, D, d = mcfg.n_heads, mcfg.n_kv_heads, mcfg.head_dim, mcfg.d_model
  theta_q, u_q = H, H * D
  u_v = K * D if shared else H * D      # without sharing, v reads the layer's new H-head matrix
  w = 0 if shared else d * H * D        # one new d x (H*D) (= d x d) matrix per layer
  return mcfg.n_layers * (theta_q + u_q + u_v + w)


@pytest.mark.parametrize('preset', ['gpt2-124m', 'pythia-160m', 'smollm2-135m'])
def test_added_parameters_below_half_percent_with_sharing(preset):
  from configs import base
  from ssa import config_lib
  c = base.get_config(preset)
  mcfg = config_lib.model_config(c.model)
  for shared in (True, False):
    c.ssa.weight_sharing = shared
    counts = model_lib.abstract_param_counts(
        model_lib.Transformer(mcfg, config_lib.ssa_config(c.ssa)))
    assert counts['temperature'] == _closed_form_added(mcfg, shared)
    print(f'{preset} weight_sharing={shared}: base {counts["base"]:,} added '
          f'{counts["temperature"]:,} ({100 * counts["added_ratio"]:.4f}%)')
    if shared:
      assert counts['added_ratio'] < 0.005
  vanilla = model_lib.abstract_param_counts(model_lib.Transformer(
      mcfg, config_lib.ssa_config({**c.ssa.to_dict(), 'strategy': 'vanilla'})))
  assert vanilla['temperature'] == 0 and vanilla['total'] == counts['base']


def test_gpt2_124m_base_count_matches_the_published_model():
  from configs import base
  from ssa import config_lib
  mcfg = config_lib.model_config(base.get_config('gpt2-124m').model)
  counts = model_lib.abstract_param_counts(model_lib.Transformer(
      mcfg, config_lib.ssa_config({'strategy': 'vanilla'})))
  # HF GPT-2 small: 124,439,808 parameters; our table has 47 padding rows (50257 -> 50304).
  assert counts['total'] == 124_439_808 + 47 * 768


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('variant', sorted(tl.VARIANTS))
def test_causality(family, variant):
  model, variables = tl.build(family, **tl.VARIANTS[variant])
  T, t = 10, 4
  toks = tl.tokens(1, T, seed=1)
  other = toks.at[:, t + 1:].set((toks[:, t + 1:] + 13) % tl.VOCAB)
  segs = jnp.array([[1, 1, 1, 2, 2, 2, 2, 3, 3, 3]]) if 'reset' in variant else None
  apply = jax.jit(model.apply)  # one compile for both calls (eager is several times slower)
  a = apply(variables, toks, segment_ids=segs)
  b = apply(variables, other, segment_ids=segs)
  assert float(jnp.abs(a[:, :t + 1] - b[:, :t + 1]).max()) < 1e-6
  assert float(jnp.abs(a[:, t + 1:] - b[:, t + 1:]).max()) > 1e-4  # the perturbation is seen


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('variant', ['ssa', 'qkv', 'pts', 'no_sharing', 'yarn', 'vanilla'])
def test_kv_cache_decoding_equals_full_forward(family, variant):
  """Prefill 5 tokens, then decode one at a time: n stays the absolute position."""
  model, variables = tl.build(family, **tl.VARIANTS[variant])
  T = 12
  toks = tl.tokens(2, T, seed=2)
  full = jax.jit(model.apply)(variables, toks)
  cache = model_lib.init_cache(model, variables, batch_size=2, max_len=16)
  step = jax.jit(lambda c, x: model.apply({**variables, 'cache': c}, x, decode=True,
                                         mutable=['cache']))
  out, mut = step(cache, toks[:, :5])
  pieces = [out]
  cache = mut['cache']
  for i in range(5, T):
    out, mut = step(cache, toks[:, i:i + 1])
    pieces.append(out)
    cache = mut['cache']
  assert int(cache['index']) == T
  assert tl.rel_err(jnp.concatenate(pieces, 1), full) < 1e-5


@pytest.mark.parametrize('variant', sorted(v for v in tl.VARIANTS if v not in ('vanilla', 'yarn')))
def test_gradients_reach_every_temperature_parameter(variant):
  def temp_grads(variables, model):
    toks = tl.tokens(2, 8)
    segs = jnp.array([[1] * 4 + [2] * 4] * 2)

    def loss(p):
      return jnp.sum(model.apply({**variables, 'params': p}, toks, segment_ids=segs) ** 2)
    g = jax.jit(jax.grad(loss))(variables['params'])
    return [(jax.tree_util.keystr(p), float(jnp.abs(x).max()))
            for p, x in jax.tree_util.tree_flatten_with_path(g)[0]
            if model_lib.is_temperature_path(p)]

  model, variables = tl.build('llama', **tl.VARIANTS[variant])
  grads = temp_grads(variables, model)
  assert grads, 'variant has no temperature parameters'
  assert all(m > 0 for _, m in grads), grads
  # At the true init (u = 0) every parameter but the unshared matrix W already gets a gradient
  # (W's gradient is proportional to u, so it starts moving after the first step).
  model, variables = tl.build('llama', randomize_temperatures=False, **tl.VARIANTS[variant])
  zero = [p for p, m in temp_grads(variables, model) if m == 0]
  assert all(p.endswith("['tau_w']") for p in zero), zero


@pytest.mark.parametrize('variant', sorted(tl.VARIANTS))
def test_nothing_but_temperatures_changes_shape(variant):
  _, variables = tl.build('llama', **tl.VARIANTS[variant])
  _, vanilla = tl.build('llama', strategy='vanilla')
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)  # noqa: E731
  assert shapes(_drop_temperatures(variables['params'])) == shapes(vanilla['params'])


def test_temperatures_are_float32_under_bfloat16_compute():
  model, variables = tl.build('llama', model_overrides=dict(dtype='bfloat16'), k='pos+tok')
  logits, inter = model.apply(variables, tl.tokens(2, 8), mutable=['intermediates'])
  taus = inter['intermediates']['layer_0']['attn']
  assert logits.dtype == jnp.float32
  for e in ('q', 'k', 'v'):
    assert taus[f'temperature_{e}'][0].dtype == jnp.float32


def test_position_term_restarts_at_document_boundary():
  model, variables = tl.build('gpt2', q='pos', v='none', position_reset_at_eos=True)
  segs = jnp.array([[1, 1, 1, 2, 2, 2, 2, 3]])
  _, inter = model.apply(variables, tl.tokens(1, 8), segment_ids=segs, mutable=['intermediates'])
  tau = np.asarray(inter['intermediates']['layer_0']['attn']['temperature_q'][0])[0, :, 0]
  theta = float(variables['params']['layer_0']['attn']['tau_q']['theta'][0])
  n = np.array([1, 2, 3, 1, 2, 3, 4, 1])
  np.testing.assert_allclose(tau, 1 + math.exp(-math.exp(theta)) * np.log(n), rtol=1e-6)
  # Without the option, n is the absolute position.
  model, variables = tl.build('gpt2', q='pos', v='none')
  _, inter = model.apply(variables, tl.tokens(1, 8), segment_ids=segs, mutable=['intermediates'])
  tau = np.asarray(inter['intermediates']['layer_0']['attn']['temperature_q'][0])[0, :, 0]
  theta = float(variables['params']['layer_0']['attn']['tau_q']['theta'][0])
  np.testing.assert_allclose(tau, 1 + math.exp(-math.exp(theta)) * np.log(np.arange(1, 9)),
                             rtol=1e-6)


def test_document_positions():
  segs = jnp.array([[1, 1, 2, 2, 2, 3, 0, 0], [5, 5, 5, 5, 5, 5, 5, 5]])
  np.testing.assert_array_equal(model_lib.document_positions(segs),
                                [[0, 1, 0, 1, 2, 0, 0, 1], list(range(8))])


def test_segment_ids_block_attention_across_documents():
  model, variables = tl.build('llama')
  toks = tl.tokens(1, 8)
  segs = jnp.array([[1, 1, 1, 2, 2, 2, 2, 2]])
  a = model.apply(variables, toks, segment_ids=segs)
  b = model.apply(variables, toks.at[:, :3].set(5), segment_ids=segs)
  assert float(jnp.abs(a[:, 3:] - b[:, 3:]).max()) == 0.0


@pytest.mark.parametrize('family', FAMILIES)
def test_remat_changes_nothing(family):
  model, variables = tl.build(family)
  remat = model_lib.Transformer(dataclasses.replace(model.cfg, remat=True), model.ssa)
  toks = tl.tokens(2, 8)
  loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply({'params': p}, toks) ** 2)))(  # noqa
      variables['params'])
  ga, gb = loss(model), loss(remat)
  # Relative to the largest gradient: some leaves' true gradient is 0 (a key bias shifts every
  # logit of a row equally), so their values are rounding noise that two programs differ in.
  scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(ga))
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    assert float(jnp.abs(a - b).max()) < 1e-5 * scale


@pytest.mark.parametrize('family', FAMILIES)
def test_every_parameter_carries_logical_axes(family):
  model, _ = tl.build(family, randomize_temperatures=False, weight_sharing=False)
  boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))['params']
  specs = nn.get_partition_spec(boxed)
  leaves = jax.tree_util.tree_flatten_with_path(nn.unbox(boxed))[0]
  spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(leaves) == len(spec_leaves)
  for (path, leaf), spec in zip(leaves, spec_leaves):
    assert len(spec) == leaf.ndim, jax.tree_util.keystr(path)
  names = {n for s in spec_leaves for n in s}
  assert {'vocab', 'embed', 'heads', 'head_dim', 'mlp'} <= names


def test_vocab_padding_is_inside_the_model():
  model, variables = tl.build('gpt2')
  assert variables['params']['embed']['embedding'].shape[0] == 128  # 97 padded to 128
  assert model.apply(variables, tl.tokens(1, 4)).shape == (1, 4, tl.VOCAB)


def test_sequence_longer_than_learned_table_raises():
  model, variables = tl.build('gpt2')
  with pytest.raises(ValueError, match='model.max_len'):
    model.apply(variables, tl.tokens(1, 65))
