"""Reliability: a workdir holds one run, nothing written is lost, bad input is one clear line.

In-process regression tests for each defect of the reliability issue (fallback vs a config
mismatch, the NaN guard's kept state, run identity / overwrite / lock, splits checked before
step 1, checksums), a SIGKILL during a save, a full disk, and a table of bad inputs run through
the real CLIs as subprocesses (exit status 2 and one line on stderr naming the field or file).
"""

import functools
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssa import checkpoint as ckpt_lib
from ssa import config_lib
from ssa import optim as optim_lib
from ssa import train_lib
from ssa import workdir as workdir_lib
from ssa.data import DataError
from tests.test_train import _config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _steps(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints')) if n.isdigit())


def _train_records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if json.loads(l)['kind'] == 'train']


# ----------------------------------------------------------------------------- 1. fallback


def test_config_mismatch_never_sets_good_checkpoints_aside(tmp_path):
  wd = str(tmp_path)
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 2})
  train_lib.train_and_evaluate(c, wd)
  assert _steps(wd) == [2, 4]
  # Another optimizer with fallback on: refused by the run identity, nothing renamed.
  sgd = _config(**{'train.num_steps': 6, 'optim.optimizer': 'sgd', 'checkpoint.fallback': True})
  with pytest.raises(workdir_lib.WorkdirError, match=r'optim\.optimizer: .adamw. -> .sgd.'):
    train_lib.train_and_evaluate(sgd, wd)
  # Even when the user allows the change, the state tree does not fit: an incompatible
  # checkpoint, still nothing renamed.
  sgd.checkpoint.allow_changes = 'optim.optimizer'
  with pytest.raises(ckpt_lib.IncompatibleCheckpointError, match='another state tree'):
    train_lib.train_and_evaluate(sgd, wd)
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['2', '4']
  # The right config resumes from the latest step, not from 0.
  out = train_lib.train_and_evaluate(_config(**{'train.num_steps': 6, 'checkpoint.every': 2}), wd)
  assert [r['step'] for r in out['history']] == [5, 6]


# ----------------------------------------------------------------------------- 2. NaN guard


@pytest.mark.parametrize('field,value,match', [
    ('optim.eps', 0.0, r'optim\.eps=0\.0.*0/0 = NaN'),
    ('optim.lr', float('nan'), r'optim\.lr=nan is not a finite number'),
    ('optim.tau_lr', float('inf'), r'optim\.tau_lr=inf'),
    ('ssa.theta_init', float('nan'), r'ssa\.theta_init=nan'),
    ('model.init_std', float('inf'), r'model\.init_std=inf'),
    ('data.eval_batches', 0, r'data\.eval_batches=0'),
    ('checkpoint.keep', -1, r'checkpoint\.keep=-1'),
    ('seed', -1, r'seed=-1.*\[0, 2\*\*32 - 1\]'),
    ('data.seed', 2**32, r'data\.seed='),
    ('optim.b2', 1.0, r'optim\.b2=1\.0'),
])
def test_bad_float_and_range_fields_are_config_errors(field, value, match):
  c = _config(**{field: value})
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


def _assert_trees_equal(a, b, rtol=0.0):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=0)


def test_default_guard_skips_a_non_finite_step_and_is_exact_otherwise():
  """train.nan_guard (gradient scope, the update under a lax.cond): a finite step equals the
  unguarded step; a step with a NaN loss/gradient changes nothing (params, Adam moments, step
  count) and sets the sticky flag, after which even a finite batch is a no-op."""
  c = _config(**{'train.num_steps': 3})
  s = train_lib.setup(c)
  state = s.init_fn(jax.random.PRNGKey(0))
  batch = next(train_lib.make_train_data(c)[0])
  tx, _ = optim_lib.make_optimizer(c, state.params)
  trainable = jax.tree.map(lambda _: True, state.params)
  def step(st, **kw):  # jitted: the eager step dispatches op by op (~10x slower here)
    return jax.jit(functools.partial(train_lib.train_step, model=s.model, tx=tx, schedules={},
                                     trainable=trainable, **kw))(st, batch)
  guarded, m = step(state)
  unguarded, _ = step(state, nan_guard=False)
  assert bool(m['finite']) and bool(guarded.finite) and int(guarded.step) == 1
  # Equal up to float32 rounding (XLA fuses the update differently inside the cond: <= 1.5e-7).
  _assert_trees_equal((guarded.params, guarded.opt_state), (unguarded.params, unguarded.opt_state),
                      rtol=1e-6)
  moved = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
           zip(jax.tree.leaves(guarded.opt_state), jax.tree.leaves(state.opt_state))]
  assert sum(moved) > 2  # it did update (Adam moments and count; lr is 0 in warm-up step 1)

  bad, m = step(guarded, inject_nan_at_step=2)
  assert not bool(m['finite']) and not bool(m['finite_loss']) and not bool(bad.finite)
  assert int(bad.step) == 1
  _assert_trees_equal((bad.params, bad.opt_state), (guarded.params, guarded.opt_state))
  after, m = step(bad)  # sticky: a finite batch after the flag changes nothing either
  assert bool(m['finite']) and not bool(after.finite) and int(after.step) == 1
  _assert_trees_equal((after.params, after.opt_state), (guarded.params, guarded.opt_state))


def test_state_guard_checks_the_updated_params_not_only_the_gradients():
  """Adam with eps=0 (validation bypassed): the loss and gradient are finite, the update is
  0/0 = NaN for parameters without gradient. train.nan_guard_state keeps the old state; the
  default gradient-scope guard lets it through (config_lib refuses eps <= 0 for that reason)."""
  c = _config(**{'train.num_steps': 3})
  s = train_lib.setup(c)
  state = s.init_fn(jax.random.PRNGKey(0))
  batch = next(train_lib.make_train_data(c)[0])
  tx = optax.adam(1e-3, eps=0.0)
  state = state.replace(opt_state=tx.init(state.params))
  trainable = jax.tree.map(lambda _: True, state.params)
  step = lambda **kw: jax.jit(functools.partial(  # noqa: E731
      train_lib.train_step, model=s.model, tx=tx, schedules={}, trainable=trainable, **kw))(
          state, batch)
  new, m = step(nan_guard_state=True)
  assert bool(m['finite_loss']) and not bool(m['finite'])
  assert not bool(new.finite)
  _assert_trees_equal(new.params, state.params)
  for kw in ({}, {'nan_guard': False}):
    through, m = step(**kw)
    assert bool(m['finite']) and not bool(train_lib.all_finite(through.params)), kw


def test_all_finite_finds_every_non_finite_value_and_only_those():
  big = jnp.full((1000,), 3e38, jnp.float32)  # finite, though their plain sum overflows
  tree = {'a': big, 'b': jnp.ones((3, 5), jnp.bfloat16), 'i': jnp.arange(4)}
  assert bool(train_lib.all_finite(tree))
  assert bool(train_lib.all_finite({'i': jnp.arange(3)})) and bool(train_lib.all_finite({}))
  for leaf in ('a', 'b'):
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
      t = dict(tree, **{leaf: tree[leaf].reshape(-1).at[-1].set(bad).reshape(tree[leaf].shape)})
      assert not bool(jax.jit(train_lib.all_finite)(t)), (leaf, bad)


def test_non_finite_update_saves_a_finite_state_and_says_what_to_change(tmp_path, monkeypatch):
  monkeypatch.setattr(config_lib, '_check_optim', lambda *a: None)  # let eps=0 through
  c = _config(**{'train.num_steps': 6, 'optim.eps': 0.0, 'checkpoint.every': 0,
                 'train.nan_guard_state': True})
  with pytest.raises(train_lib.NonFiniteError, match=r'step 1\b.*optim\.eps.*raise optim\.eps'):
    train_lib.train_and_evaluate(c, str(tmp_path))
  assert _steps(str(tmp_path)) == [0]
  s = train_lib.setup(c)
  ck = ckpt_lib.Checkpointer(os.path.join(tmp_path, 'checkpoints'), c.checkpoint)
  state, _, _ = ck.restore_step(0, s.abstract_state, c)
  ck.close()
  assert bool(train_lib.all_finite((state.params, state.opt_state)))


# ----------------------------------------------------------------------------- 3. run identity


def test_a_workdir_holds_one_run(tmp_path):
  wd = str(tmp_path)
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 2})
  train_lib.train_and_evaluate(c, wd)
  ident = json.load(open(os.path.join(wd, 'run_config.json')))
  assert ident['config']['optim']['lr'] == c.optim.lr
  # restore=False on a used workdir: refused, nothing touched.
  fresh = _config(**{'train.num_steps': 4, 'checkpoint.every': 2, 'checkpoint.restore': False,
                     'optim.lr': 3e-3})
  with pytest.raises(workdir_lib.WorkdirError, match='restore=False.*checkpoint.overwrite=True'):
    train_lib.train_and_evaluate(fresh, wd)
  assert _steps(wd) == [2, 4] and len(_train_records(wd)) == 4
  # Resuming with fields that change the experiment: refused, listing every field.
  for field, value in (('data.seq_len', 16), ('data.batch_size', 16), ('optim.lr', 3e-3),
                       ('data.dataset', 'passkey'), ('seed', 1)):
    other = _config(**{'train.num_steps': 6, 'checkpoint.every': 2, field: value})
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf'{field.replace(".", chr(92) + ".")}: .*allow_changes={field}\b'):
      train_lib.train_and_evaluate(other, wd)
  assert _steps(wd) == [2, 4]
  # num_steps continues the run; a named change is accepted and recorded.
  more = _config(**{'train.num_steps': 6, 'checkpoint.every': 2, 'optim.lr': 3e-3,
                    'checkpoint.allow_changes': 'optim.lr'})
  out = train_lib.train_and_evaluate(more, wd)
  assert [r['step'] for r in out['history']] == [5, 6]
  ident = json.load(open(os.path.join(wd, 'run_config.json')))
  assert ident['changes'][-1]['fields']['optim.lr'] == [c.optim.lr, 3e-3]
  # overwrite=True: the previous run is deleted, the new run's checkpoints are its own.
  fresh.checkpoint.overwrite = True
  out = train_lib.train_and_evaluate(fresh, wd)
  assert [r['step'] for r in _train_records(wd)] == [1, 2, 3, 4]
  assert json.load(open(os.path.join(wd, 'run_config.json')))['config']['optim']['lr'] == 3e-3
  s = train_lib.setup(fresh)
  ck = ckpt_lib.Checkpointer(os.path.join(wd, 'checkpoints'), fresh.checkpoint)
  state, _, _ = ck.restore_step(4, s.abstract_state, fresh)
  ck.close()
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(out['state'].params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('field', sorted(ckpt_lib.ADDED_FIELDS))
def test_a_field_added_since_a_run_was_saved_reads_as_its_old_behaviour(field):
  """Runs saved before a field existed resume (and load) when the field holds the value that
  computes what they did, and are refused with any other value."""
  section, name = field.split('.')
  current = ckpt_lib.config_to_dict(_config())
  old = json.loads(json.dumps(current))
  del old[section][name]
  current[section][name] = ckpt_lib.ADDED_FIELDS[field]
  assert workdir_lib.identity_diff(old, current) == []
  assert ckpt_lib.config_diff(old, current, ckpt_lib.RUN_SECTIONS) == []
  other = 3 if isinstance(ckpt_lib.ADDED_FIELDS[field], int) else 'other'
  current[section][name] = other
  assert workdir_lib.identity_diff(old, current) == [(field, ckpt_lib.ADDED_FIELDS[field], other)]
  assert ckpt_lib.config_diff(old, current, ckpt_lib.RUN_SECTIONS) == [
      f'{field}: {ckpt_lib.ADDED_FIELDS[field]!r} -> {other!r}']


def test_lock_stops_a_second_process_and_dies_with_its_holder(tmp_path):
  wd = str(tmp_path / 'run')
  c = _config(**{'train.num_steps': 3})
  lease = workdir_lib.claim(wd, c)
  with pytest.raises(workdir_lib.WorkdirError, match=rf'in use by another run \(pid {os.getpid()}'):
    train_lib.train_and_evaluate(c, wd)
  lease.release()
  # A holder killed with SIGKILL leaves no stale lock.
  code = ('import fcntl, sys, time; f = open(sys.argv[1], "a+"); '
          'fcntl.flock(f, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(60)')
  p = subprocess.Popen([sys.executable, '-c', code, os.path.join(wd, '.lock')],
                       stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'locked'
  with pytest.raises(workdir_lib.WorkdirError, match='in use'):
    workdir_lib.claim(wd, c)
  p.kill()
  p.wait()
  workdir_lib.claim(wd, c).release()


# ----------------------------------------------------------------------------- 4. splits


@pytest.mark.parametrize('split,match', [
    ('validation', "split 'validation' has zero documents"),  # one text file: nothing to hold out
    ('test', "split 'test'"),                                 # a split the corpus does not have
])
def test_a_missing_eval_split_fails_before_step_one(tmp_path, split, match):
  text = tmp_path / 'corpus.txt'
  text.write_text('To be, or not to be, that is the question.\n' * 200)
  c = _config(**{'data.dataset': str(text), 'data.data_dir': str(tmp_path / 'cache'),
                 'train.eval_every': 5, 'train.num_steps': 10, 'data.eval_split': split})
  wd = str(tmp_path / 'run')
  with pytest.raises(DataError, match=match):
    train_lib.train_and_evaluate(c, wd)
  assert sorted(os.listdir(wd)) == ['.lock']  # no checkpoint, no metrics, no identity


# ----------------------------------------------------------------------------- 7. checksums


def test_flipped_bytes_are_a_checkpoint_error_and_fallback_uses_the_previous_step(tmp_path):
  wd = str(tmp_path)
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 2})
  train_lib.train_and_evaluate(c, wd)
  manifest = json.load(open(os.path.join(wd, 'checkpoints', '4', ckpt_lib.MANIFEST)))
  target = max((f for f in manifest['files'] if f.startswith('state/')),
               key=lambda f: manifest['files'][f][0])  # the largest array file
  path = os.path.join(wd, 'checkpoints', '4', target)
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
  open(path, 'wb').write(bytes(data))
  c.train.num_steps = 6
  with pytest.raises(ckpt_lib.CheckpointError, match=rf'checkpoints/4 \(step 4\).*{target}'):
    train_lib.train_and_evaluate(c, wd)
  c.checkpoint.fallback = True
  out = train_lib.train_and_evaluate(c, wd)
  assert [r['step'] for r in out['history']] == [3, 4, 5, 6]
  assert glob.glob(os.path.join(wd, 'checkpoints', '4.unreadable-*'))


@pytest.mark.parametrize('every', [0, 2])
def test_background_saves_write_a_manifest_for_every_step(tmp_path, every):
  # orbax's post-finalisation callback can run before the step directory has its final name;
  # the manifest is then written when the saves are waited for, never skipped.
  wd = str(tmp_path)
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': every, 'checkpoint.async_save': True})
  train_lib.train_and_evaluate(c, wd)
  steps = _steps(wd)
  assert steps == ([2, 4] if every else [4])
  for step in steps:
    assert ckpt_lib.verify_manifest(step, ckpt_lib.epath.Path(wd) / 'checkpoints' / str(step))


def test_checkpoints_without_a_manifest_still_restore(tmp_path):
  wd = str(tmp_path)
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 2})
  train_lib.train_and_evaluate(c, wd)
  os.remove(os.path.join(wd, 'checkpoints', '4', ckpt_lib.MANIFEST))
  c.train.num_steps = 5
  out = train_lib.train_and_evaluate(c, wd)
  assert [r['step'] for r in out['history']] == [5]


# ----------------------------------------------------------------------------- faults


def test_sigkill_during_a_save_resumes_to_the_uninterrupted_state(tmp_path):
  over = {'train.num_steps': 12, 'checkpoint.every': 1, 'checkpoint.keep': 2,
          'checkpoint.async_save': True}
  full = train_lib.train_and_evaluate(_config(**over), str(tmp_path / 'full'))
  wd = str(tmp_path / 'killed')
  args = [f'--config.{k}={v}' for k, v in over.items()]
  p = subprocess.Popen([sys.executable, 'train.py', '--config=configs/tiny.py',
                        f'--workdir={wd}', '--config.optim.decay_steps=20',
                        '--config.train.eval_every=-1', *args], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckdir = os.path.join(wd, 'checkpoints')
  deadline, caught = time.time() + 240, False
  while time.time() < deadline and p.poll() is None:
    names = os.listdir(ckdir) if os.path.isdir(ckdir) else []
    if any('tmp' in n for n in names) and any(n.isdigit() for n in names):
      p.send_signal(signal.SIGKILL)  # a save is in flight and an earlier one is complete
      caught = True
      break
    time.sleep(0.002)
  p.wait()
  if not caught:
    pytest.skip('the run finished before a save could be interrupted')
  resumed = train_lib.train_and_evaluate(_config(**over), wd)
  assert resumed['step'] == 12
  for a, b in zip(jax.tree.leaves(resumed['state'].params), jax.tree.leaves(full['state'].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def _can_mount_tmpfs(path):
  os.makedirs(path, exist_ok=True)
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=600k', 'tmpfs', path],
                     capture_output=True, check=False)
  return r.returncode == 0


def test_full_disk_is_one_line_naming_the_cause(tmp_path):
  disk = str(tmp_path / 'disk')
  if not _can_mount_tmpfs(disk):
    pytest.skip('cannot mount a small tmpfs here (needs root)')
  try:
    r = subprocess.run([sys.executable, 'train.py', '--config=configs/tiny.py',
                        f'--workdir={disk}/run', '--config.checkpoint.async_save=True'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  finally:
    subprocess.run(['umount', disk], check=False)
  assert r.returncode == 2, r.stderr[-2000:]
  progress = ('[train step', '[eval step', 'gpt2-tiny ')  # the run's own output before it
  other = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith(progress)]
  assert len(other) == 1, other[:5]
  assert other[0].startswith('ERROR: CheckpointError: No space left on device (ENOSPC')


def test_save_errors_name_the_cause_first():
  e = ValueError('RESOURCE_EXHAUSTED: Error writing "x" ... No space left on device '
                 "[os_error_code='28']")
  assert ckpt_lib._describe_cause(e).startswith('No space left on device')
  try:
    try:
      raise OSError(28, 'No space left on device')
    except OSError as inner:
      raise RuntimeError('wrapper') from inner
  except RuntimeError as outer:
    assert ckpt_lib._describe_cause(outer).startswith('No space left on device')
  assert ckpt_lib._describe_cause(KeyError('k')) == "KeyError: 'k'"


# ----------------------------------------------------------------------------- CLI table


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny trained workdir, a truncated copy of it, and a binary file."""
  root = tmp_path_factory.mktemp('cli')
  wd = str(root / 'run')
  train_lib.train_and_evaluate(_config(**{'train.num_steps': 3}), wd)
  broken = str(root / 'broken')
  subprocess.run(['cp', '-r', wd, broken], check=True)
  for f in glob.glob(os.path.join(broken, 'checkpoints', '3', 'state', '**', '*'), recursive=True):
    if os.path.isfile(f) and os.path.getsize(f) > 1000:
      with open(f, 'r+b') as fh:
        fh.truncate(100)
  (root / 'a_file').write_text('not a directory\n')
  (root / 'noget.py').write_text('X = 1\n')
  (root / 'binary.bin').write_bytes(np.random.default_rng(0).bytes(4096))
  return root


_TRAIN = ['train.py', '--config=configs/tiny.py']
CASES = [  # (id, argv with {root}, what the one line must contain)
    ('workdir-is-file', _TRAIN + ['--workdir={root}/a_file'], r'a_file is a file'),
    ('config-missing', ['train.py', '--config={root}/nope.py', '--workdir={root}/w1'],
     r'nope\.py.*does not exist'),
    ('config-no-get_config', ['train.py', '--config={root}/noget.py', '--workdir={root}/w1'],
     r'noget\.py.*defines no get_config'),
    ('misspelled-field', _TRAIN + ['--workdir={root}/w1', '--config.optim.lrr=1'],
     r"no field 'optim\.lrr'; did you mean optim\.lr"),
    ('keep-negative', _TRAIN + ['--workdir={root}/w1', '--config.checkpoint.keep=-1'],
     r'checkpoint\.keep=-1'),
    ('seed-negative', _TRAIN + ['--workdir={root}/w1', '--config.seed=-1'], r'seed=-1'),
    ('lr-nan', _TRAIN + ['--workdir={root}/w1', '--config.optim.lr=nan'], r'optim\.lr=nan'),
    ('eps-zero', _TRAIN + ['--workdir={root}/w1', '--config.optim.eps=0.0'], r'optim\.eps=0\.0'),
    ('eval-batches-zero', _TRAIN + ['--workdir={root}/w1', '--config.data.eval_batches=0'],
     r'data\.eval_batches=0'),
    ('init-from-missing', _TRAIN + ['--workdir={root}/w1', '--config.model.init_from=hf:/nope'],
     r"init_from='hf:/nope'.*no such directory"),
    ('binary-dataset', _TRAIN + ['--workdir={root}/w2', '--config.data.dataset={root}/binary.bin',
                                 '--config.data.data_dir={root}/cache'], r'binary\.bin'),
    ('eval-set-wrong-type', ['eval.py', '--workdir={root}/run', '--set=eval.batch_size=abc'],
     r'eval\.batch_size.*expected a value of type int'),
    ('eval-truncated', ['eval.py', '--workdir={root}/broken'], r'checkpoints/3 \(step 3\)'),
    ('export-out-is-file', ['export.py', '--workdir={root}/run', '--out={root}/a_file'],
     r'a_file'),
    ('sweep-negative-seed', ['sweep.py', '--sweep=embeddings', '--seeds=-1',
                             '--root={root}/sweeps'], r'seeds=.-1.*\[0, 2\*\*32 - 1\]'),
]


@pytest.mark.parametrize('argv,match', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_status_2(trained, argv, match):
  import re  # pylint: disable=g-import-not-at-top
  args = [a.format(root=trained) for a in argv]
  r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                     timeout=300, check=False)
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert r.returncode == 2, r.stderr[-3000:]
  assert len(lines) == 1, lines[:8]
  assert lines[0].startswith('ERROR: ') and re.search(match, lines[0]), lines[0]
