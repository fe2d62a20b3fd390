"""ssa/experiments/pretrain_arms.py + configs/pretrain_arms.py: arms, shared init, resume/skip,
seed-paired summary, dilution statistics."""

import json
import os

import numpy as np
import pytest

from configs import pretrain_arms as exp_config
from ssa import measure
from ssa.evaluation import attention_stats
from ssa.experiments import arms as arms_lib
from ssa.experiments import pretrain_arms as exp


def test_arms_differ_only_in_their_temperatures():
  cfgs = {a: exp_config.get_config(f'{a},3') for a in exp_config.ARMS}
  assert cfgs['vanilla'].ssa.strategy == 'vanilla'
  for a in ('pts', 'ssa'):
    s = cfgs[a].ssa
    assert (s.strategy, s.slope, s.theta_init, s.linear_min_tau, s.k) == (
        'ssa', 'linear', 0.0, 0.05, 'none')
  assert (cfgs['pts'].ssa.q, cfgs['pts'].ssa.v) == ('pos', 'none')
  assert (cfgs['ssa'].ssa.q, cfgs['ssa'].ssa.v) == ('pos+tok', 'tok')
  for c in cfgs.values():   # same data, order, budget, recipe; the seed drives init and data
    assert (c.seed, c.data.seed, c.data.seq_len, c.data.batch_size, c.train.num_steps,
            c.optim.lr, c.data.test_fraction) == (3, 3, 256, 8, exp_config.STEPS, 2e-3, 0.1)
  assert exp_config.get_config('ssa').seed == 0
  with pytest.raises(ValueError, match='unknown arm'):
    exp_config.get_config('nope,1')
  with pytest.raises(ValueError, match='not an integer'):
    exp_config.get_config('ssa,x')
  with pytest.raises(ValueError, match='unknown size'):
    exp_config.get_config('ssa,1,tpu')


def test_gpu_size_is_gpt2_124m_bf16_and_passes_validation():
  from ssa import config_lib
  for arm in exp_config.ARMS:
    c = exp_config.get_config(f'{arm},2,gpu')
    config_lib.validate(c)
    cpu = exp_config.get_config(f'{arm},2')
    assert (c.model.d_model, c.model.n_layers, c.model.vocab_size, c.model.dtype) == (
        768, 12, 50257, 'bfloat16')
    assert (c.data.seq_len, c.data.tokenizer, c.train.num_steps, c.seed) == (
        1024, 'gpt2', exp_config.GPU_STEPS, 2)
    assert c.ssa.to_dict() == cpu.ssa.to_dict() and c.data.dataset == cpu.data.dataset
    assert c.data.test_fraction == cpu.data.test_fraction


def _corpus(tmp_path):
  path = tmp_path / 'corpus.txt'
  if not path.exists():
    rng = np.random.default_rng(0)
    words = ['to', 'be', 'or', 'not', 'that', 'is', 'the', 'question', 'whether', 'tis']
    lines = [' '.join(rng.choice(words, 12)) + '.' for _ in range(600)]
    path.write_text('\n'.join(lines) + '\n')
  return str(path)


def _tiny_fn(tmp_path):
  def fn(arm, seed, steps):
    c = exp.arm_config(arm, seed, 4 if steps is None else steps)
    for k, v in dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, head_dim=16, d_ff=64,
                     max_len=64).items():
      c.model[k] = v
    c.data.dataset = _corpus(tmp_path)
    c.data.data_dir = str(tmp_path / 'cache')
    c.data.doc_unit = 'line'
    c.data.seq_len = 64
    c.data.batch_size = 8             # the tests' 8 simulated devices
    c.data.eval_batches = 1
    c.train.eval_every = 2
    c.train.log_every = 2
    c.train.progress_bar = False
    c.checkpoint.every = 2
    return c
  return fn


def test_arms_of_a_seed_start_from_the_same_base_weights(tmp_path):
  fn = _tiny_fn(tmp_path)
  import jax
  base = {a: arms_lib.base_model(fn(a, 5, None))[1]['params'] for a in exp_config.ARMS}
  flat = {a: {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_leaves_with_path(p)} for a, p in base.items()}
  shared = set(flat['vanilla'])
  assert shared < set(flat['pts']) < set(flat['ssa'])        # temperatures are extra leaves only
  for a in ('pts', 'ssa'):
    for k in shared:
      np.testing.assert_array_equal(flat[a][k], flat['vanilla'][k], err_msg=f'{a} {k}')
  other = arms_lib.base_model(fn('vanilla', 6, None))[1]['params']
  assert not np.array_equal(np.asarray(jax.tree_util.tree_leaves(other)[0]),
                            np.asarray(jax.tree_util.tree_leaves(base['vanilla'])[0]))


def test_end_to_end_resume_skip_and_seed_paired_summary(tmp_path):
  work, res = str(tmp_path / 'w'), str(tmp_path / 'r')
  logs = []
  fn = _tiny_fn(tmp_path)
  summary = exp.run(work, res, [0, 1], exp_config.ARMS, eval_batches=2, attn_rows=4,
                    log=logs.append, config_fn=fn)
  runs = exp.load_runs(res)
  assert set(runs) == set(exp_config.ARMS) and all(set(v) == {0, 1} for v in runs.values())
  v0, s0 = runs['vanilla'][0], runs['ssa'][0]
  assert v0['tokens'] == s0['tokens'] > 0 and v0['buckets'] == ['1-32', '33-64']
  assert [p[0] for p in v0['curve']] == [0, 2, 4]                 # eval at start, every 2 steps
  assert v0['curve'][1][1] == 2 * 8 * 64
  assert v0['theta'] == {} and np.all(np.array(list(s0['theta'].values())) != 0)
  assert set(runs['pts'][0]['tau_by_position']) == {'q'} and set(s0['tau_by_position']) == {'q', 'v'}
  for name, r in (('vanilla', v0), ('pts', runs['pts'][0]), ('ssa', s0)):
    d = r['dilution']['layer_0']
    assert set(d) == ({'attention', 'mixing'} if name == 'ssa' else {'attention'})
    assert len(d['attention']['entropy']) == 64 and set(d['attention']['sorted']) == {'32', '64'}
    assert d['attention']['entropy_slope'] == pytest.approx(
        attention_stats.entropy_slope(d['attention']['entropy']))
    np.testing.assert_allclose(np.sum(d['attention']['sorted']['32']), 1.0, rtol=1e-5)
  # the comparison pairs by seed: the bootstrap over [seeds, sequences] of measure
  c = summary['comparisons']['ssa - vanilla']
  a = np.stack([np.sum(runs['ssa'][s]['sequence_bucket_nll'], 1) for s in (0, 1)])
  b = np.stack([np.sum(runs['vanilla'][s]['sequence_bucket_nll'], 1) for s in (0, 1)])
  w = np.sum(v0['sequence_bucket_tokens'], 1)
  assert c['seeds'] == [0, 1] and c['overall'] == measure.paired_difference(a, b, w)
  assert c['overall']['seeds'] == 2
  sl = summary['entropy_slopes']['ssa']['layer_0']
  d = [runs['ssa'][s]['dilution']['layer_0']['attention']['entropy_slope'] -
       runs['vanilla'][s]['dilution']['layer_0']['attention']['entropy_slope'] for s in (0, 1)]
  assert sl['attention - vanilla']['mean'] == pytest.approx(np.mean(d))
  assert summary['baselines']['eval_split'] == 'test'
  for f in ('summary.md', 'summary.json', 'ngram.json', 'curves.png', 'entropy.png', 'sorted.png'):
    assert os.path.isfile(os.path.join(res, f)), f
  # A rerun skips every finished run; other settings redo one.
  logs.clear()
  exp.run(work, res, [0, 1], exp_config.ARMS, eval_batches=2, attn_rows=4, log=logs.append,
          config_fn=fn)
  assert sum('(skipped)' in m for m in logs) == 6 and not any('training' in m for m in logs)
  logs.clear()
  exp.run_one('pts', 0, work, res, eval_batches=1, attn_rows=4, log=logs.append, config_fn=fn)
  assert any('other settings' in m for m in logs)
  with pytest.raises(FileNotFoundError, match='no run result'):
    exp.load_runs(str(tmp_path / 'empty'))


def test_summary_statistics_known_answers():
  curve = [[0, 0, 3.0], [10, 100, 2.0], [20, 200, 1.0]]
  assert exp.tokens_to_reach(curve, 1.5) == pytest.approx(150.0)
  assert exp.tokens_to_reach(curve, 2.0) == pytest.approx(100.0)
  assert exp.tokens_to_reach(curve, 0.5) is None
  t = exp.t_interval([1.0, 2.0, 3.0])       # mean 2, sd 1, t(2) = 4.303
  assert t['mean'] == 2.0 and t['ci95'] == pytest.approx([2 - 4.303 / np.sqrt(3),
                                                          2 + 4.303 / np.sqrt(3)])
  assert exp.t_interval([1.5])['ci95'] is None
  assert exp.paired_seeds({'a': {0: 1, 1: 1, 2: 1}, 'b': {1: 1, 2: 1, 3: 1}}) == [1, 2]


def test_entropy_slope_and_mixing_weights_known_answers():
  T = 64
  uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
  ent = attention_stats.entropy_by_position(uniform[None, None])
  assert attention_stats.entropy_slope(ent) == pytest.approx(1.0)          # entropy = log n
  assert attention_stats.entropy_slope(np.full(T, 0.7)) == pytest.approx(0.0, abs=1e-12)
  p = np.array([[[[1.0, 0.0], [0.5, 0.5]]]])                                # [B=1,H=1,T=2,S=2]
  tau_v = np.array([[[1.0], [3.0]]])                                        # [B=1,S=2,H=1]
  np.testing.assert_allclose(attention_stats.mixing_weights(p, tau_v)[0, 0],
                             [[1.0, 0.0], [0.25, 0.75]])
  np.testing.assert_allclose(attention_stats.mixing_weights(p, np.ones((1, 2, 1))), p)
  with pytest.raises(ValueError, match='positions'):
    attention_stats.entropy_slope([0.0, 0.1])


def test_a_signal_during_training_ends_the_experiment_without_a_result(tmp_path):
  """SIGTERM mid-run: the checkpoint is saved and train_or_load raises Stopped (no scoring of an
  unfinished run, no next arm); the same call afterwards resumes from the saved step."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from configs import tiny  # pylint: disable=g-import-not-at-top
  c = tiny.get_config()
  c.train.num_steps, c.optim.decay_steps, c.checkpoint.every, c.train.eval_every = 100000, 20, 0, 0
  c.train.progress_bar = False
  run_dir = str(tmp_path / 'run')
  metrics = os.path.join(run_dir, 'metrics.jsonl')

  def stop_after_some_steps():
    deadline = time.time() + 300
    while time.time() < deadline:
      if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 3:
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.1)

  threading.Thread(target=stop_after_some_steps, daemon=True).start()
  with pytest.raises(arms_lib.Stopped, match=r'stopped by SIGTERM at step \d+ of 100000 '
                     r'\(checkpoint saved\); rerun the same command'):
    arms_lib.train_or_load(c, run_dir, log=lambda s: None)
  assert os.listdir(os.path.join(run_dir, 'checkpoints'))
