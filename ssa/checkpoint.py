"""Checkpoints: an orbax CheckpointManager under <workdir>/checkpoints/<step>/ with three items.

    state/   the TrainState pytree (params, optimizer state, step, rng, constants), sharded arrays
             written by every process (orbax StandardSave); restored onto ANY mesh: the target
             shardings come from the current run, so a checkpoint saved on 8 devices restores on 1.
    data/    the data iterator state of each process: process_<i>-of-<n>.json (get_state() dicts,
             snapshotted when save() is called, so background writing cannot see a later state)
    meta/    JSON: the full config, the step, the process count

Keeps the last config.checkpoint.keep steps. Restore compares the saved model/ssa config with the
current one and names every differing field (an incompatible checkpoint); any other failure to
read the latest step raises CheckpointError naming its directory, or with
config.checkpoint.fallback=True, renames it to <step>.unreadable-<unix time> (kept for inspection,
so the next save of that step cannot collide with it) and tries the previous steps, newest first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Optional

from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint cannot be restored; the message names its directory and why."""


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint was written for another model/ssa config (never fallen back from)."""


# ----------------------------------------------------------------------------- data-state item

class ProcessJsonHandler:
  """Orbax CheckpointHandler: one JSON file per process (the data iterator state)."""

  def save(self, directory: epath.Path, args: 'ProcessJsonSave'):
    pi, pc = jax.process_index(), jax.process_count()
    (directory / f'process_{pi}-of-{pc}.json').write_text(json.dumps(args.item))

  def restore(self, directory: epath.Path, args: Optional['ProcessJsonRestore'] = None):
    del args
    pi, pc = jax.process_index(), jax.process_count()
    f = directory / f'process_{pi}-of-{pc}.json'
    if not f.exists():
      found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
      raise CheckpointError(f'{f} does not exist (found {found}): the data-iterator state was '
                            f'saved by a different number of processes than the {pc} running '
                            'now; resume with the same process count.')
    return json.loads(f.read_text())

  def metadata(self, directory):
    del directory
    return None

  def structure(self, directory):
    del directory
    return None

  def finalize(self, directory):
    del directory

  def close(self):
    pass

  @classmethod
  def typestr(cls):
    return f'{cls.__module__}.{cls.__qualname__}'


@ocp.args.register_with_handler(ProcessJsonHandler, for_save=True)
@dataclasses.dataclass
class ProcessJsonSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(ProcessJsonHandler, for_restore=True)
@dataclasses.dataclass
class ProcessJsonRestore(ocp.args.CheckpointArgs):
  item: Any = None


# ----------------------------------------------------------------------------- manager

COMPAT_SECTIONS = ('model', 'ssa')
# Fields that change how the model is computed, not what its parameters are (init_from: only
# where a fresh run's weights come from; a restored checkpoint always wins over it).
COMPAT_IGNORED = ('preset', 'remat', 'dtype', 'backend', 'init_from')


def config_diff(saved: dict, current: dict, sections=COMPAT_SECTIONS) -> list[str]:
  """'section.field: saved -> current' for every differing field of the given sections."""
  out = []
  for sec in sections:
    a, b = saved.get(sec, {}) or {}, current.get(sec, {}) or {}
    for k in sorted(set(a) | set(b)):
      if k in COMPAT_IGNORED:
        continue
      if a.get(k, '<absent>') != b.get(k, '<absent>'):
        out.append(f'{sec}.{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}')
  return out


def config_to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


# The sections that make two configs different training runs (not only different models).
RUN_SECTIONS = ('model', 'ssa', 'data', 'optim', 'train')


def run_config_diff(saved: dict, config) -> list[str]:
  """Fields in which a saved config describes another training run than `config` (the
  RUN_SECTIONS and the seed), as 'field: saved -> current'."""
  want = config_to_dict(config)
  diff = config_diff(saved, want, RUN_SECTIONS)
  if saved.get('seed') != want.get('seed'):
    diff.append(f"seed: {saved.get('seed')!r} -> {want.get('seed')!r}")
  return diff


def read_saved_config(workdir: str, step: Optional[int] = None) -> Optional[tuple[int, dict]]:
  """(step, the config saved with it) of WORKDIR/checkpoints, at `step` or the latest one;
  None when the workdir has no checkpoint."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return None
  ck = Checkpointer(directory, _ReadOnly())
  try:
    steps = ck.steps()
    if not steps:
      return None
    step = steps[-1] if step is None else step
    return step, ck.read_meta(step).get('config', {})
  finally:
    ck.close()


@dataclasses.dataclass(frozen=True)
class _ReadOnly:
  """The checkpoint settings of a Checkpointer that only reads."""
  keep: Optional[int] = None
  async_save: bool = False


class Checkpointer:
  """Save / restore (state, data-iterator state, meta) under `directory`."""

  def __init__(self, directory: str, ckpt_cfg):
    # orbax refuses relative paths (at the first save): make local ones absolute here.
    local = '://' not in str(directory)
    self.directory = epath.Path(os.path.abspath(os.path.expanduser(directory)) if local
                                else directory)
    keep = ckpt_cfg.keep or None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=bool(ckpt_cfg.async_save))
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state', 'data', 'meta'),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': ProcessJsonHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> epath.Path:
    return self.directory / str(step)

  def save(self, step: int, state, data_state: dict, config) -> bool:
    """Saves `step` (no-op if it exists). Arrays are copied to host before this returns."""
    if step in self.manager.all_steps():
      return False
    meta = {'step': int(step), 'process_count': jax.process_count(),
            'config': config_to_dict(config)}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ProcessJsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)
    return True

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore_step(self, step: int, abstract_state, config):
    """(state, data_state, meta) of `step` onto the shardings of `abstract_state`."""
    where = self.step_dir(step)
    try:
      meta = self.read_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {where} is unreadable (meta item): '
                            f'{type(e).__name__}: {e}') from e
    self.check_compatible(step, meta, config)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ProcessJsonRestore()))
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {where} cannot be restored: {type(e).__name__}: '
                            f'{str(e)[:2000]}') from e
    return out['state'], out['data'], meta

  def check_compatible(self, step: int, meta: dict, config) -> None:
    """IncompatibleCheckpointError naming every model/ssa field in which the config saved with
    `step` (its `meta`) differs from `config`."""
    diff = config_diff(meta.get('config', {}), config_to_dict(config))
    if diff:
      raise IncompatibleCheckpointError(
          f'Checkpoint {self.step_dir(step)} is incompatible with the current config; '
          f'differing fields (saved -> current): {diff}. Use another workdir or set the fields '
          'back.')

  def restore_variables(self, step: int, abstract_variables: dict) -> dict:
    """The model variables of `step` alone ({'params': ..., other collections}), onto the
    shardings of `abstract_variables` (ShapeDtypeStructs); the optimizer state and the data
    state are never read, so this works whatever optimizer config wrote the checkpoint."""
    where = self.step_dir(step) / 'state'
    params = abstract_variables['params']
    constants = {k: v for k, v in abstract_variables.items() if k != 'params'}
    target = {'params': params, **({'constants': constants} if constants else {})}
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
    try:
      out = ocp.PyTreeCheckpointer().restore(where, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {where} cannot be restored: {type(e).__name__}: '
                            f'{str(e)[:2000]}') from e
    return {'params': out['params'], **out.get('constants', {})}

  def _set_aside(self, step: int) -> epath.Path:
    """Renames an unreadable step dir to <step>.unreadable-<time> (kept for inspection)."""
    src = self.step_dir(step)
    dst = self.directory / f'{step}.unreadable-{int(time.time())}'
    if jax.process_index() == 0:
      src.rename(dst)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'ssa_checkpoint_set_aside_{step}')
    self.manager.reload()
    return dst

  def restore_latest(self, abstract_state, config, fallback: bool = False):
    """(state, data_state, meta, step) of the newest restorable step, or None if there is none."""
    steps = sorted(self.steps(), reverse=True)
    if not steps:
      return None
    errors = []
    for step in steps:
      try:
        state, data, meta = self.restore_step(step, abstract_state, config)
      except IncompatibleCheckpointError:
        raise
      except CheckpointError as e:
        if not fallback:
          raise CheckpointError(f'{e}\n(The latest checkpoint is step {step}; set '
                                'config.checkpoint.fallback=True to fall back to an older one, '
                                'or remove it.)') from e
        moved = self._set_aside(step)
        logging.warning('Falling back: %s (moved to %s)', e, moved)
        errors.append(f'{e} (moved to {moved})')
        continue
      if errors:
        logging.warning('Restored step %d after %d unreadable newer checkpoint(s).', step,
                        len(errors))
      return state, data, meta, step
    raise CheckpointError(f'No checkpoint in {self.directory} could be restored:\n' +
                          '\n'.join(errors))
