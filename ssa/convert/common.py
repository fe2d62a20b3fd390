"""Shared pieces of the converters: the error type and assembly of a checked parameter tree.

A converter turns a source checkpoint into a flat dict {'layer_0/attn/q_proj/kernel': array, ...}
of the BASE (non-temperature) parameters. `assemble` checks that dict against the tree that
Transformer(model_cfg, ssa_cfg).init would produce (every path, every shape), fills the temperature
parameters (tau_*) with their init values, and returns the nested tree. Anything missing, extra or
of the wrong shape raises ConversionError naming the file and the offending tensors.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa import config_lib
from ssa.config_lib import ModelConfig, SSAConfig
from ssa.model import Transformer, is_temperature_path


class ConversionError(ValueError):
  """A checkpoint cannot be converted; the message names the file and the offending tensors."""


def _key(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def resolve_ssa_config(ssa_config) -> SSAConfig:
  """SSAConfig from None (vanilla), an SSAConfig, or a ConfigDict / mapping of config.ssa."""
  if ssa_config is None:
    return SSAConfig(strategy='vanilla').validate()
  if isinstance(ssa_config, SSAConfig):
    return ssa_config.validate()
  return config_lib.ssa_config(ssa_config)


def abstract_variables(model_cfg: ModelConfig, ssa_cfg: SSAConfig) -> dict:
  """The variables Transformer(model_cfg, ssa_cfg).init produces ('params', and 'constants'
  where the model has them), as ShapeDtypeStructs (no memory used)."""
  model = Transformer(model_cfg, ssa_cfg)
  return jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)),
                        jax.random.PRNGKey(0))


def expected_shapes(model_cfg: ModelConfig, ssa_cfg: SSAConfig) -> dict[str, Any]:
  """{path: ShapeDtypeStruct} of the 'params' tree Transformer.init produces (no memory used)."""
  return flatten(abstract_variables(model_cfg, ssa_cfg)['params'])


def mismatch_text(arrays: Mapping[str, Any], expected: Mapping[str, tuple]) -> str:
  """'' when `arrays` has exactly the names of `expected` ({name: shape}) with those shapes,
  else ' Missing: [...].', ' Unexpected: [...].' and ' Wrong shape: [...].' (sorted, those that
  apply), to append to an error message."""
  missing = sorted(set(expected) - set(arrays))
  unexpected = sorted(set(arrays) - set(expected))
  wrong = sorted(f'{k}: got {tuple(np.shape(arrays[k]))}, expected {tuple(expected[k])}'
                 for k in set(expected) & set(arrays)
                 if tuple(np.shape(arrays[k])) != tuple(expected[k]))
  return ((f' Missing: {missing}.' if missing else '')
          + (f' Unexpected: {unexpected}.' if unexpected else '')
          + (f' Wrong shape: {wrong}.' if wrong else ''))


def _init_temperature_params(model_cfg, ssa_cfg, rng) -> dict[str, np.ndarray]:
  """Init values of the tau_* leaves only (jit drops the rest of the init: cheap at any size)."""
  model = Transformer(model_cfg, ssa_cfg)

  def init(r):
    params = nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))['params'])
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_key(p): v for p, v in flat if is_temperature_path(p)}

  return {k: np.asarray(v) for k, v in jax.jit(init)(rng).items()}


def unflatten(flat: Mapping[str, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    parts = path.split('/')
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def flatten(tree) -> dict[str, Any]:
  flat = jax.tree_util.tree_flatten_with_path(nn.unbox(tree))[0]
  return {_key(p): v for p, v in flat}


def assemble(base: Mapping[str, np.ndarray], model_cfg: ModelConfig, ssa_cfg: SSAConfig,
             source: str, rng: Optional[jax.Array] = None) -> dict:
  """Checked nested params tree: `base` + temperature params at init (see module docstring)."""
  expected = expected_shapes(model_cfg, ssa_cfg)
  temp_keys = {k for k in expected if any(p.startswith('tau_') for p in k.split('/'))}
  problems = mismatch_text(base, {k: expected[k].shape for k in set(expected) - temp_keys})
  if problems:
    raise ConversionError(
        f'{source}: converted parameters do not match the model '
        f'(family={model_cfg.family}, d_model={model_cfg.d_model}, n_layers={model_cfg.n_layers}).'
        + problems)
  pdtype = jnp.dtype(model_cfg.param_dtype)
  flat = {k: jnp.asarray(np.asarray(v), dtype=pdtype) for k, v in base.items()}
  if temp_keys:
    rng = jax.random.PRNGKey(0) if rng is None else rng
    flat.update({k: jnp.asarray(v) for k, v in
                 _init_temperature_params(model_cfg, ssa_cfg, rng).items()})
  return unflatten(flat)
