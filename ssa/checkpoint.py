"""Checkpoints: an orbax CheckpointManager under <workdir>/checkpoints/<step>/ with three items.

    state/   the TrainState pytree (params, optimizer state, step, rng, constants), sharded arrays
             written by every process (orbax StandardSave); restored onto ANY mesh: the target
             shardings come from the current run, so a checkpoint saved on 8 devices restores on 1.
    data/    the data iterator state of each process: process_<i>-of-<n>.json (get_state() dicts,
             snapshotted when save() is called, so background writing cannot see a later state)
    meta/    JSON: the full config, the step, the process count
    ssa_manifest.json   size and SHA-256 of every file of the step (written by process 0 once
             the step is finalised, in the background with async saves); checked before a
             restore, so flipped or truncated bytes are a CheckpointError naming the step and file.
             A step without a manifest (written by older code, or cut off between the save and
             the manifest) restores unverified, with a warning.

Keeps the last config.checkpoint.keep steps. Restore first compares the saved model/ssa config
with the current one and then the saved arrays' tree, shapes and dtypes with what the current
config builds (optimizer state included): a difference is an IncompatibleCheckpointError naming
the fields or arrays. Nothing on disk is touched then: the checkpoint is fine, the config is not.
Only a step whose files fail to read (a manifest mismatch, a missing or undecodable file) is
unreadable: a CheckpointError naming its directory, or with config.checkpoint.fallback=True, it is
renamed to <step>.unreadable-<unix time> (kept for inspection, so the next save of that step
cannot collide with it) and the previous steps are tried, newest first. A failed save (e.g. a
full disk: ENOSPC / RESOURCE_EXHAUSTED) is a CheckpointError whose message starts with the cause.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
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


def _describe_cause(e: BaseException) -> str:
  """One line for an exception from a save: the OS/tensorstore cause first (a full disk reads
  'No space left on device (ENOSPC / RESOURCE_EXHAUSTED)')."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  text = ' '.join(str(x) for x in chain)
  if any(isinstance(x, OSError) and x.errno == errno.ENOSPC for x in chain) or (
      'No space left' in text or 'ENOSPC' in text or "os_error_code='28'" in text):
    return 'No space left on device (ENOSPC / RESOURCE_EXHAUSTED)'
  if 'RESOURCE_EXHAUSTED' in text:
    return 'Storage quota or resource exhausted (RESOURCE_EXHAUSTED)'
  first = chain[0]
  line = (str(first).strip().splitlines() or [''])[0][:500]
  return f'{type(first).__name__}: {line}'


# ----------------------------------------------------------------------------- manifest

MANIFEST = 'ssa_manifest.json'


def _files(directory: epath.Path, prefix: str = ''):
  for p in sorted(directory.iterdir(), key=lambda q: q.name):
    rel = f'{prefix}{p.name}'
    if p.is_dir():
      yield from _files(p, rel + '/')
    elif rel != MANIFEST:
      yield rel, p


def _digest(path: epath.Path) -> tuple[int, str]:
  h, n = hashlib.sha256(), 0
  with path.open('rb') as f:
    while chunk := f.read(1 << 20):
      h.update(chunk)
      n += len(chunk)
  return n, h.hexdigest()


def write_manifest(step_dir: epath.Path) -> None:
  """Writes step_dir/ssa_manifest.json: {relative path: [size, sha256]} of every file."""
  files = {rel: list(_digest(p)) for rel, p in _files(step_dir)}
  tmp = step_dir / (MANIFEST + '.tmp')
  tmp.write_text(json.dumps({'algorithm': 'sha256', 'files': files}, indent=0))
  tmp.replace(step_dir / MANIFEST)


def verify_manifest(step: int, step_dir: epath.Path) -> bool:
  """CheckpointError naming the step and the first file whose size or SHA-256 differs from the
  manifest (or that is missing); False when the step has no manifest (not verified)."""
  f = step_dir / MANIFEST
  if not f.exists():
    return False
  try:
    files = json.loads(f.read_text())['files']
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f'Checkpoint {step_dir} (step {step}) cannot be restored: its '
                          f'{MANIFEST} is unreadable ({type(e).__name__}: {e}).') from e
  for rel, (size, digest) in sorted(files.items()):
    p = step_dir / rel
    if not p.exists():
      raise CheckpointError(f'Checkpoint {step_dir} (step {step}) cannot be restored: file {rel} '
                            f'is missing (listed in {MANIFEST}).')
    got_size, got = _digest(p)
    if (got_size, got) != (size, digest):
      what = (f'has {got_size} bytes, expected {size}' if got_size != size else
              f'has SHA-256 {got[:16]}..., expected {digest[:16]}...')
      raise CheckpointError(f'Checkpoint {step_dir} (step {step}) cannot be restored: file {rel} '
                            f'{what} in {MANIFEST} (corrupted since it was written).')
  return True


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
# Config fields added after runs were saved, with the value that computes what those runs did.
# A saved config without the field equals a current config holding that value (and only that
# value), so checkpoints and workdirs from before the field keep loading and resuming.
ADDED_FIELDS = {
    'data.passkey_decoys': 0,  # passkey among decoys (ssa/data/synthetic.py); 0 = none
    'data.passkey_template': 'standard',  # passkey text layout (ssa/data/synthetic.py)
}


def saved_value(section: str, field: str, saved: dict):
  """saved[section][field], the ADDED_FIELDS value where the saved config predates the field,
  else '<absent>'."""
  sec = saved.get(section, {}) or {}
  if field in sec:
    return sec[field]
  return ADDED_FIELDS.get(f'{section}.{field}', '<absent>')


def _leaf_table(tree) -> dict[str, Optional[tuple]]:
  """{'params.layer_0...': (shape, dtype) or None} of a state pytree or its saved metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]:
    keys = [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]
    shape, dtype = getattr(leaf, 'shape', None), getattr(leaf, 'dtype', None)
    out['.'.join(keys)] = None if shape is None else (tuple(shape), str(dtype))
  return out


def config_diff(saved: dict, current: dict, sections=COMPAT_SECTIONS) -> list[str]:
  """'section.field: saved -> current' for every differing field of the given sections."""
  out = []
  for sec in sections:
    a, b = saved.get(sec, {}) or {}, current.get(sec, {}) or {}
    for k in sorted(set(a) | set(b)):
      if k in COMPAT_IGNORED:
        continue
      va, vb = saved_value(sec, k, saved), b.get(k, '<absent>')
      if va != vb:
        out.append(f'{sec}.{k}: {va!r} -> {vb!r}')
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
  ck = Checkpointer(directory, _ReadOnly(), writer=False)
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

  def __init__(self, directory: str, ckpt_cfg, writer: bool = True):
    """writer=False: only reads (never removes the leftovers of a save in progress elsewhere)."""
    # orbax refuses relative paths (at the first save): make local ones absolute here.
    local = '://' not in str(directory)
    self.directory = epath.Path(os.path.abspath(os.path.expanduser(directory)) if local
                                else directory)
    keep = ckpt_cfg.keep or None
    self._unfinished = []  # steps saved whose manifest is not written yet
    self._manifest_lock = threading.Lock()
    self.async_save = bool(ckpt_cfg.async_save)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=self.async_save,
        async_options=(ocp.AsyncOptions(post_finalization_callback=self._write_manifests)
                       if self.async_save else None),
        # a save cut off (a kill, a full disk) leaves <step>.orbax-checkpoint-tmp*: remove it at
        # the next start (one writer per workdir: ssa/workdir.py's lock)
        cleanup_tmp_directories=writer)
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
    """Saves `step` (no-op if it exists). Arrays are copied to host before this returns; the
    files are written in the background with checkpoint.async_save. A failed save (this one, or
    the previous background one) raises CheckpointError starting with the cause."""
    if step in self.manager.all_steps():
      return False
    self._check_free_space(step, state)
    meta = {'step': int(step), 'process_count': jax.process_count(),
            'config': config_to_dict(config)}
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ProcessJsonSave(data_state),
          meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e) from e
    self._unfinished.append(step)
    if not self.async_save:
      self._write_manifests()
    return True

  def _check_free_space(self, step: int, state) -> None:
    """CheckpointError before writing when a local disk cannot hold the step (its arrays' bytes
    on this process, plus 5% and 1 MiB): a save that runs out of space midway leaves orbax's
    background writers failing one by one."""
    if '://' in str(self.directory):
      return
    need = sum(s.data.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'addressable_shards')
               for s in x.addressable_shards if s.replica_id == 0)
    need = int(need * 1.05) + (1 << 20)
    free = shutil.disk_usage(str(self.directory)).free
    if free < need:
      saved = self.steps()
      raise CheckpointError(
          f'No space left on device (ENOSPC): checkpoint step {step} needs about '
          f'{need / 2**20:.1f} MiB under {self.directory} but {free / 2**20:.1f} MiB are free; '
          f'nothing was written, the complete steps there are untouched ({saved or "none"}). '
          'Free space (or lower checkpoint.keep), then resume.')

  def _save_error(self, e: BaseException) -> CheckpointError:
    steps = ', '.join(map(str, self._unfinished)) or '?'
    saved = self.steps()
    return CheckpointError(
        f'{_describe_cause(e)}: writing checkpoint step {steps} under {self.directory} failed; '
        f'the complete steps there are untouched ({saved or "none"}), so the run resumes from '
        f'{("step " + str(saved[-1])) if saved else "the start"} once the cause is fixed.')

  def _write_manifests(self, final: bool = False):
    """Manifests of the finished saves (process 0): called by orbax's post-finalisation callback
    (a background thread, possibly before the step directory has its final name) and by wait()
    (final=True, after every save finished). A step whose directory is not there yet stays
    pending until then; at final, one that is gone (removed by checkpoint.keep) is dropped."""
    with self._manifest_lock:
      pending, self._unfinished = self._unfinished, []
      if jax.process_index() != 0:
        return
      for step in pending:
        d = self.step_dir(step)
        if d.exists():
          if not (d / MANIFEST).exists():
            write_manifest(d)
        elif not final:
          self._unfinished.append(step)

  def wait(self):
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(e) from e
    self._write_manifests(final=True)  # the saves the callback found unfinished (or sync saves)

  def close(self, raise_errors: bool = True):
    try:
      self.wait()
    except CheckpointError:
      if raise_errors:
        raise
    finally:
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
    self.verify(step)
    self.check_structure(step, abstract_state)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ProcessJsonRestore()))
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {where} cannot be restored: {_describe_cause(e)}') from e
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

  def verify(self, step: int) -> None:
    """CheckpointError if a file of `step` differs from its manifest (warning if none)."""
    if not verify_manifest(step, self.step_dir(step)):
      logging.warning('Checkpoint %s has no %s (older code, or cut off before it was written): '
                      'restoring it unverified.', self.step_dir(step), MANIFEST)

  def check_structure(self, step: int, abstract_state) -> None:
    """IncompatibleCheckpointError naming the arrays whose tree path, shape or dtype in the saved
    state differ from `abstract_state` (e.g. another optimizer): the files are fine, the
    config is not. Metadata that cannot be read is a CheckpointError (unreadable)."""
    try:
      saved = self.manager.item_metadata(step)['state']
      saved = getattr(saved, 'tree', saved)
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {self.step_dir(step)} is unreadable (state metadata): '
                            f'{type(e).__name__}: {_describe_cause(e)}') from e
    if saved is None:
      return
    # (empty optimizer nodes are saved as None leaves: only arrays are compared)
    want = {k: v for k, v in _leaf_table(abstract_state).items() if v is not None}
    have = {k: v for k, v in _leaf_table(saved).items() if v is not None}
    diff = [f'{k}: absent in the checkpoint' for k in want if k not in have]
    diff += [f'{k}: only in the checkpoint' for k in have if k not in want]
    diff += [f'{k}: saved {have[k]} -> current {want[k]}' for k in want
             if k in have and have[k] != want[k]]
    if diff:
      more = f' (and {len(diff) - 6} more)' if len(diff) > 6 else ''
      raise IncompatibleCheckpointError(
          f'Checkpoint {self.step_dir(step)} holds another state tree than the current config '
          f'builds (a different optimizer or optim.* / model fields?); {len(diff)} arrays differ: '
          f'{diff[:6]}{more}. Nothing was changed on disk; use the config it was written with, '
          'or another workdir.')

  def restore_variables(self, step: int, abstract_variables: dict) -> dict:
    """The model variables of `step` alone ({'params': ..., other collections}), onto the
    shardings of `abstract_variables` (ShapeDtypeStructs); the optimizer state and the data
    state are never read, so this works whatever optimizer config wrote the checkpoint."""
    self.verify(step)
    where = self.step_dir(step) / 'state'
    params = abstract_variables['params']
    constants = {k: v for k, v in abstract_variables.items() if k != 'params'}
    target = {'params': params, **({'constants': constants} if constants else {})}
    restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
    try:
      out = ocp.PyTreeCheckpointer().restore(where, args=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f'Checkpoint {where} cannot be restored: {_describe_cause(e)}') from e
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
