"""The hf_remote export (ssa/convert/hf_remote_format.py): transformers loads it with
trust_remote_code=True and its PyTorch model (ssa/convert/hf_remote/modeling_ssa.py) gives the JAX
model's logits for every family and strategy, generates as greedy decoding by full recomputation
does (kv-cache and left padding included), and the tokenizer files encode as the project does."""

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers import dynamic_module_utils

from ssa import strategies
from ssa.config_lib import ModelConfig, SSAConfig
from ssa.convert import ConversionError
from ssa.convert import export as export_lib
from ssa.convert import hf_remote_format as remote
from ssa.convert.hf_remote import configuration_ssa, modeling_ssa
from ssa.evaluation import loading
from ssa.model import Transformer, is_temperature_path
from tests import ssa_testlib as tl
from tests.fixtures import make_legacy_fixture as fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT_FILES = sorted(['config.json', 'configuration_ssa.py', 'model.safetensors',
                       'modeling_ssa.py', 'special_tokens_map.json', 'tokenizer.json',
                       'tokenizer_config.json'])
# The xla kernel keeps the JAX side fast on CPU (the backend is not part of the math: the kernels
# are tested equal in tests/test_flash.py); the fixture runs below use the default backend.
XLA = dict(backend='xla')
VARIANTS = {
    'vanilla': dict(strategy='vanilla'),
    'ssa': dict(),  # q pos+tok, v tok, add, exp_exp, per head, sharing, gelu
    'qkv_tok': dict(q='pos+tok', k='tok', v='tok'),
    'no_sharing': dict(weight_sharing=False, k='tok', v='pos+tok'),
    'no_sharing_layer': dict(weight_sharing=False, granularity='layer'),
    'mul': dict(combine='mul', k='pos+tok'),
    'per_layer': dict(granularity='layer', k='pos+tok'),
    'sigmoid': dict(slope='sigmoid', v='pos+tok'),
    'linear': dict(slope='linear', linear_min_tau=0.9),  # the clamp bites (checked below)
    'identity_phi': dict(phi='identity'),
    'constant': dict(strategy='constant'),
    'yarn': dict(strategy='yarn', yarn_train_len=16, yarn_context_len=64),
    'frequency': dict(strategy='frequency'),
    'pts': dict(strategy='pts', theta_init=1.5),
}
FAMILIES = ('gpt2', 'neox', 'llama')  # llama-tiny: 4 query heads, 2 key/value heads (GQA)


@pytest.fixture(scope='module', autouse=True)
def _hf_offline():
  """No hub access. (transformers copies remote code into HF_MODULES_CACHE, which
  tests/conftest.py points to a temporary directory of this test process: one directory per
  process, because transformers puts it on sys.path only once.)"""
  assert dynamic_module_utils.HF_MODULES_CACHE == os.environ['HF_MODULES_CACHE']
  mp = pytest.MonkeyPatch()
  mp.setenv('HF_HUB_OFFLINE', '1')
  yield
  mp.undo()


def _build(family, variant, seed=0):
  """A tiny model with random temperature parameters; weights 5x the usual init scale, so that
  attention is far from uniform and every temperature moves the logits."""
  overrides = dict(XLA, **VARIANTS[variant])
  return tl.build(family, seed=seed, seq_len=8, model_overrides={'init_std': 0.1}, **overrides)


def _load(path):
  model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=True)
  assert type(model).__name__ == 'SSAForCausalLM' and not model.training
  return model


def _export(tmp_path, family, variant, seed=0):
  model, variables = _build(family, variant, seed)
  out = tmp_path / f'{family}_{variant}'
  remote.save_hf_remote(variables, model.cfg, model.ssa, str(out))
  return model, variables, _load(out)


def _torch_logits(hf, toks, **kw):
  with torch.no_grad():
    return hf(torch.tensor(np.asarray(toks), dtype=torch.long), **kw).logits.numpy()


def _base_params(params):
  """The params without the temperature parameters (the same model under ssa.strategy=vanilla)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  out: dict = {}
  for path, leaf in flat:
    if is_temperature_path(path):
      continue
    node = out
    keys = [str(getattr(k, 'key', k)) for k in path]
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = leaf
  return out


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('family', FAMILIES)
def test_logits_equal_the_jax_model(tmp_path, family, variant):
  model, variables, hf = _export(tmp_path, family, variant)
  toks = tl.tokens(2, 20, seed=1)
  want = np.asarray(model.apply(variables, toks))
  got = _torch_logits(hf, toks)
  assert got.shape == want.shape == (2, 20, tl.VOCAB)
  assert tl.rel_err(got, want) < 1e-4, (family, variant, tl.rel_err(got, want))
  if variant != 'vanilla':  # the temperatures matter: a port without them would fail
    plain = Transformer(model.cfg, SSAConfig(strategy='vanilla', backend='xla'))
    base = np.asarray(plain.apply({'params': _base_params(variables['params'])}, toks))
    assert tl.rel_err(base, want) > 1e-3, (family, variant)
  if variant == 'linear':  # some tau_q are at the clamp bound, others above it
    _, state = model.apply(variables, toks, mutable=['intermediates'])
    taus = np.concatenate([np.ravel(v) for k, v in _flat(state['intermediates']).items()
                           if 'temperature_q' in k])
    assert (taus == np.float32(0.9)).any() and (taus > 0.9).any()


def _flat(tree):
  return {'/'.join(str(getattr(k, 'key', k)) for k in p): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _jax_greedy(model, variables, prompt, n):
  """Greedy decoding by recomputing the whole sequence for every new token (on a fixed-length
  array, one compilation: the model is causal, so the slots after the last token do not matter)."""
  B, P = np.shape(prompt)
  seq = np.zeros((B, P + n), np.int32)
  seq[:, :P] = prompt
  apply = jax.jit(model.apply)
  for t in range(P, P + n):
    seq[:, t] = np.asarray(jnp.argmax(apply(variables, seq)[:, t - 1], axis=-1))
  return seq


def _generate(hf, prompt, n, **kw):
  with torch.no_grad():
    return hf.generate(torch.tensor(np.asarray(prompt), dtype=torch.long), max_new_tokens=n,
                       do_sample=False, pad_token_id=0, eos_token_id=None, **kw).numpy()


@pytest.mark.parametrize('family,variant', [('gpt2', 'ssa'), ('neox', 'frequency'),
                                            ('llama', 'no_sharing')])
def test_cached_generate_equals_greedy_recomputation(tmp_path, family, variant):
  model, variables, hf = _export(tmp_path, family, variant)
  prompt = tl.tokens(2, 5, seed=2)
  want = _jax_greedy(model, variables, prompt, 8)
  np.testing.assert_array_equal(_generate(hf, prompt, 8), want)
  np.testing.assert_array_equal(_generate(hf, prompt, 8, use_cache=False), want)
  # Token by token through the cache: the logits of a full forward pass at every position.
  full = _torch_logits(hf, want)
  with torch.no_grad():
    out = hf(torch.as_tensor(want[:, :3]), use_cache=True)
    steps = [out.logits.numpy()]
    for t in range(3, want.shape[1]):
      out = hf(torch.as_tensor(want[:, t:t + 1]), cache=out.cache, use_cache=True)
      steps.append(out.logits.numpy())
  assert out.cache.get_seq_length() == want.shape[1]
  assert tl.rel_err(np.concatenate(steps, axis=1), full) < 1e-5


def test_left_padded_batches_equal_their_rows_alone(tmp_path):
  _, _, hf = _export(tmp_path, 'llama', 'qkv_tok')
  rows = [np.asarray(tl.tokens(1, n, seed=3 + n))[0] for n in (3, 6)]
  batch = np.zeros((2, 6), np.int64)
  mask = np.zeros((2, 6), np.int64)
  for i, r in enumerate(rows):
    batch[i, 6 - len(r):], mask[i, 6 - len(r):] = r, 1
  padded = _torch_logits(hf, batch, attention_mask=torch.as_tensor(mask))
  for i, r in enumerate(rows):
    alone = _torch_logits(hf, r[None])
    assert tl.rel_err(padded[i, 6 - len(r):], alone[0]) < 1e-5
  out = _generate(hf, batch, 5, attention_mask=torch.as_tensor(mask))
  for i, r in enumerate(rows):
    np.testing.assert_array_equal(out[i, 6:], _generate(hf, r[None], 5)[0, len(r):])


def test_config_json_and_sources_are_as_documented(tmp_path):
  model, variables = _build('llama', 'frequency')
  out = tmp_path / 'x'
  remote.save_hf_remote(variables, model.cfg, model.ssa, str(out), extra={'step': 7},
                        special_tokens={'eos_token_id': 5, 'bos_token_id': None})
  assert sorted(os.listdir(out)) == sorted(['config.json', 'configuration_ssa.py',
                                            'modeling_ssa.py', 'model.safetensors'])
  cfg = json.loads((out / 'config.json').read_text())
  assert cfg['auto_map'] == {'AutoConfig': 'configuration_ssa.SSAConfig',
                             'AutoModelForCausalLM': 'modeling_ssa.SSAForCausalLM'}
  assert cfg['model_type'] == 'ssa_transformer' and cfg['architectures'] == ['SSAForCausalLM']
  assert cfg['model'] == dataclasses.asdict(model.cfg)
  assert cfg['ssa'] == dataclasses.asdict(model.ssa)
  assert cfg['ssa_export'] == {'format': 'ssa-hf-remote', 'version': 1, 'extra': {'step': 7}}
  assert cfg['eos_token_id'] == 5 and 'bos_token_id' not in cfg
  assert (cfg['num_key_value_heads'], cfg['vocab_size']) == (2, tl.VOCAB)
  for name in remote.TEMPLATE_FILES:  # copied unchanged from the package
    assert (out / name).read_bytes() == open(os.path.join(remote.TEMPLATE_DIR, name), 'rb').read()
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(str(out / 'model.safetensors'))
  assert 'layer_0.attn.tau_q.a' in tensors and 'lm_head.kernel' in tensors
  np.testing.assert_array_equal(tensors['constants.token_log_freq'],
                                np.asarray(variables['constants']['token_log_freq']))
  assert tensors['layer_1.attn.k_proj.kernel'].shape == (32, 2, 8)  # [D, K, d_h], as in Flax
  hf = _load(out)
  assert hf.config.model == cfg['model'] and hf.config.ssa == cfg['ssa']
  assert hf.config.eos_token_id == 5 and hf.config.hidden_size == 32
  assert float(hf.constants.token_log_freq.abs().sum()) > 0  # the table arrived


def test_the_remote_code_matches_the_project():
  # Every registered strategy is implemented; the config defaults are the project's.
  assert set(remote.STRATEGIES) == set(strategies.names()) == set(modeling_ssa.STRATEGIES)
  assert configuration_ssa.MODEL_DEFAULTS == dataclasses.asdict(ModelConfig())
  assert configuration_ssa.SSA_DEFAULTS == dataclasses.asdict(SSAConfig())
  # The templates import only torch, transformers, the standard library and each other.
  for name in remote.TEMPLATE_FILES:
    tree = ast.parse(open(os.path.join(remote.TEMPLATE_DIR, name)).read())
    roots = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        roots |= {a.name.split('.')[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        roots.add(node.module.split('.')[0])
    assert roots <= {'torch', 'transformers', '__future__', 'math', 'typing'}, (name, roots)


def test_an_unknown_strategy_is_refused(tmp_path, monkeypatch):
  model, variables = _build('gpt2', 'constant')
  monkeypatch.setattr(remote, 'STRATEGIES', ('vanilla', 'ssa'))
  with pytest.raises(ConversionError, match="cannot represent ssa.strategy='constant'"):
    remote.save_hf_remote(variables, model.cfg, model.ssa, str(tmp_path / 'x'))
  assert not os.path.exists(tmp_path / 'x')


def _fixture_run(tmp_path, name):
  wd = str(tmp_path / name)
  shutil.copytree(os.path.join(fixture.OUT, name), wd)
  return wd


def test_export_cli_hf_remote_loads_with_auto_classes(tmp_path):
  """A trained run (tests/fixtures: 2 steps, byte tokenizer) through export.py --format=hf_remote;
  its logits are the ones the fixture stores for the JAX model."""
  wd, out = _fixture_run(tmp_path, 'ssa'), tmp_path / 'out'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  p = subprocess.run([sys.executable, 'export.py', f'--workdir={wd}', f'--out={out}',
                      '--format=hf_remote'], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert f'to {out} (hf_remote format)' in p.stdout
  assert sorted(os.listdir(out)) == EXPORT_FILES
  # trust_remote_code only lets AutoTokenizer read config.json's class (the tokenizer is plain)
  hf, tok = _load(out), AutoTokenizer.from_pretrained(str(out), trust_remote_code=True)
  assert type(tok).__name__ in ('PreTrainedTokenizerFast', 'TokenizersBackend')
  assert tok.encode('To be, or not', add_special_tokens=False) == list(b'To be, or not')
  assert hf.config.eos_token_id == tok.eos_token_id == 256
  assert hf.config.ssa_export['extra']['step'] == 2
  toks = np.load(os.path.join(fixture.OUT, 'tokens.npy'))
  want = np.load(os.path.join(fixture.OUT, 'ssa_logits.npy'))
  assert tl.rel_err(_torch_logits(hf, toks), want) < 1e-4
  # generate() from the tokenizer's output: greedy, the JAX model recomputing every step
  enc = tok('To be', return_tensors='pt')
  with torch.no_grad():
    got = hf.generate(**enc, max_new_tokens=6, do_sample=False, eos_token_id=None).numpy()
  loaded = loading.load(workdir=wd)
  np.testing.assert_array_equal(got, _jax_greedy(loaded.model, loaded.variables,
                                                 enc['input_ids'].numpy(), 6))


def test_export_api_writes_the_frequency_table(tmp_path):
  loaded = loading.load(workdir=_fixture_run(tmp_path, 'frequency'))
  assert export_lib.export(loaded, str(tmp_path / 'out'), 'hf_remote') == 'hf_remote'
  assert sorted(os.listdir(tmp_path / 'out')) == EXPORT_FILES
  hf = _load(tmp_path / 'out')
  toks = np.load(os.path.join(fixture.OUT, 'tokens.npy'))
  want = np.load(os.path.join(fixture.OUT, 'frequency_logits.npy'))
  assert tl.rel_err(_torch_logits(hf, toks), want) < 1e-4
  assert export_lib.export(loaded, str(tmp_path / 'auto')) == 'ssa'  # auto is unchanged
