"""Evaluation units (ssa/evaluation/common.py Unit): chosen by config, run by runner.run in order.

Model: the byte-level tiny Transformer of tests/test_eval.py with configs/tiny.py (no checkpoint:
a Loaded-like object with config, model, variables, step, directory).
"""

import json
import math
import types

import numpy as np
import pytest

import ssa.data
from configs import tiny
from ssa.config_lib import ConfigError
from ssa.evaluation import (attention_stats, common, generation, passkey, perplexity, runner,
                            zero_shot)
from tests.test_eval import TOK, ZERO_SHOT_DOCS, _byte_model, _write

SWITCHES = {  # config.eval field -> (value that enables it, name of the unit it enables)
    'token_perplexity': (True, 'token_perplexity+word_perplexity'),
    'word_perplexity': (True, 'token_perplexity+word_perplexity'),
    'wikitext_jsonl': ('/some/wiki.jsonl', 'wikitext'),
    'zero_shot_dir': ('/some/tasks', 'zero_shot'),
    'passkey': (True, 'passkey'),
    'attention_stats': (True, 'attention_stats'),
}


def _all_off():
  c = tiny.get_config()
  for field in SWITCHES:
    c.eval[field] = None if isinstance(SWITCHES[field][0], str) else False
  return c


def _loaded(c, seed=0):
  model, variables = _byte_model(max_len=c.model.max_len, seed=seed)
  return types.SimpleNamespace(config=c, model=model, variables=variables, step=5,
                               directory='/runs/x/checkpoints')


class _Boom:
  name = 'boom'

  def __init__(self, on=True):
    self.on, self.calls = on, 0

  def enabled(self, config):
    return self.on

  def run(self, ctx):
    self.calls += 1
    raise RuntimeError('unit boom failed')


def test_every_eval_switch_enables_exactly_its_unit():
  assert [u for u in runner.UNITS if u.enabled(_all_off())] == []
  for field, (value, name) in SWITCHES.items():
    c = _all_off()
    c.eval[field] = value
    assert [u.name for u in runner.UNITS if u.enabled(c)] == [name], field
  c = _all_off()
  c.eval.word_perplexity = True
  c.data.dataset = 'passkey'   # synthetic: no documents, so no document perplexity
  assert [u.name for u in runner.UNITS if u.enabled(c)] == []
  assert runner.UNITS == (perplexity.SPLITS, perplexity.WIKITEXT, zero_shot.UNIT, passkey.UNIT,
                          attention_stats.UNIT)


def test_disabled_units_do_not_run_and_leave_no_keys(tmp_path):
  c = _all_off()
  c.eval.token_perplexity = True
  c.eval.ppl_batches = 1
  loaded = _loaded(c)
  off = _Boom(on=False)
  res = runner.run(c, loaded, str(tmp_path), log=lambda *_: None,
                   units=runner.UNITS + (off,))
  assert off.calls == 0
  assert list(res['metrics']) == ['validation:loss', 'validation:perplexity', 'validation:tokens',
                                  'validation:loss@1-32']   # T=32: one position bucket
  it, _ = ssa.data.make_eval_iterator(c, 0, 1, split='validation', num_batches=1)
  want = perplexity.token_perplexity(common.make_lm(c, loaded), it)
  assert res['metrics']['validation:loss'] == pytest.approx(want['loss'], rel=1e-6)
  assert res['metrics']['validation:tokens'] == want['tokens'] == 8 * 32
  assert res['figures'] == [] and sorted(res) == ['by_position', 'figures', 'meta', 'metrics',
                                                  'sequences']
  assert res['sequences']['validation']['buckets'] == ['1-32']
  assert len(res['sequences']['validation']['nll']) == 8   # one batch of 8 rows
  assert sorted(p.name for p in tmp_path.iterdir()) == ['eval_results.json']
  saved = json.loads((tmp_path / 'eval_results.json').read_text())
  assert saved['metrics'] == res['metrics'] and saved['meta']['complete'] is True
  assert saved['meta']['step'] == 5 and saved['meta']['max_len'] == 32


def test_a_failing_unit_leaves_earlier_metrics_and_complete_false(tmp_path):
  c = _all_off()
  c.eval.token_perplexity = True
  c.eval.ppl_batches = 1
  c.eval.splits = ('validation', 'train')
  boom = _Boom()
  logs = []
  with pytest.raises(RuntimeError, match='unit boom failed'):
    runner.run(c, _loaded(c), str(tmp_path), log=logs.append,
               units=(perplexity.SPLITS, boom, attention_stats.UNIT))
  assert boom.calls == 1
  saved = json.loads((tmp_path / 'eval_results.json').read_text())
  assert saved['meta']['complete'] is False and saved['meta']['seconds'] > 0
  assert list(saved['metrics']) == [f'{s}:{k}' for s in ('validation', 'train')
                                    for k in ('loss', 'perplexity', 'tokens', 'loss@1-32')]
  for s in ('validation', 'train'):
    assert math.exp(saved['metrics'][f'{s}:loss']) == pytest.approx(
        saved['metrics'][f'{s}:perplexity'], rel=1e-9)
  # the runner's progress line for the unit that ran (the failing one is announced, never done),
  # per split the loss line and the note that 256 tokens are below the standard's 100k; no 'wrote'
  progress = [line for line in logs if line.startswith('[')]
  assert progress[0] == '[1/2] token_perplexity+word_perplexity ...'
  assert progress[1].startswith('[1/2] token_perplexity+word_perplexity done in ')
  assert progress[2:] == ['[2/2] boom ...']  # attention_stats is off in this config
  logs = [line for line in logs if not line.startswith('[')]
  assert [line.split(':')[0] for line in logs] == ['validation', 'validation', 'train', 'train']
  assert all('below the 100000' in line for line in logs[1::2])
  assert not (tmp_path / 'attention_stats.json').exists()   # the unit after boom never ran


def test_units_on_a_context_add_their_keys_and_files(tmp_path):
  c = _all_off()
  for task, recs in ZERO_SHOT_DOCS.items():
    _write(tmp_path, task, recs)
  page = ' = Title = \n Some text @-@ here , and 3 @.@ 5 . \n'
  (tmp_path / 'wiki.jsonl').write_text(json.dumps({'page': page}) + '\n')
  c.eval.wikitext_jsonl = str(tmp_path / 'wiki.jsonl')
  c.eval.zero_shot_dir = str(tmp_path)
  c.eval.zero_shot_tasks = ('piqa', 'winogrande')
  logs = []
  ctx = common.EvalContext.create(c, _loaded(c), str(tmp_path), logs.append)
  perplexity.WIKITEXT.run(ctx)
  want = perplexity.document_perplexity(ctx.scorer, TOK, [page], detokenize=True)
  assert ctx.metrics == {'wikitext:word_perplexity': want['word_perplexity'],
                         'wikitext:byte_perplexity': want['byte_perplexity'],
                         'wikitext:bits_per_byte': want['bits_per_byte']}
  zero_shot.UNIT.run(ctx)
  assert ctx.metrics['piqa:n'] == len(ZERO_SHOT_DOCS['piqa'])
  assert set(ctx.metrics) - {'wikitext:word_perplexity', 'wikitext:byte_perplexity',
                             'wikitext:bits_per_byte'} == {
      'piqa:acc', 'piqa:acc_norm', 'piqa:n', 'winogrande:acc', 'winogrande:n'}
  table = (tmp_path / 'zero_shot.md').read_text()
  assert table == ctx.results['zero_shot_table'] + '\n'
  assert table.splitlines()[2].startswith(f'| gpt2-tiny ssa | {want["word_perplexity"]:.2f} |')
  assert logs == [f'wikitext: word ppl {want["word_perplexity"]:.3f}', ctx.results['zero_shot_table']]


def test_context_texts_are_read_once_and_none_for_synthetic_data(monkeypatch, tmp_path):
  c = _all_off()
  c.eval.word_ppl_max_docs = 1
  ctx = common.EvalContext.create(c, _loaded(c), str(tmp_path))
  calls = []
  monkeypatch.setattr(common, 'dataset_texts',
                      lambda cfg, split, limit: calls.append((split, limit)) or [f'{split} doc'])
  assert ctx.texts('validation') == ['validation doc'] and ctx.texts('validation') is ctx.texts(
      'validation')
  assert ctx.texts('train') == ['train doc']
  assert calls == [('validation', 1), ('train', 1)]
  c.data.dataset = 'graph'
  assert ctx.texts('validation') is None


def test_shared_helpers_are_importable_from_their_old_places():
  assert perplexity.read_jsonl is common.read_jsonl and zero_shot.check_limit is common.check_limit
  assert runner.complete is generation.complete
  assert runner.attention_figures is attention_stats.attention_figures
  assert (runner.eval_splits, runner.write_results, runner.make_lm) == (
      common.eval_splits, common.write_results, common.make_lm)
  with pytest.raises(ValueError, match=r'eval.zero_shot_limit=0'):
    common.check_limit(0, 'eval.zero_shot_limit')
  c = tiny.get_config()
  c.eval.max_len = 64   # learned positions: longer than model.max_len=32 is an error
  with pytest.raises(ConfigError, match=r'eval.max_len=64 exceeds model.max_len=32'):
    common.make_lm(c, _loaded(tiny.get_config()))
  np.testing.assert_equal(common.eval_splits(c), ['validation'])
