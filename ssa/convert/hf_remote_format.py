"""The `hf_remote` export: any SSA (or vanilla) model as a Hugging Face transformers model with
remote code.

    save_hf_remote(variables, model_cfg, ssa_cfg, out_dir, extra=None, special_tokens=None)

writes a directory that `AutoModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True)`
loads, offline (format version 1):

  config.json          {"model_type": "ssa_transformer", "architectures": ["SSAForCausalLM"],
                        "auto_map": {"AutoConfig": "configuration_ssa.SSAConfig",
                                     "AutoModelForCausalLM": "modeling_ssa.SSAForCausalLM"},
                        "model": {every ModelConfig field}, "ssa": {every SSAConfig field},
                        "ssa_export": {"format": "ssa-hf-remote", "version": 1, "extra": {...}},
                        the usual Hugging Face fields derived from "model" (vocab_size,
                        hidden_size, num_hidden_layers, ...), the tokenizer's bos / eos / pad ids}
  configuration_ssa.py the transformers config class    } copied unchanged from
  modeling_ssa.py      the model, in PyTorch               } ssa/convert/hf_remote/
  model.safetensors    every leaf of the Flax 'params' tree in float32, named by its path with
                       '.' for '/' ('layer_0.attn.q_proj.kernel', 'layer_0.attn.tau_q.theta'),
                       in the project's own layouts (kernels [in..., out...]), and the
                       'frequency' strategy's token table as 'constants.token_log_freq'.
                       modeling_ssa.py names its parameters the same way, so transformers loads
                       the file without any conversion.

modeling_ssa.py imports only torch, transformers and the standard library; it implements every
family and every registered strategy (STRATEGIES; a strategy it does not implement is refused with
a ConversionError). This module only writes JSON and safetensors (numpy) and copies files: it
never imports torch or transformers. The tokenizer files are added by ssa/convert/export.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Optional

import numpy as np
from safetensors.numpy import save_file

from ssa.config_lib import ModelConfig, SSAConfig
from ssa.convert.common import ConversionError, flatten
from ssa.convert.ssa_format import _check

FORMAT, VERSION = 'ssa-hf-remote', 1
MODEL_TYPE = 'ssa_transformer'
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'hf_remote')
TEMPLATE_FILES = ('configuration_ssa.py', 'modeling_ssa.py')
CONFIG_FILE, WEIGHTS_FILE = 'config.json', 'model.safetensors'
AUTO_MAP = {'AutoConfig': 'configuration_ssa.SSAConfig',
            'AutoModelForCausalLM': 'modeling_ssa.SSAForCausalLM'}
# The strategies modeling_ssa.py implements (its STRATEGIES; tests keep the two equal to the
# registry of ssa/strategies.py).
STRATEGIES = ('vanilla', 'ssa', 'constant', 'yarn', 'frequency', 'pts')


def hf_remote_config(model_cfg: ModelConfig, ssa_cfg: SSAConfig, extra: Optional[dict] = None,
                     special_tokens: Optional[dict] = None) -> dict:
  """The config.json dict (see the module docstring); `special_tokens`: optional
  {'bos_token_id': ..., 'eos_token_id': ..., 'pad_token_id': ...} (None values are left out)."""
  m = dataclasses.asdict(model_cfg)
  cfg = {
      'model_type': MODEL_TYPE, 'architectures': ['SSAForCausalLM'], 'auto_map': dict(AUTO_MAP),
      'model': m, 'ssa': dataclasses.asdict(ssa_cfg),
      'ssa_export': {'format': FORMAT, 'version': VERSION, 'extra': extra or {}},
      'vocab_size': m['vocab_size'], 'hidden_size': m['d_model'],
      'num_hidden_layers': m['n_layers'], 'num_attention_heads': m['n_heads'],
      'num_key_value_heads': m['n_kv_heads'], 'head_dim': m['head_dim'],
      'intermediate_size': m['d_ff'], 'max_position_embeddings': m['max_len'],
      'tie_word_embeddings': m['tie_embeddings'], 'use_cache': True, 'dtype': 'float32',
  }
  cfg.update({k: int(v) for k, v in (special_tokens or {}).items() if v is not None})
  return cfg


def save_hf_remote(variables, model_cfg: ModelConfig, ssa_cfg: SSAConfig, out_dir: str,
                   extra: Optional[dict] = None, special_tokens: Optional[dict] = None) -> str:
  """Write config.json, configuration_ssa.py, modeling_ssa.py and model.safetensors into
  out_dir; returns out_dir.

  `variables`: the full variables dict {'params': ..., 'constants': ...} (or the 'params' tree
  of a model without constants); every tensor is checked against the tree the configs describe
  (ConversionError listing missing, unexpected or mis-shaped tensors). `extra` (JSON) is stored
  in config.json 'ssa_export'; `special_tokens` as in hf_remote_config."""
  if ssa_cfg.strategy not in STRATEGIES:
    raise ConversionError(f'--format=hf_remote cannot represent ssa.strategy={ssa_cfg.strategy!r}: '
                          f'modeling_ssa.py implements {list(STRATEGIES)}; use --format=ssa.')
  if isinstance(variables, dict) and 'params' in variables:
    collections = dict(variables)
  else:
    collections = {'params': variables}
  unknown = sorted(set(collections) - {'params', 'constants'})
  if unknown:
    raise ConversionError(f'save_hf_remote: variable collections {unknown} have no place in the '
                          "format (only 'params' and 'constants').")
  tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
             for k, v in flatten(collections.pop('params')).items()}
  tensors.update({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
                  for k, v in flatten(collections).items()})  # 'constants/<path>'
  _check(tensors, model_cfg, ssa_cfg, 'save_hf_remote')
  os.makedirs(out_dir, exist_ok=True)
  for name in TEMPLATE_FILES:
    src = os.path.join(TEMPLATE_DIR, name)
    if not os.path.isfile(src):
      raise ConversionError(f'save_hf_remote: the template {src} is missing (a broken install of '
                            'the ssa package; it ships ssa/convert/hf_remote/*.py).')
    shutil.copyfile(src, os.path.join(out_dir, name))
  save_file({k.replace('/', '.'): v for k, v in tensors.items()},
            os.path.join(out_dir, WEIGHTS_FILE), metadata={'format': 'pt', 'ssa_format': FORMAT})
  with open(os.path.join(out_dir, CONFIG_FILE), 'w') as f:
    json.dump(hf_remote_config(model_cfg, ssa_cfg, extra, special_tokens), f, indent=2)
  return out_dir
