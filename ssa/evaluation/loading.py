"""Load a trained model for evaluation through the training code's own restore path.

    loaded = load(config, workdir=DIR)              # latest step of DIR/checkpoints
    loaded = load(None, checkpoint=DIR/checkpoints/1000)   # config read from the checkpoint

Where: `checkpoint` may be a step directory (<...>/checkpoints/<step>), a checkpoints directory
(then `step` or the latest), or a workdir (its checkpoints/ folder is used).
Config: None = the config saved in the checkpoint's meta item (rebuilt on configs/base.py with the
saved model preset, then every saved field copied over); given = that config, and the checkpoint's
model/ssa sections must match it (ssa.checkpoint.Checkpointer.restore_step names every differing
field: IncompatibleCheckpointError).
Restore: train_lib.setup(config) gives the abstract TrainState with its shardings and
Checkpointer.restore_step reads it; the optimizer/train sections are taken from the checkpoint for
this (the optimizer-state layout depends on them), so an eval config may differ there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Optional

import ml_collections

from ssa import checkpoint as ckpt_lib

# Sections whose saved values define the TrainState layout restored from disk.
_STATE_SECTIONS = ('optim', 'train')


@dataclasses.dataclass
class Loaded:
  config: Any            # the config used (ml_collections.ConfigDict)
  model: Any             # ssa.model.Transformer
  variables: dict        # {'params': ..., + constants collections}
  step: int              # checkpoint step restored
  directory: str         # the checkpoints directory
  setup: Any = None      # the train_lib.Setup used for the restore


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
  from configs import base, presets  # pylint: disable=g-import-not-at-top
  preset = (saved.get('model') or {}).get('preset') or 'gpt2-tiny'
  # Experiment configs name their own model (e.g. 'shakespeare-ssa'): every model field is
  # copied from `saved` below, so any preset is a valid starting point.
  c = base.get_config(preset if preset in presets.PRESETS else 'gpt2-tiny')
  _set_fields(c, saved)
  return c


def load(config=None, *, workdir: Optional[str] = None, checkpoint: Optional[str] = None,
         step: Optional[int] = None) -> Loaded:
  """Restore params (+ constants) for evaluation; see the module docstring."""
  from ssa import train_lib  # pylint: disable=g-import-not-at-top
  directory, step = resolve(workdir, checkpoint, step)
  probe_cfg = ml_collections.ConfigDict({'keep': None, 'async_save': False})
  ck = ckpt_lib.Checkpointer(directory, probe_cfg)
  try:
    steps = ck.steps()
    if not steps:
      raise ckpt_lib.CheckpointError(f'No checkpoint in {directory} (no step directories).')
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ckpt_lib.CheckpointError(f'Checkpoint step {step} is not in {directory} '
                                     f'(steps: {steps}).')
    try:
      meta = ck.read_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      raise ckpt_lib.CheckpointError(f'Checkpoint {ck.step_dir(step)} is unreadable (meta item): '
                                     f'{type(e).__name__}: {e}') from e
    saved = meta.get('config', {})
    if config is None:
      config = config_from_saved(saved)
    # The optimizer-state layout comes from the saved optim/train sections.
    restore_cfg = ml_collections.ConfigDict(config.to_dict())
    for sec in _STATE_SECTIONS:
      if sec in saved and sec in restore_cfg:
        _set_fields(restore_cfg[sec], saved[sec], f'{sec}.')
    s = train_lib.setup(restore_cfg)
    state, _, _ = ck.restore_step(step, s.abstract_state, config)
  finally:
    ck.close()
  variables = {'params': state.params, **state.constants}
  return Loaded(config, s.model, variables, int(step), str(directory), s)
