"""GGUF files (llama.cpp) of the Llama family -> this project's parameters, dequantised to float32.

    model_cfg, params, tokenizer = load_gguf('SmolLM2-135M-Instruct.Q4_1.gguf', ssa_config=None)

Every tensor is dequantised with the gguf package (any ggml type it knows: F32, F16, Q8_0, Q4_1,
...). llama.cpp's converter permutes the rows of attn_q / attn_k so that rotary pairs are
interleaved (x0, x1), (x2, x3), ...; within each head it maps row (half * Dh/2 + i) of the HF
rotate_half layout to row (2 i + half). `unpermute_qk` undoes it, after which the tensors follow
the HF Llama layout and go through the same checked map as ssa/convert/hf.py. The tokenizer is
read from the same file (ssa.data.tokenizers.gguf_tokenizer).
"""

from __future__ import annotations

import os
import re

import numpy as np

from ssa.config_lib import ModelConfig
from ssa.convert import hf as hf_lib
from ssa.convert.common import ConversionError, assemble, resolve_ssa_config
from ssa.data.tokenizers import gguf_tokenizer

_LAYER_NAMES = {
    'attn_norm.weight': 'input_layernorm.weight',
    'ffn_norm.weight': 'post_attention_layernorm.weight',
    'attn_q.weight': 'self_attn.q_proj.weight', 'attn_k.weight': 'self_attn.k_proj.weight',
    'attn_v.weight': 'self_attn.v_proj.weight', 'attn_output.weight': 'self_attn.o_proj.weight',
    'attn_q.bias': 'self_attn.q_proj.bias', 'attn_k.bias': 'self_attn.k_proj.bias',
    'attn_v.bias': 'self_attn.v_proj.bias', 'attn_output.bias': 'self_attn.o_proj.bias',
    'ffn_gate.weight': 'mlp.gate_proj.weight', 'ffn_up.weight': 'mlp.up_proj.weight',
    'ffn_down.weight': 'mlp.down_proj.weight', 'ffn_gate.bias': 'mlp.gate_proj.bias',
    'ffn_up.bias': 'mlp.up_proj.bias', 'ffn_down.bias': 'mlp.down_proj.bias',
}
_GLOBAL_NAMES = {'token_embd.weight': 'model.embed_tokens.weight',
                 'output_norm.weight': 'model.norm.weight', 'output.weight': 'lm_head.weight'}


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's permutation (convert_hf_to_gguf.py LlamaModel.permute): HF rows -> GGUF rows."""
  return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of permute_qk: GGUF rows -> HF rotate_half rows ([H * Dh, ...] or [H * Dh])."""
  return (w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def read_gguf(path: str) -> tuple[dict, dict]:
  """({metadata key: value}, {tensor name: float32 array in numpy (row-major [out, in]) order})."""
  # optional dependency: only reading GGUF files needs the gguf package
  import gguf  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ConversionError(f'GGUF file {path!r} does not exist.')
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # truncated / not GGUF
    raise ConversionError(f'{path}: not a readable GGUF file ({type(e).__name__}: {e}).') from e
  meta = {k: f.contents() for k, f in reader.fields.items()
          if not k.startswith('tokenizer.ggml.')}
  tensors = {}
  for t in reader.tensors:
    try:
      arr = gguf.quants.dequantize(t.data, t.tensor_type)
    except Exception as e:
      raise ConversionError(f'{path}: cannot dequantise tensor {t.name!r} of type '
                            f'{t.tensor_type.name} ({e}).') from e
    shape = tuple(int(s) for s in reversed(t.shape))  # ggml ne is fastest-first
    if arr.size != int(np.prod(shape)):
      raise ConversionError(f'{path}: tensor {t.name!r} holds {arr.size} values, its shape '
                            f'{shape} needs {int(np.prod(shape))} (truncated file?).')
    tensors[t.name] = np.asarray(arr, np.float32).reshape(shape)
  return meta, tensors


def _f32(x) -> float:
  """GGUF stores floats as float32: 9.99999975e-06 -> 1e-05 (the shortest decimal of it)."""
  return float(str(np.float32(x)))


def hf_config_from_gguf(meta: dict, tensors: dict, path: str) -> dict:
  """HF LlamaConfig-style dict from llama.* metadata."""
  arch = meta.get('general.architecture')
  if arch != 'llama':
    raise ConversionError(f"{path}: general.architecture={arch!r}; only 'llama' GGUF files are "
                          'supported.')

  def need(key):
    if f'llama.{key}' not in meta:
      raise ConversionError(f'{path}: missing metadata llama.{key}.')
    return meta[f'llama.{key}']

  if meta.get('llama.rope.scaling.type', 'none') not in ('none', None):
    raise ConversionError(f"{path}: rope scaling {meta['llama.rope.scaling.type']!r} is not "
                          'supported.')
  d, h = int(need('embedding_length')), int(need('attention.head_count'))
  head_dim = int(meta.get('llama.attention.key_length', d // h))
  rot = int(meta.get('llama.rope.dimension_count', head_dim))
  if rot != head_dim:
    raise ConversionError(f'{path}: llama.rope.dimension_count={rot} != head_dim={head_dim} '
                          '(partial rotary Llama is not supported).')
  emb = tensors.get('token_embd.weight')
  vocab = int(meta.get('llama.vocab_size', emb.shape[0] if emb is not None else 0))
  bias = 'blk.0.attn_q.bias' in tensors
  return dict(model_type='llama', vocab_size=vocab, hidden_size=d,
              num_hidden_layers=int(need('block_count')), num_attention_heads=h,
              num_key_value_heads=int(meta.get('llama.attention.head_count_kv', h)),
              head_dim=head_dim, intermediate_size=int(need('feed_forward_length')),
              max_position_embeddings=int(need('context_length')),
              rms_norm_eps=_f32(need('attention.layer_norm_rms_epsilon')),
              rope_theta=_f32(meta.get('llama.rope.freq_base', 10000.0)),
              attention_bias=bias, mlp_bias='blk.0.ffn_up.bias' in tensors,
              tie_word_embeddings='output.weight' not in tensors)


def gguf_to_hf_tensors(tensors: dict, hf: dict, path: str) -> dict:
  """GGUF names -> HF Llama names, q/k rows un-permuted. Unknown names raise ConversionError."""
  out, unknown = {}, []
  for name, arr in tensors.items():
    m = re.fullmatch(r'blk\.(\d+)\.(.+)', name)
    if m and m.group(2) in _LAYER_NAMES:
      hf_name = f'model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}'
      if m.group(2).startswith('attn_q.'):
        arr = unpermute_qk(arr, hf['num_attention_heads'])
      elif m.group(2).startswith('attn_k.'):
        arr = unpermute_qk(arr, hf['num_key_value_heads'])
      out[hf_name] = arr
    elif name in _GLOBAL_NAMES:
      out[_GLOBAL_NAMES[name]] = arr
    else:
      unknown.append(name)
  if unknown:
    raise ConversionError(f'{path}: unknown tensors {sorted(unknown)} (e.g. rope_freqs of rope '
                          'scaling, which is not supported).')
  return out


def load_gguf(path: str, ssa_config=None, *, tokenizer: bool = True, rng=None,
              **model_overrides) -> tuple[ModelConfig, dict, object]:
  """(ModelConfig, params, tokenizer or None) from a Llama-family GGUF file (see module doc).

  params are exactly Transformer(model_cfg, ssa_cfg).init's tree (temperatures at init)."""
  path = os.path.expanduser(path)
  meta, tensors = read_gguf(path)
  hf = hf_config_from_gguf(meta, tensors, path)
  cfg = hf_lib.model_config_from_hf(hf, path, **model_overrides)
  base = hf_lib.convert_tensors(gguf_to_hf_tensors(tensors, hf, path), cfg, path)
  params = assemble(base, cfg, resolve_ssa_config(ssa_config), path, rng)
  tok = None
  if tokenizer:
    tok = gguf_tokenizer(path)
  return cfg, params, tok


def gguf_hf_config(path: str) -> dict:
  """The HF config.json dict equivalent to a GGUF file's metadata (for export / references)."""
  meta, tensors = read_gguf(path)
  return hf_config_from_gguf(meta, tensors, path)
