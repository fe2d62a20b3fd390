"""Training: sharding equivalence, accumulation, parameter groups, golden values, NaN guard, errors.

8 simulated CPU devices (tests/conftest.py); tiny config (configs/tiny.py): gpt2-tiny, byte
tokenizer, T=32, batch 8.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import base
from configs import tiny
from ssa import checkpoint as ckpt_lib
from ssa import config_lib
from ssa import metrics
from ssa import optim
from ssa import sharding as shard_lib
from ssa import train_lib
from ssa.config_lib import ConfigError
from ssa.model import Transformer, abstract_param_counts, is_temperature_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No persistent compilation cache: reading cached executables segfaulted jaxlib 0.10.2 in a
# serial run (CI, 2026-12-02: compilation_cache.get_executable_and_time, an eager lax.map).


def _config(**overrides):
  c = tiny.get_config()
  c.optim.decay_steps = 20        # the schedule does not depend on train.num_steps
  c.train.eval_every = -1        # never
  return config_lib.apply_overrides(c, overrides)


def _mesh(config, shape):
  cfg = config.mesh
  cfg.data, cfg.fsdp, cfg.tensor = shape
  n = int(np.prod(shape))
  return shard_lib.make_mesh(cfg, jax.devices()[:n])


def _batches(config, k):
  it, _ = train_lib.make_train_data(config)
  return [next(it) for _ in range(k)]


def _run(config, mesh, batches, state=None):
  s = train_lib.setup(config, mesh)
  if state is None:
    state = s.init_fn(jax.random.PRNGKey(config.seed))
  else:  # same initial values, resharded onto this mesh
    state = jax.device_put(jax.device_get(state), s.state_shardings)
  losses = []
  for b in batches:
    state, m = s.step_fn(state, shard_lib.global_batch(b, s.batch_sharding,
                                                        config.data.batch_size))
    losses.append(float(m['loss']))
  return s, state, np.array(losses)


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]}


def test_loss_on_meshes_equals_single_device():
  config = _config()
  batches = _batches(config, 3)
  s1 = train_lib.setup(config, _mesh(config, (1, 1, 1)))
  init = jax.device_get(s1.init_fn(jax.random.PRNGKey(config.seed)))
  _, _, ref = _run(config, _mesh(config, (1, 1, 1)), batches, init)
  assert ref[-1] < ref[0]
  for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
    s, state, losses = _run(config, _mesh(config, shape), batches, init)
    np.testing.assert_allclose(losses, ref, rtol=1e-5, err_msg=str(shape))
    assert s.step_fn._cache_size() == 1  # jitted once
  # Parameters really are sharded over fsdp / tensor on the last mesh.
  emb = state.params['embed']['embedding']
  assert emb.sharding.spec == jax.sharding.PartitionSpec('tensor', 'fsdp')
  assert len({sh.data.shape for sh in emb.addressable_shards}) == 1
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)


def test_golden_losses_tiny_config():
  """Loss of configs/tiny.py (seed 0) after 1 and 5 steps; update only on purpose."""
  config = _config()
  _, _, losses = _run(config, None, _batches(config, 5))
  np.testing.assert_allclose([losses[0], losses[4]], GOLDEN, rtol=2e-5)


GOLDEN = [5.531056, 5.358936]


def test_accumulation_equals_large_batch():
  base = dict(**{'data.batch_size': 8, 'optim.warmup_steps': 0, 'optim.schedule': 'constant',
                 'optim.clip_norm': 0.0})
  batches = _batches(_config(**base), 1)
  mesh_shape = (2, 1, 1)  # 4 rows per device = 4 micro-batches of 1 row
  for opt in ('sgd',):
    params = {}
    for m in (1, 4):
      c = _config(**base, **{'train.micro_batches': m, 'optim.optimizer': opt})
      s, state, losses = _run(c, _mesh(c, mesh_shape), batches)
      params[m] = _flat(state.params)
      if m == 1:
        init = _flat(s.init_fn(jax.random.PRNGKey(0)).params)
        loss1 = losses
      else:
        np.testing.assert_allclose(losses, loss1, rtol=1e-6)
    # Whole parameter vector: rel < 1e-5; each tensor: rel < 1e-5 of its norm, with a tiny floor
    # for tensors whose gradient is ~0 (e.g. key biases, which softmax ignores).
    vec = lambda d: np.concatenate([np.ravel(d[k]) for k in sorted(d)])  # noqa: E731
    if opt == 'sgd':  # the update itself is -lr * gradient: compare updates, not only params
      d1 = {k: params[1][k] - init[k] for k in init}
      d4 = {k: params[4][k] - init[k] for k in init}
      assert np.linalg.norm(vec(d4) - vec(d1)) < 1e-5 * np.linalg.norm(vec(d1))
      for k in init:
        assert np.linalg.norm(d4[k] - d1[k]) <= 1e-5 * np.linalg.norm(d1[k]) + 1e-9, k
    assert np.linalg.norm(vec(params[4]) - vec(params[1])) < 1e-5 * np.linalg.norm(vec(params[1]))
    # (Not per tensor for AdamW: g / (sqrt(v) + eps) maps the float noise of a ~0 gradient, e.g.
    # of the key biases that softmax ignores, to updates of size ~lr in either direction.)


def test_micro_batches_must_divide_per_device_batch():
  c = _config(**{'train.micro_batches': 4})  # 8 rows on 8 devices: 1 row each, not 4
  with pytest.raises(ConfigError, match=r'data.batch_size=8 .*micro_batches=4'):
    train_lib.setup(c, _mesh(c, (8, 1, 1)))


def test_batch_not_divisible_by_data_axes():
  c = _config(**{'data.batch_size': 12})
  with pytest.raises(ConfigError, match=r'data.batch_size=12 is not divisible'):
    train_lib.setup(c, _mesh(c, (8, 1, 1)))


def test_temperature_only_mode_trains_only_temperatures():
  c = _config(**{'optim.mode': 'temperature_only', 'optim.tau_lr': 1e-2,
                 'optim.tau_optimizer': 'adam'})
  s, state, _ = _run(c, None, _batches(c, 2))
  init = _flat(s.init_fn(jax.random.PRNGKey(0)).params)
  after = _flat(state.params)
  n_tau = 0
  for k, v in init.items():
    if 'tau_' in k:
      n_tau += v.size
      assert not np.array_equal(after[k], v), f'{k} did not train'
    else:
      np.testing.assert_array_equal(after[k], v, err_msg=f'{k} is frozen but changed')
  # No optimizer state for frozen weights: Adam keeps mu and nu for the temperatures only.
  opt_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
  assert n_tau > 0 and 2 * n_tau <= opt_size <= 2 * n_tau + 8


def test_temperature_group_has_its_own_learning_rate():
  """Base group AdamW lr 1e-3 (first step moves each weight by ~lr); tau group SGD lr 0.5."""
  c = _config(**{'optim.temperature_group': True, 'optim.tau_optimizer': 'sgd',
                 'optim.tau_lr': 0.5, 'optim.tau_schedule': 'constant',
                 'optim.schedule': 'constant', 'optim.warmup_steps': 0,
                 'optim.weight_decay': 0.0, 'optim.clip_norm': 0.0})
  batches = _batches(c, 1)
  s, state, _ = _run(c, None, batches)
  init_state = s.init_fn(jax.random.PRNGKey(0))
  init = _flat(init_state.params)
  b = shard_lib.global_batch(batches[0], s.batch_sharding, 8)

  def loss(p):
    l, (w, _) = train_lib.loss_terms(p, init_state.constants, b, model=s.model)
    return l / w
  grads = _flat(jax.jit(jax.grad(loss))(init_state.params))
  after = _flat(state.params)
  base_max = 0.0
  for k in init:
    delta = after[k] - init[k]
    if 'tau_' in k:
      ulp = np.spacing(np.abs(init[k]).astype(np.float32)).max()  # delta is rounded to ulps
      np.testing.assert_allclose(delta, -0.5 * grads[k], rtol=1e-4, atol=2 * ulp + 1e-9,
                                 err_msg=k)
    else:
      base_max = max(base_max, np.abs(delta).max())
  assert 0.9e-3 < base_max <= 1.0001e-3


def test_weight_decay_mask():
  c = _config()
  s = train_lib.setup(c, _mesh(c, (1, 1, 1)))
  mask = optim.decay_mask(s.abstract_state.params)
  for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
    name = jax.tree_util.keystr(path)
    if is_temperature_path(path) or 'bias' in name or 'ln' in name:
      assert not m, name
    if name.endswith("['kernel']") and not is_temperature_path(path):
      assert m, name


def test_nan_stops_with_error_and_keeps_last_good_checkpoint(tmp_path):
  c = _config(**{'train.inject_nan_at_step': 8, 'checkpoint.every': 3, 'train.log_every': 5})
  with pytest.raises(train_lib.NonFiniteError, match=r'step 8\b.*last good state \(step 7\)'):
    train_lib.train_and_evaluate(c, str(tmp_path))
  ck = ckpt_lib.Checkpointer(os.path.join(tmp_path, 'checkpoints'), c.checkpoint)
  assert ck.steps() == [3, 6, 7]
  s = train_lib.setup(c)
  for step in (6, 7):
    state, _, _ = ck.restore_step(step, s.abstract_state, c)
    assert int(state.step) == step and bool(state.finite)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))
  ck.close()
  # Step 7 is the true state after 7 good steps: a clean 7-step run gives the same parameters.
  clean = train_lib.train_and_evaluate(_config(**{'train.num_steps': 7}), str(tmp_path / 'clean'))
  a, b = _flat(state.params), _flat(clean['state'].params)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_config_typo_fails_at_start_naming_field(tmp_path):
  r = subprocess.run([sys.executable, 'train.py', '--config=configs/tiny.py',
                      f'--workdir={tmp_path}', '--config.train.num_stepz=3'],
                     cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert 'num_stepz' in r.stderr
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def test_bad_field_values_name_the_field():
  with pytest.raises(ConfigError, match='optim.schedule'):
    train_lib.setup(_config(**{'optim.schedule': 'linear'}))
  with pytest.raises(ConfigError, match='train.data_split'):
    train_lib.setup(_config(**{'train.data_split': 'host'}))
  with pytest.raises(ConfigError, match='mesh.rules.embed'):
    train_lib.setup(_config(**{'mesh.rules.embed': 'fdsp'}))
  with pytest.raises(ConfigError, match=r"Parameter .*kv_heads|kv_proj|k_proj"):
    c = _config(**{'model.n_kv_heads': 2})
    c.mesh.data, c.mesh.tensor = 2, 4
    train_lib.setup(c)


def test_flops_per_token_counts_attention():
  c = base.get_config('gpt2-124m')
  c.ssa.strategy = 'vanilla'
  m = config_lib.model_config(c.model)
  total = abstract_param_counts(Transformer(m, config_lib.ssa_config(c.ssa)))['total']
  assert total == 124_475_904  # nanoGPT's GPT-2 124M with the vocabulary padded to 50304
  # matmul weights: all but the position table; the tied embedding counts once, as the head.
  n = total - 1024 * 768
  f = metrics.flops_per_token(m, total, 1024)
  assert f == 6 * n + 12 * 12 * 12 * 64 * 1024
  # frozen weights (temperature-only training): no weight gradients, 4N
  assert metrics.flops_per_token(m, total, 1024, weight_grads=False) == (
      4 * n + 12 * 12 * 12 * 64 * 1024)


def _tb_events(directory):
  """{tag: (plugin, step, value)} of the TensorBoard event files directly in `directory`
  (TFRecord framing: length u64, crc, payload, crc)."""
  import glob  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  tags = {}
  for path in sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*'))):
    data, i = open(path, 'rb').read(), 0
    while i < len(data):
      (n,) = struct.unpack('<Q', data[i:i + 8])
      e = event_pb2.Event()
      e.ParseFromString(data[i + 12:i + 12 + n])
      i += n + 16
      for v in e.summary.value:
        tags[v.tag] = (v.metadata.plugin_data.plugin_name, e.step, v.simple_value,
                       v.tensor.string_val[0].decode() if v.tensor.string_val else None)
  return tags


def test_cli_run_ends_with_summary_and_tensorboard_gets_config_hparams_tokens(tmp_path):
  wd = tmp_path / 'w'
  r = subprocess.run([sys.executable, 'train.py', '--config=configs/tiny.py', f'--workdir={wd}',
                      '--config.train.num_steps=4', '--config.train.log_every=2',
                      '--config.train.tensorboard=True', '--config.train.summary_sample_tokens=12',
                      '--config.optim.decay_steps=20'],
                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  c = tiny.get_config()
  B, T = c.data.batch_size, c.data.seq_len
  recs = metrics.read_metrics(str(wd))
  train = [x for x in recs if x['kind'] == 'train']
  ev = [x for x in recs if x['kind'] == 'eval'][-1]
  assert [x['tokens_seen'] for x in train] == [x['step'] * B * T for x in train]
  tail = r.stderr[r.stderr.index('=== Training done'):].splitlines()
  assert tail[0].startswith(f'=== Training done: step 4/4, ')
  assert f'{4 * B * T:,} tokens (4 steps x {B} x {T})' in tail[0]
  assert f'train loss {train[-1]["loss"]:.4f} (step 4)' in tail[1]
  assert f'validation loss {ev["loss"]:.4f}' in tail[1]
  assert tail[2].strip() == f'checkpoint: {wd}/checkpoints/4' and (wd / 'checkpoints' / '4').is_dir()
  assert tail[3].strip() == f'evaluate:   python eval.py --workdir={wd}'
  assert tail[5].startswith('  sample (12 tokens from a document start, temperature 0.8): ')
  tb = _tb_events(wd / 'tb')
  assert tb['config/text_summary'][0] == 'text' and '"num_steps": 4' in tb['config/text_summary'][3]
  assert tb['train/tokens_seen'][1:3] == (4, 4 * B * T)
  hp = _tb_events(wd / 'tb' / 'hparams')
  assert hp['_hparams_/experiment'][0] == 'hparams'
  assert hp['hparam/train_loss'][2] == pytest.approx(train[-1]['loss'], rel=1e-6)
  assert hp['hparam/eval_loss'][2] == pytest.approx(ev['loss'], rel=1e-6)
