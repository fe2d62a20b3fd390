"""The strategy registry (ssa/strategies.py): one entry is all a new strategy needs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ssa import config_lib, optim, strategies
from ssa.convert import ConversionError
from ssa.convert.export import export
from ssa.model import Transformer, init_params, is_temperature_path
from tests import ssa_testlib as tl


def _log_temperature(mdl, spec, feat_BTFD, n_BT, table_BT):
  """The README's worked example: tau_q = 1 + c log n, c learned per head (init 0)."""
  del feat_BTFD, table_BT
  c_H = strategies._per_head(mdl, 'c', nn.initializers.zeros, spec.ssa.granularity)  # pylint: disable=protected-access
  return 1.0 + c_H * jnp.log(n_BT.astype(jnp.float32))[..., None]


@pytest.fixture
def log_n():
  entry = strategies.register(strategies.Strategy(
      'log_n', 'tau_q = 1 + c log n, c learned (init 0)',
      specs=lambda s: {'q': strategies.TemperatureSpec('log_n', 'pos', s)},
      temperature=_log_temperature))
  yield entry
  strategies._REGISTRY.pop('log_n')  # pylint: disable=protected-access


def test_every_strategy_has_a_test_variant():
  covered = {tl.VARIANTS[v].get('strategy', 'ssa') for v in tl.VARIANTS}
  assert covered == set(strategies.names())


def test_unknown_strategy_names_the_field_and_the_registered_names():
  with pytest.raises(config_lib.ConfigError, match=r"ssa.strategy='softmax1'.*'vanilla', 'ssa'"):
    strategies.get('softmax1')


def test_registering_a_name_twice_is_refused():
  with pytest.raises(ValueError, match='registered twice'):
    strategies.register(strategies.Strategy('ssa', 'again', specs=lambda s: {}))


def test_a_registered_entry_works_through_config_model_optimizer_and_export(log_n, tmp_path):
  del log_n
  mcfg, scfg = tl.configs(strategy='log_n')
  model = Transformer(mcfg, scfg)
  variables = init_params(model, jax.random.PRNGKey(0), 1, 8)
  c = variables['params']['layer_0']['attn']['tau_q']['c']
  assert c.shape == (mcfg.n_heads,) and float(jnp.abs(c).max()) == 0.0
  toks = tl.tokens(1, 8)
  # c = 0.5: the logits change, and exactly as scaling the query by 1 + 0.5 log n does.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.full_like(x, 0.5) if is_temperature_path(p) else x, variables['params'])
  out = model.apply({'params': params}, toks)
  assert tl.rel_err(out, model.apply({'params': variables['params']}, toks)) > 1e-4
  want = tl.apply_with(True, model.apply, {'params': params}, toks)
  assert tl.rel_err(out, want) < 1e-5
  # The optimizer's temperature group finds its parameter by the module prefix.
  labels = optim.param_labels(params, ml_collections.ConfigDict(
      {'mode': 'full', 'temperature_group': True}))
  assert jax.tree.leaves(labels['layer_0']['attn']['tau_q']) == ['tau']

  class _Loaded:
    def __init__(self):
      self.model, self.variables = model, {'params': params}
  with pytest.raises(ConversionError, match="cannot represent ssa.strategy='log_n'"):
    export(_Loaded(), str(tmp_path / 'hf'), 'hf')


def test_token_table_hook_is_what_training_fills():
  _, scfg = tl.configs(strategy='frequency')
  table = strategies.token_table(scfg)(np.array([3, 0, 1]), 4)
  np.testing.assert_allclose(table, strategies.log_frequency_table([3, 0, 1], 4))
  _, ssa = tl.configs()
  assert strategies.token_table(ssa) is None


@pytest.mark.parametrize('B,T,H,G,D', [(1, 64, 3, 1, 8), (3, 5, 2, 2, 4)])
def test_token_term_equals_its_formula_in_float64(B, T, H, G, D):
  """tanh(sum over a head's G feature heads of u_f . gelu(x_f)), with u's gradient, against
  numpy in float64 (B=1 included: the term is computed on [B*T, F, D] rows)."""
  from scipy.special import erf

  class Term(nn.Module):
    n_heads: int = H
    head_dim: int = D

    @nn.compact
    def __call__(self, feat):
      return strategies.token_term(self, feat, phi='gelu', granularity='head')

  rng = np.random.default_rng(1)
  x = rng.standard_normal((B, T, H * G, D)).astype(np.float32)
  mod = Term()
  p = nn.meta.unbox(mod.init(jax.random.PRNGKey(0), jnp.asarray(x)))
  u = rng.standard_normal(p['params']['u'].shape).astype(np.float32)
  p = {'params': {'u': jnp.asarray(u)}}
  g = rng.standard_normal((B, T, H))
  got, grad = jax.value_and_grad(lambda p: jnp.vdot(mod.apply(p, jnp.asarray(x)), g))(p)
  x64 = x.astype(np.float64)
  h = 0.5 * x64 * (1 + erf(x64 / np.sqrt(2)))
  u64 = np.broadcast_to(u.astype(np.float64), (H * G, D))
  s = np.einsum('btfd,fd->btf', h, u64).reshape(B, T, H, G).sum(-1)
  want = np.tanh(s)
  np.testing.assert_allclose(float(got), float(np.vdot(want, g)), rtol=1e-5)
  dz = (g * (1 - want ** 2))[..., None].repeat(G, -1).reshape(B, T, H * G)  # d/d f per feature head
  du = np.einsum('btf,btfd->fd', dz, h)  # granularity 'head': one u row per feature head
  assert u.shape == (H * G, D)
  np.testing.assert_allclose(np.asarray(grad['params']['u']), du, rtol=1e-4, atol=1e-5)
