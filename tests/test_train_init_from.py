"""Training from imported pretrained weights (config.model.init_from).

A tiny GPT-2 Hugging Face checkpoint (transformers, random weights) that has the shapes of
configs/tiny.py (gpt2-tiny, byte vocabulary 258, max_len 32). Skipped when torch / transformers
are not installed (requirements-dev.txt).
"""

import logging

import jax
import numpy as np
import pytest

from ssa import convert
from ssa import sharding as shard_lib
from ssa import train_lib
from ssa.config_lib import ConfigError
from tests.test_train import _config, _flat

# SSA on at (numerically) identity init: slope exp(-exp(4.5)) ~ 1e-39, token terms u = 0.
_SSA = {'ssa.strategy': 'ssa', 'ssa.q': 'pos+tok', 'ssa.v': 'tok', 'ssa.theta_init': 4.5}


@pytest.fixture(scope='module')
def hf_gpt2(tmp_path_factory):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  c = transformers.GPT2Config(vocab_size=258, n_positions=32, n_embd=64, n_layer=2, n_head=4)
  model = transformers.GPT2LMHeadModel(c)
  with torch.no_grad():  # far from init, so that a layout slip shows in the loss
    for name, p in model.named_parameters():
      if '.ln_' in name or name.startswith('transformer.ln_f'):
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith('weight') else
                0.1 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  model.config._attn_implementation = 'eager'  # pylint: disable=protected-access
  model.eval()
  d = tmp_path_factory.mktemp('hf_gpt2')
  model.save_pretrained(str(d))
  return str(d), model


def _batch(config, seed=0):
  B, T = config.data.batch_size, config.data.seq_len
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 258, size=(B, T + 1)).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'weights': np.ones((B, T), np.float32),
          'positions': np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy(),
          'segment_ids': np.ones((B, T), np.int32)}


def _hf_loss(model, batch):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    logits = model(torch.as_tensor(batch['inputs'], dtype=torch.long)).logits.double().numpy()
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return float(-np.take_along_axis(logp, batch['targets'][..., None], -1).mean())


@pytest.mark.parametrize('mode', ['full', 'temperature_only'])
def test_fresh_run_starts_from_imported_weights(hf_gpt2, mode):
  path, model = hf_gpt2
  c = _config(**_SSA, **{'model.init_from': f'hf:{path}', 'optim.mode': mode})
  s = train_lib.setup(c)
  state, msg = train_lib.fresh_state(s)
  assert path in msg and f'{s.param_count["total"]:,}' in msg
  _, ref = convert.load_hf(path, c.ssa, rng=jax.random.split(jax.random.PRNGKey(c.seed))[0])
  got, want = _flat(state.params), _flat(ref)
  assert sorted(got) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  # Placed on the training shardings, optimizer state built for them (frozen: no state).
  for leaf, sh in zip(jax.tree.leaves(state.params), jax.tree.leaves(s.state_shardings.params)):
    assert leaf.sharding == sh
  n_opt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.opt_state))
  if mode == 'temperature_only':
    assert n_opt < 3 * s.param_count['temperature'] + 100
  else:
    assert n_opt >= 2 * s.param_count['total']
  batch = _batch(c)
  ref_loss = _hf_loss(model, batch)
  state, m = s.step_fn(state, shard_lib.global_batch(batch, s.batch_sharding,
                                                    c.data.batch_size))
  loss = float(m['loss'])
  assert abs(loss - ref_loss) / ref_loss < 1e-4, (loss, ref_loss)
  assert s.step_fn._cache_size() == 1  # jitted once  pylint: disable=protected-access


def test_mismatched_model_config_names_the_field(hf_gpt2):
  path, _ = hf_gpt2
  c = _config(**{'model.init_from': f'hf:{path}', 'model.d_ff': 128})
  s = train_lib.setup(c)
  with pytest.raises(ConfigError, match=r'model\.d_ff: config 128, checkpoint 256') as e:
    train_lib.fresh_state(s)
  assert '--config.model.d_ff=256' in str(e.value)


def test_bad_init_from_value_raises():
  with pytest.raises(ConfigError, match='model.init_from'):
    train_lib.setup(_config(**{'model.init_from': 'safetensors:/x'}))


def test_checkpoint_wins_over_init_from(hf_gpt2, tmp_path, caplog):
  path, _ = hf_gpt2
  over = {**_SSA, 'checkpoint.every': 0, 'train.num_steps': 1}
  first = train_lib.train_and_evaluate(_config(**over), str(tmp_path))  # random init, 1 step
  saved = _flat(first['state'].params)
  with caplog.at_level(logging.INFO):
    second = train_lib.train_and_evaluate(_config(**over, **{'model.init_from': f'hf:{path}'}),
                                          str(tmp_path))
  assert second['step'] == 1 and not second['history']
  got = _flat(second['state'].params)
  for k in saved:
    np.testing.assert_array_equal(got[k], saved[k], err_msg=k)
  _, imported = convert.load_hf(path, _config(**over).ssa)
  imported = _flat(imported)
  assert not np.array_equal(got["['embed']['embedding']"], imported["['embed']['embedding']"])
  assert 'is ignored' in caplog.text
