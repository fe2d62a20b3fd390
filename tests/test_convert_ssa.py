"""The SSA checkpoint format (ssa/convert/ssa_format.py), its export CLI and model.init_from='ssa:'."""

import json
import os

import jax
import numpy as np
import pytest

from ssa import convert
from ssa import train_lib
from ssa.config_lib import ConfigError
from ssa.convert import ssa_format
from ssa.convert.common import flatten
from ssa.convert.export import export
from ssa.evaluation import loading
from tests import ssa_testlib as tl
from tests.test_train import _config


def _logits(model, variables, toks):
  return np.asarray(model.apply(variables, toks))


@pytest.mark.parametrize('variant', ['final', 'no_sharing', 'frequency', 'vanilla'])
def test_roundtrip_is_lossless(tmp_path, variant):
  overrides = {'final': {}, 'no_sharing': dict(weight_sharing=False),
               'frequency': dict(strategy='frequency'), 'vanilla': dict(strategy='vanilla')}
  model, variables = tl.build('llama', **overrides[variant])
  convert.save_ssa(variables, model.cfg, model.ssa, str(tmp_path), extra={'note': 'x'})
  mcfg, scfg, loaded, extra = convert.load_ssa(str(tmp_path))
  assert (mcfg, scfg, extra) == (model.cfg, model.ssa, {'note': 'x'})
  a, b = flatten(variables), flatten(loaded)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k], np.float32), b[k], err_msg=k)
  toks = tl.tokens(2, 8)
  np.testing.assert_array_equal(_logits(model, variables, toks), _logits(model, loaded, toks))


def test_format_files_are_as_documented(tmp_path):
  model, variables = tl.build('gpt2')
  convert.save_ssa(variables['params'], model.cfg, model.ssa, str(tmp_path))
  meta = json.loads((tmp_path / 'ssa_config.json').read_text())
  assert meta['format'] == 'ssa-checkpoint' and meta['version'] == 1
  assert meta['model']['d_model'] == model.cfg.d_model and meta['ssa']['q'] == model.ssa.q
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(str(tmp_path / 'model.safetensors'))
  assert 'layer_0/attn/tau_q/theta' in tensors
  assert all(v.dtype == np.float32 for v in tensors.values())


def test_bad_checkpoints_raise_naming_the_problem(tmp_path):
  model, variables = tl.build('gpt2')
  d = str(tmp_path / 'ok')
  convert.save_ssa(variables, model.cfg, model.ssa, d)
  with pytest.raises(convert.ConversionError, match='no ssa_config.json'):
    convert.load_ssa(str(tmp_path / 'absent'))
  # truncated weights
  w = os.path.join(d, 'model.safetensors')
  data = open(w, 'rb').read()
  with open(w, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(convert.ConversionError, match='not a readable safetensors'):
    convert.load_ssa(d)
  # a missing tensor: config says SSA, weights are vanilla
  vmodel, vvars = tl.build('gpt2', strategy='vanilla')
  d2 = str(tmp_path / 'mismatch')
  convert.save_ssa(vvars, vmodel.cfg, vmodel.ssa, d2)
  meta = json.loads(open(os.path.join(d2, 'ssa_config.json')).read())
  meta['ssa'] = json.loads(open(os.path.join(d, 'ssa_config.json')).read())['ssa']
  with open(os.path.join(d2, 'ssa_config.json'), 'w') as f:
    json.dump(meta, f)
  with pytest.raises(convert.ConversionError, match=r'Missing: \[.*tau_q'):
    convert.load_ssa(d2)
  meta['version'] = 99
  with open(os.path.join(d2, 'ssa_config.json'), 'w') as f:
    json.dump(meta, f)
  with pytest.raises(convert.ConversionError, match='version=99'):
    convert.load_ssa(d2)
  with pytest.raises(convert.ConversionError, match='Wrong shape'):  # saving checks too
    bad = jax.tree.map(lambda x: x, variables['params'])
    bad['layer_0']['attn']['tau_q']['theta'] = np.zeros((7,), np.float32)
    convert.save_ssa(bad, model.cfg, model.ssa, str(tmp_path / 'bad'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny SSA run (temperatures moved away from init) and its SSA-format export."""
  wd = str(tmp_path_factory.mktemp('run'))
  cfg = _config(**{'train.num_steps': 6, 'checkpoint.every': 0, 'optim.temperature_group': True,
                   'optim.tau_lr': 5e-2})
  train_lib.train_and_evaluate(cfg, wd)
  loaded = loading.load(workdir=wd)
  out = str(tmp_path_factory.mktemp('export'))
  assert export(loaded, out) == 'ssa'
  return cfg, loaded, out


def test_export_then_init_from_ssa_restores_trained_temperatures(trained):
  cfg, loaded, out = trained
  _, _, variables, extra = convert.load_ssa(out)
  assert extra['step'] == 6 and extra['tokenizer'] == 'byte'
  cfg2 = _config(**{'model.init_from': f'ssa:{out}'})
  s = train_lib.setup(cfg2)
  state, msg = train_lib.fresh_state(s)
  assert 'temperature loaded too' in msg
  got, want = flatten(jax.device_get(state.params)), flatten(jax.device_get(
      loaded.variables['params']))
  theta = [k for k in want if k.endswith('tau_q/theta')][0]
  init = flatten(jax.device_get(s.init_fn(jax.random.PRNGKey(0)).params))
  assert not np.allclose(want[theta], init[theta])  # training moved it: the check can fail
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_init_from_ssa_with_another_ssa_config_is_refused(trained):
  _, _, out = trained
  cfg = _config(**{'model.init_from': f'ssa:{out}', 'ssa.strategy': 'vanilla'})
  with pytest.raises(ConfigError, match="ssa.strategy: config 'vanilla', checkpoint 'ssa'"):
    train_lib.fresh_state(train_lib.setup(cfg))


def test_export_auto_picks_hf_for_vanilla(tmp_path):
  wd = str(tmp_path / 'run')
  cfg = _config(**{'train.num_steps': 2, 'checkpoint.every': 0, 'ssa.strategy': 'vanilla'})
  train_lib.train_and_evaluate(cfg, wd)
  loaded = loading.load(workdir=wd)
  assert export(loaded, str(tmp_path / 'hf')) == 'hf'
  mcfg, params = convert.load_hf(str(tmp_path / 'hf'))
  want = flatten(jax.device_get(loaded.variables['params']))
  V = mcfg.vocab_size  # HF stores only the real vocabulary rows; padding rows come back as 0
  for k, v in flatten(params).items():
    a, b = np.asarray(v), np.asarray(want[k])
    if k == 'embed/embedding':
      a, b = a[:V], b[:V]
    np.testing.assert_array_equal(a, b, err_msg=k)
  with pytest.raises(convert.ConversionError, match='no ssa_config.json'):
    ssa_format.read_ssa_config(str(tmp_path / 'hf'))


def test_init_from_ssa_with_same_tree_other_meaning_is_refused(trained):
  _, _, out = trained  # slope=sigmoid stores the same theta leaves as exp_exp
  cfg = _config(**{'model.init_from': f'ssa:{out}', 'ssa.slope': 'sigmoid'})
  with pytest.raises(ConfigError, match=r"ssa.slope: config 'sigmoid', checkpoint 'exp_exp'"):
    train_lib.fresh_state(train_lib.setup(cfg))


def test_constants_are_checked_too(tmp_path):
  model, variables = tl.build('gpt2', strategy='frequency')
  with pytest.raises(convert.ConversionError, match=r'Missing: \[.constants/token_log_freq'):
    convert.save_ssa(variables['params'], model.cfg, model.ssa, str(tmp_path))


def test_hf_export_refuses_a_non_vanilla_strategy_without_parameters(tmp_path):
  class _Loaded:  # what export() reads of ssa.evaluation.loading.Loaded
    def __init__(self, model, variables):
      self.model, self.variables = model, variables
  model, variables = tl.build('gpt2', strategy='yarn', yarn_train_len=16, yarn_context_len=64)
  with pytest.raises(convert.ConversionError, match="cannot represent ssa.strategy='yarn'"):
    export(_Loaded(model, variables), str(tmp_path), 'hf')
