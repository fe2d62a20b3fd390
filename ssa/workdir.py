"""A training workdir holds ONE run: its identity, a lock, and the checks made before step 1.

    WORKDIR/run_config.json   the run's identity: the config it was started with (written by
                              process 0 before the first step of a fresh run)
    WORKDIR/.lock             held with fcntl.flock by process 0 while the run is alive (local
                              workdirs; the kernel releases it when the process dies, even by
                              SIGKILL, so a stale lock never blocks)
    WORKDIR/checkpoints/      ssa/checkpoint.py
    WORKDIR/metrics.jsonl, tb/, eval/

    lease = claim(workdir, config)  # the checks below and the lock; writes nothing
    lease.clear()                   # checkpoint.overwrite: delete the previous run (after the data checks)
    lease.commit()                  # run_config.json, once the state is restored or initialised
    lease.release()                 # at the end of the run

claim() refuses (WorkdirError, a ConfigError: exit status 2, nothing touched) when:
  * the workdir is not a directory (a regular file, or a path through one);
  * another live process holds the lock (its pid, host and start time are named);
  * checkpoint.restore=False on a used workdir (a run identity, checkpoints or metrics exist),
    unless checkpoint.overwrite=True, which deletes that run's files (checkpoints, metrics.jsonl,
    tb/, run_config.json) first;
  * resuming with a config that describes another experiment: every field of model, ssa, data,
    optim, train and the seed is compared with the saved identity (or, for a workdir written
    before identities existed, the config saved with its latest checkpoint). Differences in
    RESUME_FREE fields (logging, evaluation cadence, threads, remat, ...) are accepted silently,
    in train.num_steps (continuing or extending a run) with a message; any other difference is
    refused with the list of fields, unless each is named in checkpoint.allow_changes
    ('optim.lr,data.batch_size', or '*' for all), in which case the run continues and the change
    is recorded in run_config.json under 'changes'. Fields that change the parameters' shapes
    are refused by the checkpoint restore whatever allow_changes says.

gs:// workdirs: there is no lock (object stores have no flock); two runs on one gs:// workdir are
not detected. The identity check still refuses a changed config.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import socket
from typing import Any, Optional

from etils import epath
import jax

from ssa import checkpoint as ckpt_lib
from ssa.errors import ConfigError

IDENTITY_FILE = 'run_config.json'
LOCK_FILE = '.lock'
RUN_FILES = ('checkpoints', 'metrics.jsonl', 'tb', IDENTITY_FILE)  # what overwrite deletes

# Fields that may differ on resume without making it another experiment.
RESUME_FREE = frozenset({
    'model.preset', 'model.remat', 'model.init_from', 'ssa.backend',
    'data.num_threads', 'data.eval_batches', 'data.data_dir', 'data.tfds_data_dir',
    'data.tfds_download', 'data.pretokenize', 'data.passkey_num_examples',
    'train.micro_batches', 'train.log_every', 'train.eval_every', 'train.eval_at_start',
    'train.nan_guard', 'train.nan_guard_state', 'train.inject_nan_at_step', 'train.log_temperatures',
    'train.peak_flops_per_device', 'train.progress_bar', 'train.tensorboard',
    'train.frequency_batches', 'train.summary_sample_tokens',
})
# Fields whose change continues the same experiment (reported, not refused).
RESUME_CONTINUABLE = frozenset({'train.num_steps'})


class WorkdirError(ConfigError):
  """The workdir cannot hold this run (in use, another run, not a directory)."""


def _is_local(path: str) -> bool:
  return '://' not in path


def _flat(d: dict, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in (d or {}).items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def identity_diff(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
  """(field, saved, current) for every field of the run sections (and the seed) that differs,
  RESUME_FREE fields excluded; a field the saved config predates reads as its
  checkpoint.ADDED_FIELDS value."""
  a = {k: v for k, v in _flat({s: saved.get(s) for s in ckpt_lib.RUN_SECTIONS}).items()}
  b = {k: v for k, v in _flat({s: current.get(s) for s in ckpt_lib.RUN_SECTIONS}).items()}
  a['seed'], b['seed'] = saved.get('seed'), current.get('seed')
  out = []
  for k in sorted(set(a) | set(b)):
    if k in RESUME_FREE:
      continue
    va, vb = a.get(k, ckpt_lib.ADDED_FIELDS.get(k, '<absent>')), b.get(k, '<absent>')
    if va != vb:
      out.append((k, va, vb))
  return out


def allowed_changes(value) -> set[str]:
  """checkpoint.allow_changes ('a.b,c.d', '*', '' or None) as a set of field names."""
  if not value:
    return set()
  if not isinstance(value, str):
    raise ConfigError(f'checkpoint.allow_changes={value!r}; expected a comma-separated string '
                      "of fields (e.g. 'optim.lr,data.batch_size') or '*'.")
  return {f.strip() for f in value.split(',') if f.strip()}


@dataclasses.dataclass
class Lease:
  """The claim on a workdir. Nothing is written by claim(): clear() (just before the run opens
  its checkpoints) deletes the previous run when checkpoint.overwrite asked for it, commit()
  (once the state is restored or initialised) writes the identity, release() frees the lock
  (also freed when the process exits)."""
  workdir: str
  message: Optional[str] = None   # what the claim noticed (an accepted change), for the log
  identity: Optional[dict] = None  # run_config.json to write at commit()
  overwrite: bool = False
  _lock: Any = None

  def clear(self):
    if self.overwrite:
      if jax.process_index() == 0:
        _delete_run(self.workdir)
      _sync('ssa_workdir_overwrite')

  def commit(self):
    if self.identity is not None and jax.process_index() == 0:
      _write_identity(self.workdir, self.identity)
    self.identity = None

  def release(self):
    if self._lock is not None:
      import fcntl  # pylint: disable=g-import-not-at-top
      fcntl.flock(self._lock, fcntl.LOCK_UN)
      self._lock.close()
      self._lock = None


def _lock(workdir: str):
  """An open file holding the exclusive lock of WORKDIR/.lock, or WorkdirError naming the
  process that holds it."""
  import fcntl  # pylint: disable=g-import-not-at-top  (POSIX only)
  path = os.path.join(workdir, LOCK_FILE)
  f = open(path, 'a+')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    f.seek(0)
    holder = f.read().strip() or 'unknown process'
    f.close()
    raise WorkdirError(f'workdir {workdir} is in use by another run ({holder}); wait for it to '
                       'finish, stop it, or use another --workdir.') from None
  f.seek(0)
  f.truncate()
  f.write(f'pid {os.getpid()} on host {socket.gethostname()} since '
          f'{datetime.datetime.now().isoformat(timespec="seconds")}\n')
  f.flush()
  return f


def _read_identity(workdir: str) -> Optional[dict]:
  f = epath.Path(workdir) / IDENTITY_FILE
  if not f.exists():
    return None
  try:
    return json.loads(f.read_text())
  except ValueError as e:
    raise WorkdirError(f'{f} is not valid JSON ({e}); it records which run this workdir holds: '
                       'restore it, or use another workdir.') from e


def _used(workdir: str) -> bool:
  w = epath.Path(workdir)
  return any((w / name).exists() for name in RUN_FILES)


def _delete_run(workdir: str) -> None:
  w = epath.Path(workdir)
  for name in RUN_FILES:
    p = w / name
    if p.is_dir():
      if _is_local(workdir):
        shutil.rmtree(p)
      else:
        p.rmtree()
    elif p.exists():
      p.unlink()


def claim(workdir: str, config) -> Lease:
  """Checks that `workdir` can hold the run of `config` and claims it (module docstring)."""
  primary = jax.process_index() == 0
  if _is_local(workdir):
    p = os.path.abspath(os.path.expanduser(workdir))
    probe = p
    while probe and not os.path.exists(probe):
      probe = os.path.dirname(probe)
    if os.path.exists(probe) and not os.path.isdir(probe):
      raise WorkdirError(f'--workdir={workdir}: {probe} is a file, not a directory; expected a '
                         'directory (existing or new).')
    if primary:
      os.makedirs(p, exist_ok=True)
  lease = Lease(workdir)
  if primary and _is_local(workdir):
    lease._lock = _lock(os.path.abspath(os.path.expanduser(workdir)))  # pylint: disable=protected-access
  try:
    _check_identity(lease, config)
  except BaseException:
    lease.release()
    raise
  # Every process has read the workdir before any of them writes to it: without this barrier
  # a slower process could see the checkpoints/ directory that process 0's Checkpointer has just
  # created, open a checkpoint reader (which synchronises) and so pair its collectives with the
  # wrong ones of process 0 (a hang at the first step, then a failed shutdown barrier).
  _sync('ssa_workdir_claimed')
  return lease


def _check_identity(lease: Lease, config) -> None:
  """Fills lease.message / identity / overwrite, or raises WorkdirError (module docstring)."""
  workdir, k = lease.workdir, config.checkpoint
  current = ckpt_lib.config_to_dict(config)
  if not k.restore and _used(workdir):
    if not k.get('overwrite', False):
      raise WorkdirError(
          f'checkpoint.restore=False, but workdir {workdir} already holds a run (checkpoints, '
          'metrics or run_config.json): its checkpoints would be kept while the new run\'s '
          'metrics are appended. Use another --workdir, resume it (restore=True), or set '
          'checkpoint.overwrite=True to delete that run first.')
    lease.overwrite = True
    lease.identity = {'config': current, 'created': _now(), 'changes': []}
    return
  # Every process reads the same files the same number of times (the checkpoint reader may
  # synchronise processes); only process 0 writes, and only at commit().
  saved = _read_identity(workdir)
  found = ckpt_lib.read_saved_config(workdir)
  source = epath.Path(workdir) / IDENTITY_FILE
  if saved is None and found is not None:  # a workdir written before identities existed
    saved = {'config': found[1]}
    source = os.path.join(workdir, 'checkpoints', str(found[0]))
  if saved is None:  # a fresh run
    lease.identity = {'config': current, 'created': _now(), 'changes': []}
    return
  diff = identity_diff(saved.get('config', {}), current)
  if found is not None:
    # model/ssa fields that change the parameters: the restore names them with the checkpoint
    # (IncompatibleCheckpointError); allow_changes cannot make such a checkpoint fit
    shapes = {d.split(':')[0] for d in ckpt_lib.config_diff(saved.get('config', {}), current)}
    diff = [d for d in diff if d[0] not in shapes]
  allowed = allowed_changes(k.get('allow_changes', ''))
  refused = [d for d in diff if d[0] not in RESUME_CONTINUABLE and d[0] not in allowed
             and '*' not in allowed]
  if refused:
    listed = '; '.join(f'{f}: {a!r} -> {b!r}' for f, a, b in refused)
    names = ','.join(f for f, _, _ in refused)
    raise WorkdirError(
        f'workdir {workdir} holds another run: {len(refused)} field(s) differ from its saved '
        f'config ({source}) (saved -> current): {listed}. Use another --workdir, set the fields '
        f'back, or to continue this run with the change, add '
        f'--config.checkpoint.allow_changes={names}')
  if not diff and 'created' in saved:
    return
  # record the change (or, for an older workdir, the identity it lacked) once the run starts
  ident = dict(saved) if 'created' in saved else {'created': None, 'changes': []}
  ident['config'] = current
  if diff:
    ident['changes'] = list(ident.get('changes', [])) + [
        {'at': _now(), 'fields': {f: [a, b] for f, a, b in diff}}]
    lease.message = 'Resuming with changed field(s) (saved -> current): ' + '; '.join(
        f'{f}: {a!r} -> {b!r}' for f, a, b in diff)
  lease.identity = ident


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec='seconds')


def _write_identity(workdir: str, ident: dict) -> None:
  f = epath.Path(workdir) / IDENTITY_FILE
  tmp = epath.Path(workdir) / (IDENTITY_FILE + '.tmp')
  tmp.write_text(json.dumps(ident, indent=1, sort_keys=True))
  tmp.replace(f)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
