"""The lm-evaluation-harness adapter (ssa/evaluation/harness.py) run by the real harness
(lm-eval, pinned in requirements-dev.txt) on local tasks in its own YAML + JSONL format
(tests/harness_tasks/), against a direct computation: one full forward per request, the
harness's own rolling-window functions."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

import lm_eval.utils  # the real harness: a test dependency, never skipped
from ssa.data import get_tokenizer
from ssa.evaluation import harness, loading, zero_shot
from tests.fixtures import make_legacy_fixture as fixture
from tests.test_convert_gguf import _real_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = os.path.join(ROOT, 'tests', 'harness_tasks')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A trained SSA workdir (the committed tiny byte-level fixture run, copied)."""
  wd = str(tmp_path_factory.mktemp('harness') / 'ssa')
  shutil.copytree(os.path.join(fixture.OUT, 'ssa'), wd)
  return wd


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
  monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL files relative to the repository


def _reference(loaded):
  """log p(continuation | context) by one forward pass over context + continuation."""
  apply = jax.jit(loaded.model.apply)

  def ll(ctx, cont):
    ids = (list(ctx) + list(cont))[-(loaded.model.cfg.max_len + 1):]
    logits = np.asarray(apply(loaded.variables, np.asarray([ids[:-1]], np.int32))[0], np.float64)
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    n = len(cont)
    return float(sum(logp[-n + i, t] for i, t in enumerate(ids[-n:])))
  return ll


def _docs(name):
  with open(os.path.join(TASKS, f'{name}.jsonl')) as f:
    return [json.loads(l) for l in f]


def test_harness_scores_local_tasks_as_a_direct_computation(run):
  out = harness.evaluate(tasks=['ssa_local_choice', 'ssa_local_rolling'], workdir=run,
                         include_path=TASKS, log_samples=True, disable_tqdm=True)
  loaded = loading.load(None, workdir=run)
  tok = get_tokenizer(loaded.config.data.tokenizer)
  assert harness.prefix_token(tok) == tok.eos_id  # the byte tokenizer has no BOS
  ll = _reference(loaded)
  # Multiple choice: per-choice log-likelihoods, then acc over the 8 documents.
  docs, correct = _docs('choice'), []
  samples = {s['doc_id']: s for s in out['samples']['ssa_local_choice']}
  assert len(samples) == len(docs)
  for i, d in enumerate(docs):
    context = f'Question: {d["question"]}\nAnswer:'
    want = [ll(*zero_shot.encode_pair(tok, context, ' ' + c)) for c in d['choices']]
    got = [r[0][0] for r in samples[i]['resps']]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    correct.append(int(np.argmax(want)) == d['label'])
  assert out['results']['ssa_local_choice']['acc,none'] == pytest.approx(np.mean(correct))
  # Rolling perplexity: the harness's windows over prefix + document, each scored in full.
  total, words = 0.0, 0
  for d in _docs('rolling'):
    ids = tok.encode(d['text'])
    for ctx, cont in map(lm_eval.utils.make_disjoint_window, lm_eval.utils.get_rolling_token_windows(
        token_list=ids, prefix_token=tok.eos_id, max_seq_len=loaded.model.cfg.max_len,
        context_len=1)):
      total += ll(ctx, cont)
    words += len(d['text'].split())
  assert len(ids) > loaded.model.cfg.max_len  # more than one window per document
  got = out['results']['ssa_local_rolling']['word_perplexity,none']
  assert got == pytest.approx(float(np.exp(-total / words)), rel=1e-4)


def test_harness_command_line(run, tmp_path, capsys):
  path = str(tmp_path / 'results.json')
  assert harness.main([f'--workdir={run}', '--tasks=ssa_local_choice', f'--include_path={TASKS}',
                       '--limit=4', f'--output={path}', '--no_progress']) == 0
  printed = capsys.readouterr().out
  assert 'ssa_local_choice' in printed and 'acc' in printed
  res = json.load(open(path))['results']['ssa_local_choice']
  assert 0.0 <= res['acc,none'] <= 1.0
  # Bad input: one line, status 2.
  assert harness.main([f'--workdir={run}', '--tasks=no_such_task', f'--include_path={TASKS}']) == 2
  err = capsys.readouterr().err
  assert "unknown harness task(s) ['no_such_task']" in err and len(err.strip().splitlines()) == 1
  assert harness.main([f'--workdir={tmp_path / "missing"}', '--tasks=ssa_local_choice',
                       f'--include_path={TASKS}']) == 2
  err = capsys.readouterr().err
  assert str(tmp_path / 'missing') in err and len(err.strip().splitlines()) == 1


def test_model_args_reach_the_registered_model(run):
  cls = harness.harness_class()
  from lm_eval.api import registry  # pylint: disable=g-import-not-at-top
  assert registry.get_model('ssa') is cls
  lm = cls.create_from_arg_string(f'workdir={run},batch_size=4,stride=16')
  assert lm.scorer.batch_size == 4 and lm.stride == 16 and lm.tokenizer_name == 'byte'
  with pytest.raises(ValueError, match=r"unknown model_args \['device_map'\]"):
    cls.create_from_arg_string(f'workdir={run},device_map=auto')
  with pytest.raises(ValueError, match='exactly one of model_args workdir'):
    cls.create_from_arg_string('batch_size=4')


def test_tokenizers_carry_the_bos_the_harness_starts_documents_with():
  gguf = get_tokenizer(f'gguf:{_real_gguf()}')
  assert (gguf.bos_id, gguf.eos_id) == (1, 2)  # SmolLM2: <|im_start|> / <|im_end|>
  assert harness.prefix_token(gguf) == 1
  gpt2 = get_tokenizer('gpt2')
  assert harness.prefix_token(gpt2) == gpt2.bos_id == 50256


def test_adapter_equals_the_harness_hf_backend_on_the_remote_code_export(run, tmp_path):
  """The same SSA weights scored twice by the real harness: through the project's adapter
  (model 'ssa', JAX) and through lm-eval's own HF backend on the export.py --format=hf_remote
  directory (transformers + the exported PyTorch modelling file): equal per-request
  log-likelihoods, accuracy and rolling word perplexity."""
  import lm_eval  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  from ssa.convert.export import export  # pylint: disable=g-import-not-at-top
  # remote code is copied into tests/conftest.py's per-process HF_MODULES_CACHE, not ~/.cache
  out = str(tmp_path / 'export')
  assert export(loading.load(None, workdir=run), out, fmt='hf_remote') == 'hf_remote'
  tasks = ['ssa_local_choice', 'ssa_local_rolling']
  ours = harness.evaluate(tasks=tasks, workdir=run, include_path=TASKS, log_samples=True,
                          disable_tqdm=True, bootstrap_iters=0)
  hf = lm_eval.simple_evaluate(
      model='hf', model_args=f'pretrained={out},trust_remote_code=True,dtype=float32',
      tasks=tasks, task_manager=TaskManager(include_path=TASKS), log_samples=True,
      batch_size=4, device='cpu', verbosity='WARNING', bootstrap_iters=0)
  ll = lambda r: r[0][0] if isinstance(r[0], (list, tuple)) else r[0]  # (ll, greedy) or ll
  for task in tasks:
    a = {s['doc_id']: [ll(r) for r in s['resps']] for s in ours['samples'][task]}
    b = {s['doc_id']: [ll(r) for r in s['resps']] for s in hf['samples'][task]}
    assert a and sorted(a) == sorted(b)
    for d in a:
      np.testing.assert_allclose(a[d], b[d], rtol=1e-4, err_msg=f'{task} doc {d}')
  assert ours['results']['ssa_local_choice']['acc,none'] == hf['results']['ssa_local_choice'][
      'acc,none']
  assert ours['results']['ssa_local_rolling']['word_perplexity,none'] == pytest.approx(
      hf['results']['ssa_local_rolling']['word_perplexity,none'], rel=1e-4)
