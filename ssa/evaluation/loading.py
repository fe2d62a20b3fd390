"""Load a trained model for evaluation or export: its parameters only, never the optimizer state.

    loaded = load(config, workdir=DIR)              # latest step of DIR/checkpoints
    loaded = load(None, checkpoint=DIR/checkpoints/1000)   # config read from the checkpoint

Where: `checkpoint` may be a step directory (<...>/checkpoints/<step>), a checkpoints directory
(then `step` or the latest), or a workdir (its checkpoints/ folder is used).
Config: None = the config saved in the checkpoint's meta item (rebuilt on configs/base.py with the
saved model preset, then every saved field copied over); given = that config, and the checkpoint's
model/ssa sections must match it (ssa.checkpoint.Checkpointer.check_compatible names every
differing field: IncompatibleCheckpointError).
Restore: the model's abstract variables (ssa.model.abstract_variables) on the shardings of
config.mesh, read from the checkpoint's state item by a params-only partial restore
(Checkpointer.restore_variables). No optimizer is built, so the optimizer and training sections
of the config play no part: a checkpoint whose optimizer config is unknown loads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import ml_collections

from configs import base
from configs import presets
from ssa import checkpoint as ckpt_lib
from ssa import config_lib
from ssa import sharding as shard_lib
from ssa.model import Transformer, abstract_variables


@dataclasses.dataclass
class Loaded:
  config: Any            # the config used (ml_collections.ConfigDict)
  model: Any             # ssa.model.Transformer
  variables: dict        # {'params': ..., + constants collections}
  step: int              # checkpoint step restored
  directory: str         # the checkpoints directory


def _is_step_dir(path: str) -> bool:
  return os.path.basename(os.path.normpath(path)).isdigit() and os.path.isdir(
      os.path.join(path, 'meta'))


def resolve(workdir: Optional[str] = None, checkpoint: Optional[str] = None,
            step: Optional[int] = None) -> tuple[str, Optional[int]]:
  """(checkpoints directory, step or None = latest); missing paths raise CheckpointError."""
  if (workdir is None) == (checkpoint is None):
    raise ValueError('Give exactly one of workdir and checkpoint.')
  if workdir is not None:
    path = os.path.join(os.path.expanduser(workdir), 'checkpoints')
    if not os.path.isdir(path):
      raise ckpt_lib.CheckpointError(f'No checkpoint: {path} does not exist (workdir {workdir} '
                                     'holds no training run).')
    return path, step
  path = os.path.expanduser(checkpoint)
  if not os.path.exists(path):
    raise ckpt_lib.CheckpointError(f'Checkpoint {path} does not exist.')
  if _is_step_dir(path):
    s = int(os.path.basename(os.path.normpath(path)))
    if step is not None and step != s:
      raise ValueError(f'--checkpoint names step {s} but step={step} was requested.')
    return os.path.dirname(os.path.normpath(path)), s
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    return os.path.join(path, 'checkpoints'), step
  return path, step


def _set_fields(target: ml_collections.ConfigDict, saved: dict, prefix: str = '') -> None:
  for k, v in saved.items():
    if k not in target:
      logging.warning('Saved config field %s%s is unknown to configs/base.py; ignored.', prefix, k)
      continue
    if isinstance(target[k], ml_collections.ConfigDict) and isinstance(v, dict):
      _set_fields(target[k], v, f'{prefix}{k}.')
    else:
      with target.ignore_type():
        target[k] = tuple(v) if isinstance(v, list) else v


def config_from_saved(saved: dict) -> ml_collections.ConfigDict:
  """configs/base.py config with every field of a saved config dict copied over."""
  preset = (saved.get('model') or {}).get('preset') or 'gpt2-tiny'
  # Experiment configs name their own model (e.g. 'shakespeare-ssa'): every model field is
  # copied from `saved` below, so any preset is a valid starting point.
  c = base.get_config(preset if preset in presets.PRESETS else 'gpt2-tiny')
  _set_fields(c, saved)
  return c


def load(config=None, *, workdir: Optional[str] = None, checkpoint: Optional[str] = None,
         step: Optional[int] = None) -> Loaded:
  """Restore params (+ constants) for evaluation; see the module docstring."""
  directory, step = resolve(workdir, checkpoint, step)
  ck = ckpt_lib.Checkpointer(directory, ml_collections.ConfigDict({'keep': None,
                                                                   'async_save': False}),
                             writer=False)
  try:
    step = _pick_step(ck, directory, step)
    try:
      meta = ck.read_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      raise ckpt_lib.CheckpointError(f'Checkpoint {ck.step_dir(step)} is unreadable (meta item): '
                                     f'{type(e).__name__}: {e}') from e
    if config is None:
      config = config_from_saved(meta.get('config', {}))
    else:
      ck.check_compatible(step, meta, config)
    model = Transformer(config_lib.model_config(config.model), config_lib.ssa_config(config.ssa))
    variables = ck.restore_variables(step, _abstract_on_mesh(model, config.mesh))
  finally:
    ck.close()
  return Loaded(config, model, variables, int(step), str(directory))


def _pick_step(ck, directory, step: Optional[int]) -> int:
  steps = ck.steps()
  if not steps:
    raise ckpt_lib.CheckpointError(f'No checkpoint in {directory} (no step directories).')
  if step is None:
    return steps[-1]
  if step not in steps:
    raise ckpt_lib.CheckpointError(f'Checkpoint step {step} is not in {directory} '
                                   f'(steps: {steps}).')
  return step


def _abstract_on_mesh(model, mesh_cfg) -> dict:
  """The model's variables as ShapeDtypeStructs with their shardings on config.mesh (params by
  their logical axes, other collections replicated)."""
  mesh = shard_lib.make_mesh(mesh_cfg)
  rules = shard_lib.logical_rules(mesh_cfg)
  boxed = abstract_variables(model)
  shardings = {'params': shard_lib.param_shardings(boxed['params'], mesh, rules)}
  unboxed = nn.unbox(boxed)
  repl = shard_lib.replicated(mesh)
  for k, v in unboxed.items():
    if k != 'params':
      shardings[k] = jax.tree.map(lambda _: repl, v)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      unboxed, shardings)
