"""eval.py and checkpoint loading: restore through the training code, errors, end-to-end run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import tiny
from ssa import checkpoint as ckpt_lib
from ssa import train_lib
from ssa.evaluation import loading, runner
from tests.test_eval import ZERO_SHOT_DOCS, _write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A workdir with one checkpoint (step 7) of the tiny config, written by ssa.checkpoint."""
  workdir = tmp_path_factory.mktemp('run')
  c = tiny.get_config()
  s = train_lib.setup(c)
  state = s.init_fn(jax.random.PRNGKey(1))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), c.checkpoint)
  ck.save(7, state, {}, c)
  ck.close()
  return str(workdir), c, s, state


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_load_restores_the_saved_params_with_config_from_checkpoint(run_dir):
  workdir, c, _, state = run_dir
  for kw in ({'workdir': workdir}, {'checkpoint': os.path.join(workdir, 'checkpoints', '7')},
             {'checkpoint': os.path.join(workdir, 'checkpoints')}):
    loaded = loading.load(None, **kw)
    assert loaded.step == 7
    assert loaded.config.model.max_len == c.model.max_len == 32
    assert loaded.config.data.tokenizer == 'byte'
    a, b = _flat(loaded.variables['params']), _flat(state.params)
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_missing_or_incompatible_checkpoint_is_a_clear_error(run_dir, tmp_path):
  workdir, c, _, _ = run_dir
  with pytest.raises(ckpt_lib.CheckpointError, match='does not exist'):
    loading.load(None, workdir=str(tmp_path / 'nothing'))
  with pytest.raises(ckpt_lib.CheckpointError, match='does not exist'):
    loading.load(None, checkpoint=str(tmp_path / 'nothing' / '5'))
  with pytest.raises(ckpt_lib.CheckpointError, match=r'step 9 .*steps: \[7\]'):
    loading.load(None, workdir=workdir, step=9)
  (tmp_path / 'empty' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(ckpt_lib.CheckpointError, match='No checkpoint in'):
    loading.load(None, workdir=str(tmp_path / 'empty'))
  other = tiny.get_config()
  other.model.n_layers = 3
  other.ssa.strategy = 'vanilla'
  with pytest.raises(ckpt_lib.IncompatibleCheckpointError,
                     match=r"model.n_layers: 2 -> 3.*ssa.strategy: 'ssa' -> 'vanilla'"):
    loading.load(other, workdir=workdir)


def test_run_writes_results_and_figures_matching_training_eval(run_dir, tmp_path):
  workdir, c, s, state = run_dir
  loaded = loading.load(tiny.get_config(), workdir=workdir)
  cfg = loaded.config
  for task, recs in ZERO_SHOT_DOCS.items():
    _write(tmp_path, task, recs)
  cfg.eval.zero_shot_dir = str(tmp_path)
  cfg.eval.word_ppl_max_docs = 1
  cfg.eval.batch_size = 64
  cfg.eval.attention_num_seqs = 2
  cfg.eval.attention_text = 'To be, or not to be'
  out = tmp_path / 'eval'
  res = runner.run(cfg, loaded, str(out), log=lambda *_: None)
  saved = json.loads((out / 'eval_results.json').read_text())
  m = saved['metrics']
  assert saved['meta']['step'] == 7
  # Token-level perplexity equals the training loop's own evaluation of the same state.
  ref = train_lib.evaluate(s, state)
  np.testing.assert_allclose(m['validation:loss'], ref['loss'], rtol=1e-5)
  assert m['validation:tokens'] == ref['tokens']
  assert m['validation:word_perplexity'] > 1 and m['validation:documents'] == 1
  for k in ('lambada_standard:acc', 'piqa:acc', 'hellaswag:acc_norm', 'winogrande:acc',
            'arc_easy:acc', 'arc_challenge:acc_norm'):
    assert 0.0 <= m[k] <= 1.0
  assert (out / 'zero_shot.md').read_text().startswith('| run | Wiki. ppl')
  for name in ('dilution.png', 'entropy.png', 'temperature.png', 'token_temperature.png',
               'token_temperature.html'):
    assert (out / 'figures' / name).exists(), name
  stats = json.loads((out / 'attention_stats.json').read_text())
  curves = np.asarray(stats['dilution']['layer_1'])
  np.testing.assert_allclose(curves.sum(-1), 1.0, rtol=1e-5)
  assert ''.join(stats['token_temperature']['pieces']) == 'To be, or not to be'
  assert res['metrics'] == m
  # Generation CLI path: greedy completions are deterministic.
  cfg.eval.temperature, cfg.eval.max_new_tokens = 0.0, 5
  a = runner.complete(cfg, loaded, ['ROMEO:'], log=lambda *_: None)
  b = runner.complete(cfg, loaded, ['ROMEO:'], log=lambda *_: None)
  assert a == b and len(a[0]) == 1


def _eval_cli(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, 'eval.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_errors_and_generation(run_dir, tmp_path):
  workdir, _, _, _ = run_dir
  p = _eval_cli(f'--workdir={tmp_path / "missing"}')
  assert p.returncode == 2 and 'does not exist' in p.stderr, p.stderr[-2000:]
  p = _eval_cli(f'--checkpoint={workdir}/checkpoints/7', '--prompt=ROMEO:',
                '--set=eval.max_new_tokens=4', '--set=eval.num_samples=2')
  assert p.returncode == 0, p.stderr[-3000:]
  assert p.stdout.count("--- 'ROMEO:' ->") == 2
