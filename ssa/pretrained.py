"""Pretrained weights for a fresh run (config.model.init_from), checked against the config.

    params, imported_model_cfg = load_init_params(config, rng)      # hf: | gguf: | ssa:
    params = place_params(params, abstract_params, shardings)         # dtypes + shardings

hf:/gguf: imports go through ssa.convert (the temperatures start at their init, identity at
start); ssa: loads an SSA checkpoint (ssa/convert/ssa_format.py) with its temperatures, whose
SSA config must mean what the run's does. Every mismatch is a ConfigError naming the fields and
the overrides that would make the run match the checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from ssa import config_lib
from ssa import convert

try:  # configs/ sits beside the package in a checkout; only used for a hint in error messages
  from configs import presets
except ImportError:  # pragma: no cover
  presets = None

INIT_FROM_PREFIXES = config_lib.INIT_FROM_PREFIXES

# ModelConfig fields taken from config.model as they are (they do not change what the weights are).
_IMPORT_OVERRIDES = ('vocab_pad_multiple', 'init_std', 'dtype', 'param_dtype', 'remat', 'preset')


def _matching_presets(imported) -> list[str]:
  if presets is None:
    return []
  return [name for name, fields in presets.PRESETS.items()
          if all(getattr(imported, k) == v for k, v in fields.items()
                 if k != 'max_len' or imported.pos_emb == 'learned')]


def check_imported_model(imported, config_model, source: str) -> None:
  """ConfigError naming every field where the imported ModelConfig differs from config.model."""
  current = config_lib.model_config(config_model)
  diffs = []
  for f in dataclasses.fields(imported):
    if f.name in _IMPORT_OVERRIDES:
      continue
    if f.name == 'max_len' and imported.pos_emb != 'learned':
      continue  # no position table: max_len is only the kv-cache length
    a, b = getattr(current, f.name), getattr(imported, f.name)
    if a != b:
      diffs.append((f.name, a, b))
  if not diffs:
    return
  matching = _matching_presets(imported)
  hint = (f'use the preset --config=configs/<file>.py:{matching[0]} (matches the checkpoint) or '
          if matching else 'use a preset with these shapes or ')
  raise config_lib.ConfigError(
      f'model.init_from={source!r}: the checkpoint describes a different model than config.model: '
      + '; '.join(f'model.{k}: config {a!r}, checkpoint {b!r}' for k, a, b in diffs)
      + f'. To train from it, {hint}set the overrides '
      + ' '.join(f'--config.model.{k}={b}' for k, _, b in diffs) + '.')


# SSA fields that may differ between an ssa: checkpoint and the run that starts from it.
_SSA_FREE_FIELDS = ('backend', 'theta_init')


def check_imported_ssa(saved, current, source: str) -> None:
  """An ssa: checkpoint's temperatures mean what the run's ssa config says, or ConfigError."""
  diffs = [(f.name, getattr(current, f.name), getattr(saved, f.name))
           for f in dataclasses.fields(current)
           if f.name not in _SSA_FREE_FIELDS and getattr(current, f.name) != getattr(saved, f.name)]
  if diffs:
    raise config_lib.ConfigError(
        f'model.init_from={source!r}: the checkpoint was trained with another SSA config: '
        + '; '.join(f'ssa.{k}: config {a!r}, checkpoint {b!r}' for k, a, b in diffs)
        + '. Set ' + ' '.join(f'--config.ssa.{k}={b}' for k, _, b in diffs) + ' to train from it.')


def load_init_params(config, rng=None):
  """(params, ModelConfig) of config.model.init_from, checked against config.model.

  hf:/gguf: temperature params (tau_*) are the importer's, at their init (identity at start);
  `rng` is the key of those that are random (train_and_evaluate passes the init key of
  config.seed). ssa: (an SSA checkpoint, ssa/convert/ssa_format.py) loads them too."""
  src = config.model.init_from
  overrides = {k: config.model[k] for k in _IMPORT_OVERRIDES}
  try:
    if src.startswith('hf:'):
      imported, params = convert.load_hf(src[len('hf:'):], config.ssa, rng=rng, **overrides)
    elif src.startswith('gguf:'):
      imported, params, _ = convert.load_gguf(os.path.expanduser(src[len('gguf:'):]), config.ssa,
                                              tokenizer=False, rng=rng, **overrides)
    elif src.startswith('ssa:'):
      imported, saved_ssa, variables, _ = convert.load_ssa(src[len('ssa:'):])
      check_imported_ssa(saved_ssa, config_lib.ssa_config(config.ssa), src)
      imported = dataclasses.replace(  # stored shapes: the padded vocab is not overridden
          imported, **{k: v for k, v in overrides.items() if k != 'vocab_pad_multiple'})
      params = variables['params']
    else:
      raise config_lib.ConfigError(f'model.init_from={src!r} is not valid; expected '
                                   "'hf:PATH_OR_REPO', 'gguf:PATH' or 'ssa:DIR'.")
  except convert.ConversionError as e:
    raise convert.ConversionError(f'model.init_from={src!r}: {e}') from e
  check_imported_model(imported, config.model, src)
  return params, imported


def place_params(params, abstract_params, shardings, source: str):
  """Imported `params` as arrays of the model's dtypes on `shardings`; ConfigError naming the
  source when the tree or a shape differs from the model's (`abstract_params`)."""
  if jax.tree.structure(params) != jax.tree.structure(abstract_params):
    raise config_lib.ConfigError(f'model.init_from={source!r}: imported parameter '
                                 'tree does not match the model (check the ssa config).')
  bad = [f'{jax.tree_util.keystr(p)}: {tuple(np.shape(x))} vs {tuple(a.shape)}'
         for (p, x), a in zip(jax.tree_util.tree_leaves_with_path(params),
                              jax.tree.leaves(abstract_params))
         if tuple(np.shape(x)) != tuple(a.shape)]
  if bad:
    raise config_lib.ConfigError(f'model.init_from={source!r}: imported shapes '
                                 f'differ from the model (imported vs model): {bad[:6]}.')
  params = jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), params, abstract_params)
  return jax.device_put(params, shardings)
