"""Ablation sweeps (configs/sweeps.py) and the sweep runner (ssa/sweep.py, sweep.py).

Expansion of every sweep into its documented variants, configs that validate at both sizes, bad
names, skip / resume / run.json mismatch of the runner (one real tiny training run, the rest with a
fake train function) and the table's statistics against a hand computation.
"""

import json
import os
import statistics
import subprocess
import sys

import jax
import pytest

from configs import sweeps
from configs import tiny
from ssa import config_lib
from ssa import sweep
from ssa import train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# No persistent compilation cache (see tests/test_train.py).


def _pt(*emb, terms='pos+tok'):
  return {'ssa.strategy': 'ssa', **{f'ssa.{e}': (terms if e in emb else 'none') for e in 'qkv'}}


VANILLA = {'ssa.strategy': 'vanilla'}
SSA = {'ssa.strategy': 'ssa'}


def _expected(size):
  t = {'small': 64, 'paper': 1024}[size]
  return {
      'embeddings': [('vanilla', VANILLA), ('q', _pt('q')), ('k', _pt('k')), ('v', _pt('v')),
                     ('qk', _pt('q', 'k')), ('qv', _pt('q', 'v')), ('kv', _pt('k', 'v')),
                     ('qkv', _pt('q', 'k', 'v'))],
      'terms': [('vanilla', VANILLA), ('q_pos', _pt('q', terms='pos')),
                ('q_tok', _pt('q', terms='tok')), ('q', _pt('q')),
                ('v_pos', _pt('v', terms='pos')), ('v_tok', _pt('v', terms='tok')),
                ('v', _pt('v'))],
      'strategies': [('vanilla', VANILLA), ('constant', {'ssa.strategy': 'constant'}),
                     ('yarn', {'ssa.strategy': 'yarn', 'ssa.yarn_train_len': t,
                               'ssa.yarn_context_len': 4 * t}),
                     ('frequency', {'ssa.strategy': 'frequency'}), ('pts', {'ssa.strategy': 'pts'}),
                     ('ssa', SSA)],
      'sharing': [('vanilla', VANILLA), ('ssa', SSA),
                  ('ssa_no_sharing', {**SSA, 'ssa.weight_sharing': False})],
      'slope': [('vanilla', VANILLA), ('ssa', SSA),
                ('ssa_sigmoid', {**SSA, 'ssa.slope': 'sigmoid'}),
                ('ssa_linear', {**SSA, 'ssa.slope': 'linear', 'ssa.linear_min_tau': 0.05})],
      'granularity': [('vanilla', VANILLA), ('ssa', SSA),
                      ('ssa_layer', {**SSA, 'ssa.granularity': 'layer'})],
      'combine': [('vanilla', VANILLA), ('ssa', SSA), ('ssa_mul', {**SSA, 'ssa.combine': 'mul'})],
      'efficiency': [('vanilla', VANILLA), ('ssa', SSA)],
  }


@pytest.mark.parametrize('size', sweeps.SIZES)
def test_sweeps_expand_to_documented_variants(size):
  expected = _expected(size)
  assert list(sweeps.SWEEPS) == list(expected)
  for name, want in expected.items():
    assert sweeps.get_sweep(name, size) == want, name


@pytest.mark.parametrize('size', sweeps.SIZES)
def test_variant_names_are_canonical(size):
  by_name = {}
  for name in sweeps.SWEEPS:
    for variant, over in sweeps.get_sweep(name, size):
      assert by_name.setdefault(variant, over) == over, (variant, name)
  # Distinct names are distinct experiments: no two variants give the same config.
  configs = {}
  for variant, over in by_name.items():
    key = json.dumps(sweeps.apply_overrides(sweeps.base_config(size), over).to_dict(),
                     sort_keys=True, default=str)
    assert key not in configs, (variant, configs.get(key))
    configs[key] = variant
  assert 'ssa' in by_name and by_name['ssa'] == SSA
  base = sweeps.base_config(size).ssa
  assert (base.strategy, base.q, base.k, base.v) == ('ssa', 'pos+tok', 'none', 'tok')


@pytest.mark.parametrize('size', sweeps.SIZES)
def test_every_variant_config_validates(size):
  for name in sweeps.SWEEPS:
    for variant, over in sweeps.get_sweep(name, size):
      c = sweeps.get_config(f'{name},{size},{variant}')
      config_lib.validate(c)
      scfg = config_lib.ssa_config(c.ssa)
      for key, value in over.items():  # the override is in the config
        node = c
        for p in key.split('.'):
          node = node[p]
        assert node == value, (name, variant, key)
      assert scfg.strategy == over['ssa.strategy']


def test_small_size_evaluates_along_the_way():
  c = sweeps.base_config('small')
  t = c.train
  evals = t.num_steps // t.eval_every + (t.num_steps % t.eval_every != 0)
  assert t.eval_at_start and evals >= 5
  assert 0 < c.checkpoint.every < t.num_steps and t.num_steps % c.checkpoint.every == 0
  assert not t.progress_bar and not t.tensorboard
  assert c.data.tokenizer == 'byte' and c.model.n_layers == 2
  p = sweeps.base_config('paper')
  assert p.model.preset == 'gpt2-124m' and p.data.seq_len == 1024 and p.train.eval_at_start


@pytest.mark.parametrize('arg,word', [
    ('nope,small,ssa', 'sweep'), ('strategies,huge,ssa', 'size'),
    ('strategies,small,nope', 'variant'), ('strategies,small,q', 'variant'),
    ('strategies,small', 'SWEEP,SIZE,VARIANT')])
def test_get_config_bad_names_raise(arg, word):
  with pytest.raises(ValueError, match=word) as e:
    sweeps.get_config(arg)
  if word == 'sweep':
    assert 'embeddings' in str(e.value)  # lists the valid choices
  if arg == 'strategies,small,q':
    assert "'yarn'" in str(e.value)
  with pytest.raises(ValueError):
    sweep.sweep_names('nope')


def test_plan_shares_runs_between_sweeps(tmp_path):
  runs = sweep.plan('all', 'small', '0,1', str(tmp_path))
  names = [r.variant for r in runs if r.seed == 0]
  assert len(names) == len(set(names)) == len(sweeps.variants('small'))
  assert [r.seed for r in runs] == [0] * len(names) + [1] * len(names)
  r = next(x for x in runs if x.variant == 'yarn' and x.seed == 1)
  assert r.workdir == os.path.join(str(tmp_path), 'small', 'yarn_s1')
  c = sweep.make_config(r)
  assert c.seed == 1 and c.data.seed == 1 and c.ssa.yarn_context_len == 256
  assert sweep.command(r) == (
      f'python train.py --config=configs/sweeps.py:strategies,small,yarn --workdir={r.workdir} '
      '--config.seed=1 --config.data.seed=1')


# ----------------------------------------------------------------------------- runner

def _tiny(num_steps):
  def base(size):
    del size
    c = tiny.get_config()
    c.optim.decay_steps = 20        # the schedule does not depend on train.num_steps
    c.train.num_steps = num_steps
    c.train.eval_every = 4
    c.train.eval_at_start = True
    c.checkpoint.every = 4
    return c
  return base


def _records(workdir, kind):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['kind'] == kind]


def _fake_train(calls):
  """Stands in for train_and_evaluate: logs evals at 0, 4, 8 with a loss derived from the seed."""
  def train(config, workdir):
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    loss = 3.0 + 0.1 * config.seed + (0.05 if config.ssa.strategy == 'vanilla' else 0.0)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      for step in (0, 4, 8):
        f.write(json.dumps({'step': step, 'kind': 'eval', 'loss': loss + 1.0 - step / 8}) + '\n')
    return {'step': 8, 'eval': {'loss': loss, 'perplexity': 2.718281828 ** loss},
            'stopped_by': None}
  return train


def _no_train(config, workdir):
  raise AssertionError(f'trained {workdir} again')


def test_runner_resumes_killed_run_and_skips_finished(tmp_path):
  root = str(tmp_path)
  run = next(r for r in sweep.plan('sharing', 'small', [0], root) if r.variant == 'ssa')
  # A run killed after its step-4 checkpoint: train 4 of 8 steps, then drop result.json.
  status, _ = sweep.run_one(run, base=_tiny(4), log=lambda s: None)
  assert status == 'done'
  os.remove(os.path.join(run.workdir, 'result.json'))
  assert sorted(os.listdir(os.path.join(run.workdir, 'checkpoints'))) == ['4']

  logs = []
  status, res = sweep.run_one(run, base=_tiny(8), log=logs.append)
  assert status == 'done' and 'resuming from step 4' in logs[0]
  train_steps = [r['step'] for r in _records(run.workdir, 'train')]
  assert train_steps == list(range(1, 9))  # steps 5..8 continue the run; none trained twice
  evals = _records(run.workdir, 'eval')
  assert [r['step'] for r in evals] == [0, 4, 8]
  assert res['resumed_from_step'] == 4 and res['step'] == 8
  assert res['loss'] == pytest.approx(evals[-1]['loss'])
  assert res['eval_start']['loss'] == pytest.approx(evals[0]['loss'])
  tps = 8 * 32
  assert res['tokens_trained'] == 8 * tps
  assert res['curve'] == [[r['step'], r['step'] * tps, pytest.approx(r['loss'])] for r in evals]
  assert res['params']['temperature'] > 0 and res['params']['total'] > res['params']['temperature']
  assert res['train_wall_s'] > 0
  with open(os.path.join(run.workdir, 'run.json')) as f:
    assert json.load(f) == {'variant': 'ssa', 'seed': 0, 'size': 'small',
                            'overrides': {'ssa.strategy': 'ssa'}, 'set': {}}

  # Finished: skipped, nothing trained, metrics.jsonl untouched.
  with open(os.path.join(run.workdir, 'metrics.jsonl')) as f:
    before = f.read()
  logs = []
  assert sweep.run_one(run, base=_tiny(8), train_fn=_no_train, log=logs.append)[0] == 'skip'
  assert logs[0].startswith('skip')
  with open(os.path.join(run.workdir, 'metrics.jsonl')) as f:
    assert f.read() == before

  # The whole sweep: ssa_s0 skipped, the other runs trained once each, table written.
  calls, logs = [], []
  out = sweep.run_sweep('sharing', 'small', '0,1', root, base=_tiny(8),
                        train_fn=_fake_train(calls), log=logs.append)
  assert out['status'][run.workdir] == 'skip'
  assert sorted(os.path.basename(c) for c in calls) == [
      'ssa_no_sharing_s0', 'ssa_no_sharing_s1', 'ssa_s1', 'vanilla_s0', 'vanilla_s1']
  assert any(l.startswith('[1/6') and 'vanilla seed 0' in l for l in logs)
  assert os.path.isfile(os.path.join(root, 'small', 'sharing.md'))
  assert 'missing runs' not in out['tables']['sharing']
  calls.clear()
  sweep.run_sweep('sharing', 'small', '0,1', root, base=_tiny(8), train_fn=_fake_train(calls),
                  log=lambda s: None)
  assert calls == []


def _fabricate(root, variant, seed, loss, ppl, temp=10, total=1010):
  run = next(r for r in sweep.plan('all', 'small', [seed], root) if r.variant == variant)
  os.makedirs(run.workdir)
  res = {**run.spec(), 'loss': loss, 'perplexity': ppl,
         'params': {'total': total, 'temperature': temp, 'base': total - temp,
                    'added_ratio': temp / (total - temp)}}
  for name, obj in (('run.json', run.spec()), ('result.json', res)):
    with open(os.path.join(run.workdir, name), 'w') as f:
      json.dump(obj, f)


def test_table_statistics_match_hand_computation(tmp_path):
  root = str(tmp_path)
  van = {0: (2.0, 7.0), 1: (2.2, 9.0), 2: (2.4, 11.0)}
  ssa = {0: (1.9, 6.0), 1: (2.0, 8.0), 2: (2.35, 10.5)}
  for s in range(3):
    _fabricate(root, 'vanilla', s, *van[s], temp=0, total=1000)
    _fabricate(root, 'ssa', s, *ssa[s])
  _fabricate(root, 'ssa_layer', 1, 2.1, 8.5, temp=2, total=1002)

  md, missing = sweep.collect('granularity', 'small', '0,1,2', root)
  assert sorted(os.path.basename(r.workdir) for r in missing) == ['ssa_layer_s0', 'ssa_layer_s2']
  with open(os.path.join(root, 'small', 'granularity.md')) as f:
    assert f.read() == md + '\n'
  rows = {l.split('|')[1].strip(): [c.strip() for c in l.split('|')[2:-1]]
          for l in md.splitlines() if l.startswith('| ') and not l.startswith('| variant')}
  assert list(rows) == ['vanilla', 'ssa', 'ssa_layer']

  def pm(xs, d=4, signed=False):
    m, s = statistics.mean(xs), statistics.stdev(xs)  # sample std (ddof=1)
    return (f'{m:+.{d}f}' if signed else f'{m:.{d}f}') + f' ± {s:.{d}f}'

  assert rows['vanilla'] == ['3', '0 (0.000%)', '2.2000 ± 0.2000', pm([7.0, 9.0, 11.0], 3), '–']
  diffs = [ssa[s][0] - van[s][0] for s in range(3)]  # -0.1, -0.2, -0.05
  assert rows['ssa'] == ['3', '10 (1.000%)', pm([1.9, 2.0, 2.35]), pm([6.0, 8.0, 10.5], 3),
                         pm(diffs, signed=True)]
  assert rows['ssa'][2] == '2.0833 ± 0.2363' and rows['ssa'][4] == '-0.1167 ± 0.0764'
  assert rows['ssa_layer'] == ['1', '2 (0.200%)', '2.1000 ± -', '8.500 ± -', '-0.1000 ± -']
  assert 'missing runs: ssa_layer_s0, ssa_layer_s2' in md


def test_mismatched_run_json_raises(tmp_path):
  root = str(tmp_path)
  run = next(r for r in sweep.plan('slope', 'small', [0], root) if r.variant == 'ssa_linear')
  os.makedirs(run.workdir)
  other = {**run.spec(), 'overrides': {'ssa.strategy': 'ssa', 'ssa.slope': 'linear',
                                       'ssa.linear_min_tau': 0.1}}
  with open(os.path.join(run.workdir, 'run.json'), 'w') as f:
    json.dump(other, f)
  with pytest.raises(sweep.SweepError, match='ssa_linear_s0.*different run.*overrides'):
    sweep.run_sweep('slope', 'small', '0', root, train_fn=_no_train, log=lambda s: None)
  # --set overrides are part of the run: the same workdir under another --set is refused too.
  run2 = next(r for r in sweep.plan('slope', 'small', [0], root, {'optim.lr': 1e-3})
              if r.variant == 'vanilla')
  os.makedirs(run2.workdir)
  with open(os.path.join(run2.workdir, 'run.json'), 'w') as f:
    json.dump({**run2.spec(), 'set': {}}, f)
  with pytest.raises(sweep.SweepError, match='vanilla_s0.*set'):
    sweep.check_workdir(run2)
  # A non-empty workdir that the runner did not make.
  run3 = next(r for r in sweep.plan('slope', 'small', [0], root) if r.variant == 'ssa')
  os.makedirs(run3.workdir)
  open(os.path.join(run3.workdir, 'metrics.jsonl'), 'w').close()
  with pytest.raises(sweep.SweepError, match='ssa_s0 is not empty but has no run.json'):
    sweep.check_workdir(run3)


def test_cli_print_commands_and_errors(tmp_path):
  cmd = [sys.executable, 'sweep.py', '--sweep=granularity', '--size=paper', '--seeds=0,3',
         f'--root={tmp_path}', '--print_commands', '--set=train.num_steps=5000',
         '--train_flags=--multihost']
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 6 and not os.listdir(tmp_path)  # nothing run, nothing written
  assert lines[5] == (f'python train.py --config=configs/sweeps.py:granularity,paper,ssa_layer '
                      f'--workdir={tmp_path}/paper/ssa_layer_s3 --config.seed=3 '
                      '--config.data.seed=3 --config.train.num_steps=5000 --multihost')
  bad = subprocess.run(cmd[:2] + ['--sweep=nope', '--print_commands'], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and 'embeddings' in bad.stderr


def test_runs_made_by_printed_commands_are_adopted_and_collected(tmp_path):
  root = str(tmp_path)
  run = next(r for r in sweep.plan('sharing', 'small', [1], root) if r.variant == 'vanilla')
  base = _tiny(4)
  # What `python train.py --config=... --workdir=W --config.seed=1 --config.data.seed=1` does:
  train_lib.train_and_evaluate(sweep.make_config(run, base), run.workdir)
  assert not os.path.exists(os.path.join(run.workdir, 'run.json'))
  res = sweep.load_result(run, base)  # built from metrics.jsonl (finished: eval at step 4)
  assert res['source'] == 'metrics.jsonl' and res['step'] == 4
  sweep.check_workdir(run, base)  # same config: adopted, run.json written
  assert json.load(open(os.path.join(run.workdir, 'run.json'))) == run.spec()
  # The same workdir is not adopted for another config (other seed) ...
  other = next(r for r in sweep.plan('sharing', 'small', [1], str(tmp_path / 'b'))
               if r.variant == 'vanilla')
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(run.workdir, other.workdir)
  os.remove(os.path.join(other.workdir, 'run.json'))
  with pytest.raises(sweep.SweepError, match='not empty but has no run.json'):
    sweep.check_workdir(other, _tiny(8))  # train.num_steps differs
  # ... and a result.json made under other --set overrides is not reported for this run.
  with open(os.path.join(run.workdir, 'result.json'), 'w') as f:
    json.dump({**run.spec(), 'set': {'optim.lr': 1.0}, 'loss': 1.0}, f)
  assert sweep.load_result(run, base) is None
