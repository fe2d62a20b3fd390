"""eval.py and checkpoint loading: restore through the training code, errors, end-to-end run."""

import json
import os
import re
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
  logs = []
  res = runner.run(cfg, loaded, str(out), log=logs.append)
  # Progress: a line before and after each enabled unit, in order.
  units = ['token_perplexity+word_perplexity', 'zero_shot', 'attention_stats']
  marks = [x for x in logs if x.startswith('[')]
  assert [m.split(' ')[1] for m in marks] == [u for u in units for _ in (0, 1)], marks
  assert marks[0] == '[1/3] token_perplexity+word_perplexity ...'
  assert re.fullmatch(r'\[3/3\] attention_stats done in \d+\.\d s', marks[-1]), marks[-1]
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


def test_results_are_on_disk_after_each_section_when_a_later_one_fails(run_dir, tmp_path,
                                                                       monkeypatch):
  import ssa.data  # pylint: disable=g-import-not-at-top
  from ssa.evaluation import perplexity, zero_shot  # pylint: disable=g-import-not-at-top
  workdir, _, _, _ = run_dir
  loaded = loading.load(None, workdir=workdir)
  cfg = loaded.config
  cfg.eval.word_perplexity = False
  cfg.eval.attention_stats = False
  cfg.eval.zero_shot_dir = str(tmp_path)
  monkeypatch.setattr(ssa.data, 'make_eval_iterator', lambda *a, **k: ([], None))
  monkeypatch.setattr(perplexity, 'token_perplexity',
                      lambda lm, it, **_: {'loss': 2.0, 'perplexity': 7.39, 'tokens': 10.0,
                                     'by_position': {}, 'buckets': ['1-32'],
                                     'sequence_bucket_nll': [[20.0]],
                                     'sequence_bucket_tokens': [[10.0]]})

  def boom(*a, **k):
    raise RuntimeError('zero-shot failed')
  monkeypatch.setattr(zero_shot, 'evaluate_tasks', boom)
  out = tmp_path / 'eval'
  with pytest.raises(RuntimeError, match='zero-shot failed'):
    runner.run(cfg, loaded, str(out), log=lambda *_: None)
  saved = json.loads((out / 'eval_results.json').read_text())
  assert saved['metrics']['validation:loss'] == 2.0 and saved['meta']['complete'] is False
  cfg.eval.zero_shot_dir = None
  runner.run(cfg, loaded, str(out), log=lambda *_: None)
  saved = json.loads((out / 'eval_results.json').read_text())
  assert saved['metrics']['validation:loss'] == 2.0 and saved['meta']['complete'] is True


def test_default_splits_are_data_eval_split_and_overridable(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  assert tuple(c.eval.splits) == ()
  c.data.eval_split = 'test'
  assert runner.eval_splits(c) == ['test']
  c.eval.splits = ('validation', 'test')
  assert runner.eval_splits(c) == ['validation', 'test']
  with c.eval.ignore_type():
    c.eval.splits = 'train, test'   # --set=eval.splits=train,test (no tuple syntax)
  assert runner.eval_splits(c) == ['train', 'test']
  argv = ['eval.py', f'--config={ROOT}/configs/tiny.py', "--config.eval.splits=('test',)"]
  fv = flags.FlagValues()  # eval.py's --config flag: the tuple field takes a command-line value
  config_flags.DEFINE_config_file('config', None, 'c', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  assert tuple(fv.config.eval.splits) == ('test',)


def test_empty_attention_text_is_a_config_error(tmp_path):
  from ssa.config_lib import ConfigError  # pylint: disable=g-import-not-at-top
  from ssa.data.tokenizers import ByteTokenizer  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.eval.attention_text = ''
  with pytest.raises(ConfigError, match='eval.attention_text'):
    runner.attention_figures(c, None, ByteTokenizer(), ['some text ' * 10], 16, str(tmp_path))


def test_cli_set_eval_step_selects_the_checkpoint_without_config(run_dir):
  workdir, _, _, _ = run_dir
  p = _eval_cli(f'--workdir={workdir}', '--prompt=ROMEO:', '--set=eval.step=9')
  assert p.returncode == 2 and 'step 9' in p.stderr and 'steps: [7]' in p.stderr, p.stderr[-2000:]


def test_load_without_config_for_an_experiment_named_model(tmp_path):
  """Experiment configs name their model (configs/shakespeare.py: 'shakespeare-ssa'), which is no
  preset: loading with the checkpoint's own config must still rebuild that exact model."""
  c = tiny.get_config()
  c.model.preset = 'my-experiment'
  c.model.d_model, c.model.head_dim, c.model.n_layers = 32, 8, 3   # not gpt2-tiny's shape
  s = train_lib.setup(c)
  state = s.init_fn(jax.random.PRNGKey(2))
  ck = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), c.checkpoint)
  ck.save(3, state, {}, c)
  ck.close()
  loaded = loading.load(None, workdir=str(tmp_path))
  assert loaded.config.model.preset == 'my-experiment' and loaded.config.model.n_layers == 3
  a, b = _flat(loaded.variables['params']), _flat(state.params)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
