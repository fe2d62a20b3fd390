"""Checkpoints and processes: resume = uninterrupted run, SIGTERM, restore onto another mesh,
corrupt checkpoints, and two jax.distributed processes = one process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ssa import checkpoint as ckpt_lib
from ssa import sharding as shard_lib
from ssa import train_lib
from tests.test_train import _config, _flat, _mesh

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(out):
  return {r['step']: r['loss'] for r in out['history']}


def _jsonl_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    recs = [json.loads(l) for l in f]
  return {r['step']: r['loss'] for r in recs if r['kind'] == 'train'}


def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
  over = {'checkpoint.every': 0}
  full = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 20}),
                                      str(tmp_path / 'full'))
  first = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 10}),
                                       str(tmp_path / 'split'))
  second = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 20}),
                                        str(tmp_path / 'split'))
  a, b1, b2 = _losses(full), _losses(first), _losses(second)
  assert sorted(b1) == list(range(1, 11)) and sorted(b2) == list(range(11, 21))
  assert [a[i] for i in range(1, 21)] == [b1[i] for i in range(1, 11)] + [b2[i] for i in
                                                                          range(11, 21)]
  pa, pb = _flat(full['state'].params), _flat(second['state'].params)
  for k in pa:
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
  # metrics.jsonl of the resumed workdir holds steps 1..20 exactly once.
  assert sorted(_jsonl_losses(tmp_path / 'split')) == list(range(1, 21))


def test_sigterm_saves_restorable_checkpoint(tmp_path):
  workdir = tmp_path / 'w'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  proc = subprocess.Popen(
      [sys.executable, 'train.py', '--config=configs/tiny.py', f'--workdir={workdir}',
       '--config.train.num_steps=100000', '--config.optim.decay_steps=20',
       '--config.checkpoint.every=0', '--config.train.eval_every=0'],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / 'err.log', 'w'), text=True)
  err_log = tmp_path / 'err.log'  # a file, not a pipe: an undrained pipe would block the run
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
      break
    assert proc.poll() is None, err_log.read_text()[-3000:]
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  err = err_log.read_text()
  assert proc.returncode == 0, err[-3000:]
  assert 'Stop requested (SIGTERM)' in err
  c = _config(**{'train.eval_every': None})
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), c.checkpoint)
  (step,) = ck.steps()
  ck.close()
  logged = _jsonl_losses(workdir)
  assert step >= 5 and max(logged) == step
  # Resume: continues at step+1 (on a different mesh: 8 devices instead of 2).
  c.train.num_steps = step + 2
  out = train_lib.train_and_evaluate(c, str(workdir))
  assert sorted(_losses(out)) == [step + 1, step + 2]


def test_restore_onto_different_mesh(tmp_path):
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 0})
  out = train_lib.train_and_evaluate(c, str(tmp_path), mesh=_mesh(c, (2, 2, 2)))
  saved = _flat(out['state'].params)
  c1 = _config(**{'train.num_steps': 4})
  mesh1 = _mesh(c1, (1, 1, 1))
  s = train_lib.setup(c1, mesh1)
  ck = ckpt_lib.Checkpointer(os.path.join(tmp_path, 'checkpoints'), c1.checkpoint)
  state, data_state, meta, step = ck.restore_latest(s.abstract_state, c1)
  ck.close()
  assert step == 4 and meta['step'] == 4 and isinstance(data_state, dict)
  leaf = state.params['embed']['embedding']
  assert leaf.sharding.mesh.devices.size == 1
  got = _flat(state.params)
  for k in saved:
    np.testing.assert_array_equal(got[k], saved[k], err_msg=k)


def _corrupt(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    for f in files:
      if f.endswith('.ocdbt') or root.endswith('/d'):
        with open(os.path.join(root, f), 'wb') as fh:
          fh.write(b'garbage')


def test_corrupt_or_incompatible_checkpoint_errors_name_it(tmp_path):
  c = _config(**{'train.num_steps': 4, 'checkpoint.every': 2})
  train_lib.train_and_evaluate(c, str(tmp_path))
  ckdir = os.path.join(tmp_path, 'checkpoints')
  # Incompatible: a different model shape names the differing field.
  bad = _config(**{'model.d_ff': 128, 'train.num_steps': 6})
  with pytest.raises(ckpt_lib.CheckpointError, match=r'checkpoints/4.*model.d_ff: 256 -> 128'):
    train_lib.train_and_evaluate(bad, str(tmp_path))
  # Corrupt latest: error names the step directory, fallback restores the previous one.
  _corrupt(os.path.join(ckdir, '4'))
  c.train.num_steps = 6
  with pytest.raises(ckpt_lib.CheckpointError, match=r'checkpoints/4\b.*cannot be restored'):
    train_lib.train_and_evaluate(c, str(tmp_path))
  c.checkpoint.fallback = True
  out = train_lib.train_and_evaluate(c, str(tmp_path))
  assert sorted(_losses(out)) == [3, 4, 5, 6]


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
  args = ['--config=configs/tiny.py', '--config.train.num_steps=4', '--config.train.data_split=global',
          '--config.checkpoint.every=2', '--config.train.eval_every=4', '--config.optim.decay_steps=20']
  one = tmp_path / 'one'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  r = subprocess.run([sys.executable, 'train.py', f'--workdir={one}', *args], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=240)
  assert r.returncode == 0, r.stderr[-3000:]
  two = tmp_path / 'two'
  port = _free_port()
  env2 = dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=4')
  # Output goes to files, not pipes: a pipe that is not drained while the test waits on the other
  # process fills (64 KiB) and blocks its writer before jax.distributed's shutdown barrier, which
  # then times out in the process that did finish.
  logs = [open(tmp_path / f'proc{i}.log', 'w+') for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, 'train.py', f'--workdir={two}', *args, f'--coordinator=127.0.0.1:{port}',
       '--num_processes=2', f'--process_id={i}'], cwd=ROOT, env=env2, stdout=logs[i],
      stderr=subprocess.STDOUT, text=True) for i in range(2)]

  def log(i):
    logs[i].flush()
    with open(tmp_path / f'proc{i}.log') as f:  # own offset: the child shares logs[i]'s
      return f.read()

  def report():  # both processes, without gloo's connection lines; the head keeps the first error
    out = []
    for j, p in enumerate(procs):
      lines = [l for l in log(j).splitlines() if not l.startswith('[Gloo]')]
      text = '\n'.join(lines)
      out.append(f'--- process {j} (exit {p.returncode}):\n' +
                 (text if len(text) < 5000 else text[:2500] + '\n[...]\n' + text[-2500:]))
    return '\n'.join(out)

  deadline = time.time() + 600  # generous: under pytest -n 2 both share 2 cores with a worker
  for p in procs:
    try:
      p.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
        q.wait()
      pytest.fail('the two-process run did not finish in 600 s:\n' + report())
  if any(p.returncode for p in procs):
    pytest.fail('the two-process run failed:\n' + report())
  errs = [log(0), log(1)]
  assert '2 process(es)' in errs[0] and "'data': 8" in errs[0]
  a, b = _jsonl_losses(one), _jsonl_losses(two)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  np.testing.assert_allclose([b[i] for i in a], [a[i] for i in a], rtol=1e-5)
  # The two-process checkpoint has one data-state file per process.
  assert sorted(os.listdir(two / 'checkpoints' / '4' / 'data')) == [
      'commit_success.txt', 'process_0-of-2.json', 'process_1-of-2.json']


def test_eval_at_start_evaluates_the_initial_state_on_fresh_runs_only(tmp_path):
  over = {'checkpoint.every': 0, 'train.eval_every': 0, 'train.eval_at_start': True}
  wd = str(tmp_path / 'w')
  out = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 3}), wd)
  config = _config(**over)
  s = train_lib.setup(config)
  want = train_lib.evaluate(s, s.init_fn(jax.random.PRNGKey(config.seed)))
  assert out['eval_start']['loss'] == pytest.approx(want['loss'], rel=1e-6)
  assert out['eval']['loss'] < out['eval_start']['loss']  # 3 steps of training moved it
  resumed = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 5}), wd)
  assert resumed['eval_start'] is None
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    evals = [json.loads(l)['step'] for l in f if json.loads(l)['kind'] == 'eval']
  assert evals == [0, 3, 5]


def test_relative_workdir_saves_and_resumes(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # orbax needs absolute paths: the Checkpointer resolves them
  over = {'checkpoint.every': 2}
  train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 2}), 'rel/run')
  assert os.path.isdir(tmp_path / 'rel' / 'run' / 'checkpoints' / '2')
  out = train_lib.train_and_evaluate(_config(**over, **{'train.num_steps': 4}), 'rel/run')
  assert sorted(_losses(out)) == [3, 4]  # resumed at step 2
