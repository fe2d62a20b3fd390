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
