"""Hugging Face checkpoints (config.json + *.safetensors) <-> this project's parameter tree.

    model_cfg, params = load_hf('path/to/dir' or 'org/repo', ssa_config=None)
    save_hf(params, model_cfg, 'out_dir')        # vanilla models only

Families (config.json `model_type`): 'gpt2' (GPT2LMHeadModel), 'gpt_neox' (GPTNeoXForCausalLM,
Pythia), 'llama' (LlamaForCausalLM: Llama, SmolLM2, TinyLlama). Layout notes:

- GPT-2 uses Conv1D, weights stored [in, out]; q, k, v are fused in c_attn as [D, 3, H, Dh].
- GPT-NeoX fuses query_key_value per head, interleaved as [H, 3, Dh] on the output axis; its
  rotary is rotate_half style on the first rotary_pct * Dh dims (same as ssa.attention.apply_rope).
- Llama q/k are already in rotate_half layout in HF checkpoints (GGUF files differ: ssa/convert/gguf.py).
- torch.nn.Linear stores [out, in]; our kernels are [in, ...out] (DenseGeneral).
Embedding / head rows are zero-padded to model.vocab_pad_multiple (logits are sliced back).

Every tensor of the checkpoint must be used and every parameter filled with its exact shape; a
missing, unknown or mis-shaped tensor raises ConversionError naming the file and the tensors
(known non-parameter buffers such as GPT-2's causal-mask `attn.bias` are skipped by name). The
library never imports torch or transformers.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Callable, Optional

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ssa.config_lib import ConfigError, ModelConfig
from ssa.convert.common import ConversionError, assemble, flatten, resolve_ssa_config

HF_MODEL_TYPES = {'gpt2': 'gpt2', 'gpt_neox': 'neox', 'llama': 'llama'}
_ARCH = {'gpt2': 'GPT2LMHeadModel', 'neox': 'GPTNeoXForCausalLM', 'llama': 'LlamaForCausalLM'}
_PREFIX = {'gpt2': 'transformer.', 'neox': 'gpt_neox.', 'llama': 'model.'}
_HEAD = {'gpt2': 'lm_head.weight', 'neox': 'embed_out.weight', 'llama': 'lm_head.weight'}
# Buffers that some checkpoints store but that are not parameters (masks, rotary tables).
_BUFFERS = {'gpt2': re.compile(r'\.attn\.(masked_)?bias$'),
            'neox': re.compile(r'\.attention\.(masked_)?bias$|rotary_emb\.inv_freq$'),
            'llama': re.compile(r'rotary_emb\.inv_freq$')}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One HF tensor <-> one or more of our parameters."""
  hf_name: str
  hf_shape: tuple
  ours: tuple                        # our flat paths
  to_ours: Callable[..., tuple]      # hf array -> tuple of our arrays (same order as `ours`)
  to_hf: Callable[..., np.ndarray]   # our arrays -> hf array


def _one(hf_name, hf_shape, ours, fwd, inv):
  return Entry(hf_name, tuple(hf_shape), (ours,), lambda a: (fwd(a),), inv)


def _same(hf_name, shape, ours):
  return _one(hf_name, shape, ours, lambda a: a, lambda a: a)


def _layer_norm(hf_name, d, ours) -> list[Entry]:
  """A LayerNorm's HF '<hf_name>.weight' / '.bias' [d] <-> our '<ours>/scale' / '/bias'."""
  return [_same(f'{hf_name}.weight', (d,), f'{ours}/scale'),
          _same(f'{hf_name}.bias', (d,), f'{ours}/bias')]


def _linear(hf_name, n_in, n_out, ours, out_shape=None, in_shape=None):
  """torch Linear weight [out, in] <-> our kernel [*in_shape, *out_shape]."""
  out_shape = out_shape or (n_out,)
  in_shape = in_shape or (n_in,)
  return _one(hf_name, (n_out, n_in), ours,
              lambda a: a.T.reshape(*in_shape, *out_shape),
              lambda a: a.reshape(n_in, n_out).T)


def _vocab_rows(hf_name, v, vpad, d, ours, transpose=False):
  """[V, D] table <-> our [Vpad, D] embedding (or [D, Vpad] head kernel when transpose)."""
  def fwd(a):
    padded = np.zeros((vpad, d), a.dtype)
    padded[:v] = a
    return padded.T if transpose else padded

  def inv(a):
    return (a.T if transpose else a)[:v]
  return _one(hf_name, (v, d), ours, fwd, inv)


# ----------------------------------------------------------------------------------- configs


def _rope(hf: dict, source: str) -> tuple[float, float]:
  """(rope_theta, partial_rotary_factor) from old-style or transformers-5 rope_parameters."""
  params = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or {}
  rtype = params.get('rope_type', scaling.get('rope_type', scaling.get('type', 'default')))
  if rtype not in (None, 'default'):
    raise ConversionError(f'{source}: rope scaling type {rtype!r} is not supported (only plain '
                          'rotary embeddings).')
  theta = params.get('rope_theta', hf.get('rope_theta', hf.get('rotary_emb_base', 10000.0)))
  pct = params.get('partial_rotary_factor', hf.get('rotary_pct', hf.get('partial_rotary_factor',
                                                                        1.0)))
  return float(theta), float(pct)


def model_config_from_hf(hf: dict, source: str = 'config.json', **overrides) -> ModelConfig:
  """ModelConfig equivalent to an HF config dict; unsupported settings raise ConversionError."""
  mt = hf.get('model_type')
  if mt not in HF_MODEL_TYPES:
    raise ConversionError(f'{source}: model_type={mt!r} is not supported; expected one of '
                          f'{sorted(HF_MODEL_TYPES)}.')
  family = HF_MODEL_TYPES[mt]

  def need(*keys):
    for k in keys:
      if k in hf and hf[k] is not None:
        return hf[k]
    raise ConversionError(f'{source}: missing field {keys[0]!r} for model_type={mt!r}.')

  def act(name):
    acts = {'gelu_new': True, 'gelu_pytorch_tanh': True, 'gelu_fast': True, 'gelu': False}
    if name not in acts:
      raise ConversionError(f'{source}: activation {name!r} is not supported for {mt}; expected '
                            f'one of {sorted(acts)}.')
    return acts[name]

  if family == 'gpt2':
    for k, ok in (('scale_attn_by_inverse_layer_idx', False), ('add_cross_attention', False),
                  ('scale_attn_weights', True)):
      if hf.get(k, ok) != ok:
        raise ConversionError(f'{source}: {k}={hf[k]!r} is not supported (expected {ok}).')
    d, h = need('n_embd'), need('n_head')
    kw = dict(family='gpt2', vocab_size=need('vocab_size'), d_model=d, n_layers=need('n_layer'),
              n_heads=h, n_kv_heads=h, head_dim=d // h, d_ff=hf.get('n_inner') or 4 * d,
              max_len=need('n_positions'), norm='layernorm',
              norm_eps=float(hf.get('layer_norm_epsilon', 1e-5)), pos_emb='learned',
              mlp='gelu', gelu_approximate=act(hf.get('activation_function', 'gelu_new')),
              parallel_residual=False, use_bias=True,
              tie_embeddings=bool(hf.get('tie_word_embeddings', True)))
  elif family == 'neox':
    if not hf.get('attention_bias', True):
      raise ConversionError(f'{source}: attention_bias=False is not supported for gpt_neox (the '
                            'MLP keeps its biases; this model has one use_bias switch).')
    d, h = need('hidden_size'), need('num_attention_heads')
    theta, pct = _rope(hf, source)
    kw = dict(family='neox', vocab_size=need('vocab_size'), d_model=d,
              n_layers=need('num_hidden_layers'), n_heads=h, n_kv_heads=h, head_dim=d // h,
              d_ff=need('intermediate_size'), max_len=need('max_position_embeddings'),
              norm='layernorm', norm_eps=float(hf.get('layer_norm_eps', 1e-5)), pos_emb='rope',
              rotary_pct=pct, rope_theta=theta, mlp='gelu',
              gelu_approximate=act(hf.get('hidden_act', 'gelu')),
              parallel_residual=bool(hf.get('use_parallel_residual', True)), use_bias=True,
              tie_embeddings=bool(hf.get('tie_word_embeddings', False)))
  else:
    if hf.get('hidden_act', 'silu') != 'silu':
      raise ConversionError(f"{source}: hidden_act={hf['hidden_act']!r} is not supported for "
                            "llama (expected 'silu').")
    if bool(hf.get('attention_bias', False)) != bool(hf.get('mlp_bias', False)):
      raise ConversionError(f'{source}: attention_bias={hf.get("attention_bias")} with '
                            f'mlp_bias={hf.get("mlp_bias")} is not supported (one use_bias '
                            'switch for attention and MLP).')
    if hf.get('pretraining_tp', 1) not in (1, None):
      raise ConversionError(f'{source}: pretraining_tp={hf["pretraining_tp"]} is not supported.')
    d, h = need('hidden_size'), need('num_attention_heads')
    theta, pct = _rope(hf, source)
    kw = dict(family='llama', vocab_size=need('vocab_size'), d_model=d,
              n_layers=need('num_hidden_layers'), n_heads=h,
              n_kv_heads=hf.get('num_key_value_heads') or h,
              head_dim=hf.get('head_dim') or d // h, d_ff=need('intermediate_size'),
              max_len=need('max_position_embeddings'), norm='rmsnorm',
              norm_eps=float(hf.get('rms_norm_eps', 1e-6)), pos_emb='rope', rotary_pct=pct,
              rope_theta=theta, mlp='swiglu', parallel_residual=False,
              use_bias=bool(hf.get('attention_bias', False)),
              tie_embeddings=bool(hf.get('tie_word_embeddings', False)))
  kw.update(overrides)
  try:
    return ModelConfig(**kw).validate()
  except ConfigError as e:
    raise ConversionError(f'{source}: the model it describes is not valid here: {e}') from e


def hf_config_from_model(cfg: ModelConfig, extra: Optional[dict] = None) -> dict:
  """config.json dict (transformers >= 5 field names, plus the older rope fields) for `cfg`."""
  if cfg.family == 'gpt2':
    hf = dict(model_type='gpt2', vocab_size=cfg.vocab_size, n_embd=cfg.d_model,
              n_layer=cfg.n_layers, n_head=cfg.n_heads, n_inner=cfg.d_ff, n_positions=cfg.max_len,
              layer_norm_epsilon=cfg.norm_eps,
              activation_function='gelu_new' if cfg.gelu_approximate else 'gelu',
              tie_word_embeddings=cfg.tie_embeddings)
    if cfg.n_kv_heads != cfg.n_heads or cfg.head_dim * cfg.n_heads != cfg.d_model:
      raise ConversionError('GPT-2 export needs n_kv_heads == n_heads and head_dim * n_heads == '
                            f'd_model; got {cfg.n_kv_heads}, {cfg.head_dim}, {cfg.n_heads}, '
                            f'{cfg.d_model}.')
  elif cfg.family == 'neox':
    hf = dict(model_type='gpt_neox', vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
              num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_len,
              layer_norm_eps=cfg.norm_eps, hidden_act='gelu_new' if cfg.gelu_approximate
              else 'gelu', use_parallel_residual=cfg.parallel_residual,
              tie_word_embeddings=cfg.tie_embeddings, attention_bias=True,
              rope_parameters=dict(rope_type='default', rope_theta=cfg.rope_theta,
                                   partial_rotary_factor=cfg.rotary_pct),
              rotary_pct=cfg.rotary_pct, rotary_emb_base=cfg.rope_theta)
    if not cfg.use_bias or cfg.n_kv_heads != cfg.n_heads or cfg.head_dim * cfg.n_heads != \
        cfg.d_model:
      raise ConversionError('GPT-NeoX export needs use_bias, n_kv_heads == n_heads and head_dim '
                            '* n_heads == d_model.')
  else:
    hf = dict(model_type='llama', vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
              num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
              intermediate_size=cfg.d_ff, max_position_embeddings=cfg.max_len,
              rms_norm_eps=cfg.norm_eps, hidden_act='silu', attention_bias=cfg.use_bias,
              mlp_bias=cfg.use_bias, tie_word_embeddings=cfg.tie_embeddings,
              rope_parameters=dict(rope_type='default', rope_theta=cfg.rope_theta),
              rope_theta=cfg.rope_theta)
    if cfg.rotary_pct != 1.0:
      raise ConversionError(f'Llama export needs rotary_pct=1.0, got {cfg.rotary_pct}.')
  hf['architectures'] = [_ARCH[cfg.family]]
  hf['torch_dtype'] = hf['dtype'] = 'float32'
  hf.update(extra or {})
  return hf


# ----------------------------------------------------------------------------------- tensors


def entries(cfg: ModelConfig) -> list[Entry]:
  """The complete HF <-> ours tensor map of `cfg` (HF names with their full prefix)."""
  D, H, K, Dh, F = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
  V, Vp = cfg.vocab_size, cfg.padded_vocab_size
  out: list[Entry] = []
  if cfg.family == 'gpt2':
    P = 'transformer.'
    out.append(_vocab_rows(P + 'wte.weight', V, Vp, D, 'embed/embedding'))
    out.append(_same(P + 'wpe.weight', (cfg.max_len, D), 'pos_embed'))
    for i in range(cfg.n_layers):
      p, o = f'{P}h.{i}.', f'layer_{i}/'
      out += _layer_norm(f'{p}ln_1', D, f'{o}ln1') + _layer_norm(f'{p}ln_2', D, f'{o}ln2')
      qkv = tuple(f'{o}attn/{n}_proj/' for n in 'qkv')
      out.append(Entry(f'{p}attn.c_attn.weight', (D, 3 * D), tuple(q + 'kernel' for q in qkv),
                       lambda a: tuple(a.reshape(D, 3, H, Dh)[:, j] for j in range(3)),
                       lambda *a: np.stack(a, 1).reshape(D, 3 * D)))
      out.append(Entry(f'{p}attn.c_attn.bias', (3 * D,), tuple(q + 'bias' for q in qkv),
                       lambda a: tuple(a.reshape(3, H, Dh)), lambda *a: np.stack(a).reshape(-1)))
      out.append(_one(f'{p}attn.c_proj.weight', (D, D), f'{o}attn/o_proj/kernel',
                      lambda a: a.reshape(H, Dh, D), lambda a: a.reshape(D, D)))
      out.append(_same(f'{p}attn.c_proj.bias', (D,), f'{o}attn/o_proj/bias'))
      out += [_same(f'{p}mlp.c_fc.weight', (D, F), f'{o}mlp/up/kernel'),
              _same(f'{p}mlp.c_fc.bias', (F,), f'{o}mlp/up/bias'),
              _same(f'{p}mlp.c_proj.weight', (F, D), f'{o}mlp/down/kernel'),
              _same(f'{p}mlp.c_proj.bias', (D,), f'{o}mlp/down/bias')]
    out += _layer_norm(P + 'ln_f', D, 'ln_f')
  elif cfg.family == 'neox':
    P = 'gpt_neox.'
    out.append(_vocab_rows(P + 'embed_in.weight', V, Vp, D, 'embed/embedding'))
    for i in range(cfg.n_layers):
      p, o = f'{P}layers.{i}.', f'layer_{i}/'
      out += (_layer_norm(f'{p}input_layernorm', D, f'{o}ln1')
              + _layer_norm(f'{p}post_attention_layernorm', D, f'{o}ln2'))
      qkv = tuple(f'{o}attn/{n}_proj/' for n in 'qkv')
      out.append(Entry(
          f'{p}attention.query_key_value.weight', (3 * H * Dh, D), tuple(q + 'kernel' for q in qkv),
          lambda a: tuple(a.reshape(H, 3, Dh, D)[:, j].transpose(2, 0, 1) for j in range(3)),
          lambda *a: np.stack([x.transpose(1, 2, 0) for x in a], 1).reshape(3 * H * Dh, D)))
      out.append(Entry(f'{p}attention.query_key_value.bias', (3 * H * Dh,),
                       tuple(q + 'bias' for q in qkv),
                       lambda a: tuple(a.reshape(H, 3, Dh)[:, j] for j in range(3)),
                       lambda *a: np.stack(a, 1).reshape(-1)))
      out.append(_linear(f'{p}attention.dense.weight', H * Dh, D, f'{o}attn/o_proj/kernel',
                         in_shape=(H, Dh)))
      out.append(_same(f'{p}attention.dense.bias', (D,), f'{o}attn/o_proj/bias'))
      out += [_linear(f'{p}mlp.dense_h_to_4h.weight', D, F, f'{o}mlp/up/kernel'),
              _same(f'{p}mlp.dense_h_to_4h.bias', (F,), f'{o}mlp/up/bias'),
              _linear(f'{p}mlp.dense_4h_to_h.weight', F, D, f'{o}mlp/down/kernel'),
              _same(f'{p}mlp.dense_4h_to_h.bias', (D,), f'{o}mlp/down/bias')]
    out += _layer_norm(P + 'final_layer_norm', D, 'ln_f')
  else:
    P = 'model.'
    out.append(_vocab_rows(P + 'embed_tokens.weight', V, Vp, D, 'embed/embedding'))
    for i in range(cfg.n_layers):
      p, o = f'{P}layers.{i}.', f'layer_{i}/'
      out += [_same(f'{p}input_layernorm.weight', (D,), f'{o}ln1/scale'),
              _same(f'{p}post_attention_layernorm.weight', (D,), f'{o}ln2/scale')]
      for n, heads in (('q', H), ('k', K), ('v', K)):
        out.append(_linear(f'{p}self_attn.{n}_proj.weight', D, heads * Dh,
                           f'{o}attn/{n}_proj/kernel', out_shape=(heads, Dh)))
        if cfg.use_bias:
          out.append(_one(f'{p}self_attn.{n}_proj.bias', (heads * Dh,), f'{o}attn/{n}_proj/bias',
                          lambda a, hh=heads: a.reshape(hh, Dh), lambda a: a.reshape(-1)))
      out.append(_linear(f'{p}self_attn.o_proj.weight', H * Dh, D, f'{o}attn/o_proj/kernel',
                         in_shape=(H, Dh)))
      if cfg.use_bias:
        out.append(_same(f'{p}self_attn.o_proj.bias', (D,), f'{o}attn/o_proj/bias'))
      for hn, on, fi, fo in (('gate_proj', 'gate', D, F), ('up_proj', 'up', D, F),
                             ('down_proj', 'down', F, D)):
        out.append(_linear(f'{p}mlp.{hn}.weight', fi, fo, f'{o}mlp/{on}/kernel'))
        if cfg.use_bias:
          out.append(_same(f'{p}mlp.{hn}.bias', (fo,), f'{o}mlp/{on}/bias'))
    out.append(_same(P + 'norm.weight', (D,), 'ln_f/scale'))
  if not cfg.tie_embeddings:
    out.append(_vocab_rows(_HEAD[cfg.family], V, Vp, D, 'lm_head/kernel', transpose=True))
  return out


def _normalise_names(tensors: dict, family: str) -> dict:
  """Full HF names: base-model checkpoints (no 'transformer.' / 'model.' prefix) get it added."""
  prefix, head = _PREFIX[family], _HEAD[family]
  return {(k if k.startswith(prefix) or k == head else prefix + k): v for k, v in tensors.items()}


def convert_tensors(tensors: dict, cfg: ModelConfig, source: str) -> dict[str, np.ndarray]:
  """HF state dict (name -> array) -> our flat base params; every mismatch raises, all listed."""
  tensors = _normalise_names(tensors, cfg.family)
  ents = entries(cfg)
  known = {e.hf_name for e in ents}
  head = _HEAD[cfg.family]
  problems = []
  if cfg.tie_embeddings and head in tensors:  # a tied head may be stored: it must equal the table
    emb = tensors.get(ents[0].hf_name)
    if emb is None or np.shape(emb) != np.shape(tensors[head]) or not np.array_equal(
        np.asarray(emb), np.asarray(tensors[head])):
      problems.append(f'{head} is stored but differs from {ents[0].hf_name}, while the config '
                      'ties the embeddings (tie_word_embeddings=True)')
    known.add(head)
  buffers = _BUFFERS[cfg.family]
  unknown = sorted(k for k in tensors if k not in known and not buffers.search(k))
  missing = sorted(known - set(tensors) - {head if cfg.tie_embeddings else ''})
  wrong = [f'{e.hf_name}: got {tuple(np.shape(tensors[e.hf_name]))}, expected {e.hf_shape}'
           for e in ents if e.hf_name in tensors and tuple(np.shape(tensors[e.hf_name])) !=
           e.hf_shape]
  if missing:
    problems.append(f'missing tensors {missing}')
  if unknown:
    problems.append(f'unknown tensors {unknown}')
  if wrong:
    problems.append(f'wrong shapes {wrong}')
  if problems:
    raise ConversionError(f'{source}: checkpoint does not match its config '
                          f'(model_type family {cfg.family!r}): ' + '; '.join(problems) + '.')
  out = {}
  for e in ents:
    arr = np.asarray(tensors[e.hf_name], dtype=np.float32)
    for path, value in zip(e.ours, e.to_ours(arr)):
      out[path] = np.ascontiguousarray(value)
  return out


def to_hf_tensors(params, cfg: ModelConfig) -> dict[str, np.ndarray]:
  """Our params tree (vanilla) -> HF state dict; temperature params raise ConversionError."""
  flat = {k: np.asarray(v, dtype=np.float32) for k, v in flatten(params).items()}
  temps = sorted(k for k in flat if any(p.startswith('tau_') for p in k.split('/')))
  if temps:
    raise ConversionError(f'Hugging Face formats have no place for SSA temperature parameters '
                          f'{temps[:6]}{"..." if len(temps) > 6 else ""}; export a vanilla model '
                          '(ssa.strategy=vanilla).')
  ents = entries(cfg)
  used = {p for e in ents for p in e.ours}
  missing, unknown = sorted(used - set(flat)), sorted(set(flat) - used)
  if missing or unknown:
    raise ConversionError(f'params do not match model config {cfg.family}: missing {missing}, '
                          f'unknown {unknown}.')
  return {e.hf_name: np.ascontiguousarray(e.to_hf(*(flat[p] for p in e.ours))) for e in ents}


# ----------------------------------------------------------------------------------- files


def _read_safetensors(files: list[str]) -> dict[str, np.ndarray]:
  out = {}
  for f in files:
    try:
      with safe_open(f, framework='flax') as st:  # 'flax' reads bfloat16 too
        for k in st.keys():
          if k in out:
            raise ConversionError(f'{f}: tensor {k!r} is stored in more than one shard.')
          out[k] = np.asarray(st.get_tensor(k), dtype=np.float32)
    except ConversionError:
      raise
    except Exception as e:  # truncated / corrupt file
      raise ConversionError(f'{f}: not a readable safetensors file ({type(e).__name__}: {e}).') \
          from e
  return out


def _local_dir(path_or_repo: str, revision: Optional[str]) -> str:
  path = os.path.expanduser(path_or_repo)
  if os.path.isdir(path):
    return path
  if path_or_repo.startswith(('/', '~', '.')) and not os.path.exists(path):
    raise ConversionError(f'{path_or_repo!r}: no such directory; expected a checkpoint '
                          'directory (config.json + *.safetensors) or a hub repository id '
                          '"org/name".')
  if os.path.exists(path) or path_or_repo.count('/') != 1:
    raise ConversionError(f'{path_or_repo!r} is neither a checkpoint directory (config.json + '
                          '*.safetensors) nor a hub repository id "org/name".')
  try:  # optional dependency: only hub downloads need it
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConversionError(f'{path_or_repo!r} is not a local directory, and downloading it from '
                          'the hub needs the huggingface_hub package.') from e
  try:
    return huggingface_hub.snapshot_download(
        path_or_repo, revision=revision, allow_patterns=['config.json', '*.safetensors',
                                                         '*.safetensors.index.json'])
  except Exception as e:  # pylint: disable=broad-except  (offline, unknown repo, auth, ...)
    first = (str(e).strip().splitlines() or [''])[0][:300]
    raise ConversionError(f'{path_or_repo!r} is not a local directory and could not be '
                          f'downloaded from the Hugging Face hub ({type(e).__name__}: {first}).') \
        from e


def load_hf_tensors(path_or_repo: str, revision: Optional[str] = None) -> tuple[dict, dict, str]:
  """(config.json dict, {name: float32 array}, directory) of a local dir or hub repo id."""
  d = _local_dir(path_or_repo, revision)
  cfg_path = os.path.join(d, 'config.json')
  if not os.path.isfile(cfg_path):
    raise ConversionError(f'{d}: no config.json.')
  with open(cfg_path) as f:
    hf = json.load(f)
  index = os.path.join(d, 'model.safetensors.index.json')
  if os.path.isfile(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    files = [os.path.join(d, s) for s in shards]
    absent = [f for f in files if not os.path.isfile(f)]
    if absent:
      raise ConversionError(f'{index}: shards {absent} are missing.')
  else:
    files = sorted(glob.glob(os.path.join(d, '*.safetensors')))
  if not files:
    raise ConversionError(f'{d}: no *.safetensors weights (only safetensors checkpoints are read; '
                          'convert pytorch_model.bin with transformers first).')
  return hf, _read_safetensors(files), d


def load_hf(path_or_repo: str, ssa_config=None, *, revision: Optional[str] = None, rng=None,
            **model_overrides) -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) from a Hugging Face checkpoint dir or hub repo id.

  `params` is exactly the tree Transformer(model_cfg, ssa_cfg).init produces ('params' collection,
  unboxed), with the pretrained weights and, when `ssa_config` turns SSA on, the temperature
  parameters at their init values (rng: PRNGKey for those that are random; default key 0).
  `model_overrides` replace ModelConfig fields that do not change weight shapes (e.g. dtype,
  remat, vocab_pad_multiple).
  """
  hf, tensors, d = load_hf_tensors(path_or_repo, revision)
  cfg = model_config_from_hf(hf, os.path.join(d, 'config.json'), **model_overrides)
  base = convert_tensors(tensors, cfg, d)
  return cfg, assemble(base, cfg, resolve_ssa_config(ssa_config), d, rng)


def save_hf(params, model_cfg: ModelConfig, out_dir: str, extra_config: Optional[dict] = None
            ) -> str:
  """Write out_dir/config.json and out_dir/model.safetensors (vanilla models); returns out_dir.

  `extra_config` is merged into config.json (e.g. bos_token_id / eos_token_id)."""
  tensors = to_hf_tensors(params, model_cfg)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'config.json'), 'w') as f:
    json.dump(hf_config_from_model(model_cfg, extra_config), f, indent=2)
  save_file(tensors, os.path.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
  return out_dir
