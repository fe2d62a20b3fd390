"""ssa.convert.hf: parity with Hugging Face transformers (GPT-2, GPT-NeoX, Llama), SSA identity at
import, lossless round-trip, and the errors of bad checkpoints.

The parity tests build small random checkpoints with transformers itself (no download) and skip
cleanly when torch / transformers are not importable (requirements-dev.txt).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ssa import convert
from ssa.config_lib import ModelConfig, SSAConfig
from ssa.convert import ConversionError
from ssa.model import Transformer, init_params

VANILLA = SSAConfig(strategy='vanilla')
# SSA switched on at identity: exp(-exp(4.5)) ~ 1e-39 slope, token terms u = 0.
SSA_ON = SSAConfig(strategy='ssa', q='pos+tok', k='pos', v='pos+tok', theta_init=4.5)
TOKENS = np.array([[5, 17, 299, 3, 42, 42, 7, 100, 250, 1, 0, 64],
                   [11, 2, 9, 280, 33, 71, 8, 8, 150, 4, 299, 6]], np.int32)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _ours(cfg, params, ssa=VANILLA, tokens=TOKENS):
  return np.asarray(Transformer(cfg, ssa).apply({'params': params}, jnp.asarray(tokens)))


# ----------------------------------------------------------------------------- reference models


def _hf_model(family, **kw):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  if family == 'gpt2':
    c = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                **kw)
    model = transformers.GPT2LMHeadModel(c)
  elif family == 'neox':
    c = transformers.GPTNeoXConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=128,
                                   max_position_embeddings=64, **kw)
    model = transformers.GPTNeoXForCausalLM(c)
  else:
    c = transformers.LlamaConfig(vocab_size=300, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                 intermediate_size=96, max_position_embeddings=64,
                                 rms_norm_eps=1e-5, **kw)
    model = transformers.LlamaForCausalLM(c)
  # Weights far from init (norm scales != 1, biases != 0) so that a layout slip shows.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name or '.ln_' in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith('weight') else
                0.1 * torch.randn_like(p))
      else:
        p.copy_(0.15 * torch.randn_like(p))
  model.config._attn_implementation = 'eager'  # pylint: disable=protected-access
  return model.eval()


def _hf_logits(model, tokens=TOKENS):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


FAMILIES = [
    ('gpt2', {}),
    ('gpt2', dict(activation_function='gelu', tie_word_embeddings=False, n_inner=96)),
    ('neox', dict(rotary_pct=0.25, use_parallel_residual=True)),
    ('neox', dict(rotary_pct=1.0, use_parallel_residual=False, tie_word_embeddings=True,
                  rope_theta=500.0)),
    ('llama', dict(tie_word_embeddings=False)),
    ('llama', dict(tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                   rope_theta=100000.0)),
]


@pytest.mark.parametrize('family,kw', FAMILIES, ids=[f'{f}-{i}' for i, (f, _) in
                                                      enumerate(FAMILIES)])
def test_parity_with_transformers(family, kw, tmp_path):
  model = _hf_model(family, **kw)
  model.save_pretrained(tmp_path)
  cfg, params = convert.load_hf(str(tmp_path))
  assert cfg.family == family and cfg.vocab_size == 300
  ref = _hf_logits(model)
  ours = _ours(cfg, params)
  assert ours.shape == ref.shape
  assert _rel(ours, ref) < 1e-4, _rel(ours, ref)
  # SSA switched on at its identity init gives the same logits as the vanilla import.
  cfg2, params_ssa = convert.load_hf(str(tmp_path), SSA_ON)
  assert _rel(_ours(cfg2, params_ssa, SSA_ON), ours) < 1e-6


def test_import_is_the_init_tree_with_temperatures_at_init(tmp_path):
  convert.save_hf(_random_params(ROUND_TRIP[2]), ROUND_TRIP[2], str(tmp_path))  # no torch needed
  ssa = SSAConfig(strategy='ssa', weight_sharing=False, theta_init=4.5)
  cfg, params = convert.load_hf(str(tmp_path), ssa, rng=jax.random.PRNGKey(3))
  init = init_params(Transformer(cfg, ssa), jax.random.PRNGKey(3))['params']
  assert jax.tree.structure(params) == jax.tree.structure(init)
  flat_p, flat_i = convert.common.flatten(params), convert.common.flatten(init)
  for k, v in flat_i.items():
    assert flat_p[k].shape == v.shape and flat_p[k].dtype == v.dtype, k
    if k.split('/')[-1] == 'tau_w':  # random new matrix: same key; jit may differ by an ulp
      np.testing.assert_allclose(flat_p[k], v, rtol=1e-6, atol=1e-8)
    elif '/tau_' in '/' + k:
      np.testing.assert_array_equal(flat_p[k], v)  # theta, u: exactly their init
  vanilla_cfg, vanilla = convert.load_hf(str(tmp_path))
  assert _rel(_ours(cfg, params, ssa), _ours(vanilla_cfg, vanilla)) < 1e-6


# ----------------------------------------------------------------------------- round trip


def _random_params(cfg, seed=0):
  params = init_params(Transformer(cfg, VANILLA), jax.random.PRNGKey(seed))['params']
  # Padded vocabulary rows are not part of the HF checkpoint: they come back as zeros.
  def zero_pad(path, x):
    names = [str(getattr(k, 'key', k)) for k in path]
    if names[-1] == 'embedding':
      return x.at[cfg.vocab_size:].set(0)
    if names[0] == 'lm_head':
      return x.at[:, cfg.vocab_size:].set(0)
    return x
  return jax.tree_util.tree_map_with_path(zero_pad, params)


ROUND_TRIP = [
    ModelConfig(vocab_size=300, max_len=32),
    ModelConfig(family='neox', vocab_size=300, pos_emb='rope', rotary_pct=0.25,
                gelu_approximate=False, parallel_residual=True, tie_embeddings=False),
    ModelConfig(family='llama', vocab_size=300, d_model=48, n_heads=4, n_kv_heads=2,
                head_dim=16, d_ff=96, norm='rmsnorm', pos_emb='rope', mlp='swiglu',
                use_bias=False, tie_embeddings=False, rope_theta=100000.0),
]


@pytest.mark.parametrize('cfg', ROUND_TRIP, ids=['gpt2', 'neox', 'llama'])
def test_round_trip_is_lossless(cfg, tmp_path):
  params = _random_params(cfg)
  convert.save_hf(params, cfg, str(tmp_path))
  cfg2, params2 = convert.load_hf(str(tmp_path))
  assert cfg2 == cfg
  flat, flat2 = convert.common.flatten(params), convert.common.flatten(params2)
  assert flat.keys() == flat2.keys()
  for k in flat:
    np.testing.assert_array_equal(np.asarray(flat[k]), np.asarray(flat2[k]), err_msg=k)
  # ...and the exported files load in transformers to the same logits.
  if cfg.family != 'gpt2':
    return
  transformers = pytest.importorskip('transformers')
  pytest.importorskip('torch')
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation='eager')
  assert _rel(_ours(cfg, params), _hf_logits(hf.eval())) < 1e-4


def test_export_refuses_temperature_params(tmp_path):
  cfg = ROUND_TRIP[0]
  params = init_params(Transformer(cfg, SSA_ON), jax.random.PRNGKey(0))['params']
  with pytest.raises(ConversionError, match='tau_'):
    convert.save_hf(params, cfg, str(tmp_path))


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def gpt2_dir(tmp_path):
  d = tmp_path / 'ckpt'
  convert.save_hf(_random_params(ROUND_TRIP[0]), ROUND_TRIP[0], str(d))
  return d


def test_truncated_file_raises(gpt2_dir):
  f = gpt2_dir / 'model.safetensors'
  data = f.read_bytes()
  f.write_bytes(data[:len(data) // 2])
  with pytest.raises(ConversionError, match='model.safetensors'):
    convert.load_hf(str(gpt2_dir))


def test_missing_unknown_and_misshaped_tensors_are_all_listed(gpt2_dir):
  f = str(gpt2_dir / 'model.safetensors')
  t = load_file(f)
  del t['transformer.h.1.mlp.c_fc.bias']
  t['transformer.h.0.attn.extra.weight'] = np.zeros(3, np.float32)
  t['transformer.h.0.ln_1.weight'] = np.zeros(65, np.float32)
  save_file(t, f)
  with pytest.raises(ConversionError) as e:
    convert.load_hf(str(gpt2_dir))
  msg = str(e.value)
  assert str(gpt2_dir) in msg
  for name in ('transformer.h.1.mlp.c_fc.bias', 'transformer.h.0.attn.extra.weight',
               'transformer.h.0.ln_1.weight: got (65,), expected (64,)'):
    assert name in msg, msg


def test_config_that_does_not_match_the_weights_raises(gpt2_dir):
  p = gpt2_dir / 'config.json'
  hf = json.loads(p.read_text())
  hf['n_layer'] = 3
  p.write_text(json.dumps(hf))
  with pytest.raises(ConversionError, match=r'missing tensors .*transformer\.h\.2\.'):
    convert.load_hf(str(gpt2_dir))
  hf.update(n_layer=2, model_type='bert')
  p.write_text(json.dumps(hf))
  with pytest.raises(ConversionError, match="model_type='bert'"):
    convert.load_hf(str(gpt2_dir))


def test_not_a_checkpoint_raises(tmp_path):
  with pytest.raises(ConversionError, match='config.json'):
    convert.load_hf(str(tmp_path))
  with pytest.raises(ConversionError, match='no such directory'):
    convert.load_hf(str(tmp_path / 'nope' / 'deeper'))


def test_library_does_not_import_torch():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, ssa.convert; '
          'print(sorted(m for m in ("torch", "transformers") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.stdout.strip() == '[]'
