"""The SSA checkpoint format: a portable export of a trained SSA (or vanilla) model.

Hugging Face formats have no place for the temperature parameters, so SSA models are exported
as a directory of two files (format version 1):

  ssa_config.json    {"format": "ssa-checkpoint", "version": 1,
                      "model": {every ModelConfig field},      # ssa/config_lib.py
                      "ssa":   {every SSAConfig field},
                      "extra": {free-form: source workdir, step, tokenizer spec, ...}}
  model.safetensors  every leaf of the Flax 'params' tree, named by its '/'-joined path exactly as
                     Transformer(model_cfg, ssa_cfg).init names it, e.g.
                       'layer_0/attn/q_proj/kernel', 'layer_0/attn/tau_q/theta'
                     and the non-trainable collections (the ssa.strategy='frequency' table) as
                     'constants/<path>'; stored in float32.

Reading it needs only safetensors + json; `load_ssa` checks every tensor against the tree the
config describes (missing, unexpected or mis-shaped tensors raise ConversionError listing them).
Train from it with model.init_from='ssa:DIR' (temperatures included, unlike hf:/gguf:). Export a
training run with `python export.py --workdir=W --out=DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import numpy as np
from safetensors.numpy import save_file

from ssa import config_lib
from ssa.config_lib import ModelConfig, SSAConfig
from ssa.convert.common import ConversionError, abstract_variables, flatten, mismatch_text
from ssa.convert.common import unflatten
from ssa.convert.hf import _read_safetensors

FORMAT, VERSION = 'ssa-checkpoint', 1
CONFIG_FILE, WEIGHTS_FILE = 'ssa_config.json', 'model.safetensors'
_CONSTANTS = 'constants/'


def save_ssa(variables, model_cfg: ModelConfig, ssa_cfg: SSAConfig, out_dir: str,
             extra: Optional[dict] = None) -> str:
  """Write out_dir/ssa_config.json and out_dir/model.safetensors; returns out_dir.

  `variables` is either the 'params' tree or a full variables dict {'params': ..., 'constants':
  ...}; `extra` (JSON-serialisable) is stored as is."""
  if isinstance(variables, dict) and 'params' in variables:
    params = variables['params']
    constants = {k: v for k, v in variables.items() if k != 'params'}
  else:
    params, constants = variables, {}
  tensors = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
             for k, v in flatten(params).items()}
  unknown = sorted(set(constants) - {'constants'})
  if unknown:
    raise ConversionError(f'save_ssa: variable collections {unknown} have no place in the format '
                          "(only 'params' and 'constants').")
  tensors.update({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
                  for k, v in flatten(constants).items()})  # 'constants/<path>'
  _check(tensors, model_cfg, ssa_cfg, 'save_ssa')
  os.makedirs(out_dir, exist_ok=True)
  meta = {'format': FORMAT, 'version': VERSION, 'model': dataclasses.asdict(model_cfg),
          'ssa': dataclasses.asdict(ssa_cfg), 'extra': extra or {}}
  # Each file is written under a temporary name and renamed; the weights first, the config
  # last, so a kill never leaves a config describing other weights.
  weights, config = os.path.join(out_dir, WEIGHTS_FILE), os.path.join(out_dir, CONFIG_FILE)
  save_file(tensors, weights + '.tmp', metadata={'format': FORMAT})
  os.replace(weights + '.tmp', weights)
  with open(config + '.tmp', 'w') as f:
    json.dump(meta, f, indent=2)
  os.replace(config + '.tmp', config)
  return out_dir


def _expected(model_cfg: ModelConfig, ssa_cfg: SSAConfig) -> dict[str, tuple]:
  """{tensor name: shape} of every params leaf and 'constants/<path>' leaf of the model."""
  shapes = abstract_variables(model_cfg, ssa_cfg)
  out = {k: tuple(v.shape) for k, v in flatten(shapes['params']).items()}
  if 'constants' in shapes:
    out.update({k: tuple(v.shape) for k, v in flatten({'constants': shapes['constants']}).items()})
  return out


def _check(tensors: dict, model_cfg: ModelConfig, ssa_cfg: SSAConfig, source: str) -> None:
  problems = mismatch_text(tensors, _expected(model_cfg, ssa_cfg))
  if problems:
    raise ConversionError(
        f'{source}: tensors do not match the model its config describes '
        f'(family={model_cfg.family}, n_layers={model_cfg.n_layers}, '
        f'ssa.strategy={ssa_cfg.strategy}).' + problems)


def read_ssa_config(path: str) -> tuple[ModelConfig, SSAConfig, dict]:
  """(ModelConfig, SSAConfig, extra) of an SSA checkpoint directory; bad files raise."""
  cfg_path = os.path.join(os.path.expanduser(path), CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise ConversionError(f'{path}: no {CONFIG_FILE}; not an SSA checkpoint directory '
                          f'(written by ssa.convert.save_ssa).')
  try:
    with open(cfg_path) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConversionError(f'{cfg_path}: not readable JSON ({e}).') from e
  if meta.get('format') != FORMAT:
    raise ConversionError(f'{cfg_path}: format={meta.get("format")!r}, expected {FORMAT!r}.')
  if meta.get('version') != VERSION:
    raise ConversionError(f'{cfg_path}: version={meta.get("version")!r}; this code reads '
                          f'version {VERSION}.')
  try:
    mcfg = ModelConfig(**meta['model']).validate()
    scfg = SSAConfig(**meta['ssa']).validate()
  except (KeyError, TypeError, config_lib.ConfigError) as e:
    raise ConversionError(f'{cfg_path}: model/ssa sections are not valid here: {e}') from e
  return mcfg, scfg, meta.get('extra') or {}


def load_ssa(path: str) -> tuple[ModelConfig, SSAConfig, dict, dict]:
  """(ModelConfig, SSAConfig, variables {'params': ..., + constants}, extra) of an SSA checkpoint."""
  mcfg, scfg, extra = read_ssa_config(path)
  weights = os.path.join(os.path.expanduser(path), WEIGHTS_FILE)
  if not os.path.isfile(weights):
    raise ConversionError(f'{path}: no {WEIGHTS_FILE}.')
  tensors = _read_safetensors([weights])
  _check(tensors, mcfg, scfg, weights)
  params = {k: v for k, v in tensors.items() if not k.startswith(_CONSTANTS)}  # float32
  variables: dict[str, Any] = {'params': unflatten(params)}
  consts = {k[len(_CONSTANTS):]: v for k, v in tensors.items() if k.startswith(_CONSTANTS)}
  if consts:
    variables['constants'] = unflatten(consts)
  return mcfg, scfg, variables, extra
