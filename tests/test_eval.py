"""Evaluation: perplexity, rolling windows, zero-shot scoring, passkey, generation, attention stats.

Models: tiny Transformers (tests/ssa_testlib.py) and a bigram table with known log-likelihoods
wrapped in the same `LM` interface.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssa.data.tokenizers import ByteTokenizer
from ssa.data.synthetic import passkey_recover
from ssa.evaluation import attention_stats, collect, generation, passkey, perplexity, zero_shot
from ssa.evaluation.scoring import LM, Scorer, rolling_windows
from ssa import plots
from tests import ssa_testlib as tl

TOK = ByteTokenizer()
V = TOK.vocab_size  # 258


def _byte_model(max_len=16, seed=0, **ssa):
  return tl.build('gpt2', seed=seed, model_overrides={'vocab_size': V, 'max_len': max_len}, **ssa)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(
      -1, keepdims=True)


# ----------------------------------------------------------------------------- perplexity

def test_token_perplexity_is_exp_mean_weighted_nll():
  model, variables = _byte_model()
  lm = LM.from_model(model, variables)
  rng = np.random.RandomState(0)
  batches = []
  for _ in range(3):
    toks = rng.randint(0, 256, size=(2, 17)).astype(np.int32)
    w = (rng.rand(2, 16) > 0.3).astype(np.float32)
    batches.append({'inputs': toks[:, :-1], 'targets': toks[:, 1:], 'weights': w,
                    'segment_ids': np.ones((2, 16), np.int32),
                    'positions': np.tile(np.arange(16, dtype=np.int32), (2, 1))})
  got = perplexity.token_perplexity(lm, batches)
  nll = wsum = 0.0
  for b in batches:
    lp = _log_softmax(jax.jit(model.apply)(variables, b['inputs']))
    t = np.take_along_axis(lp, b['targets'][..., None], -1)[..., 0]
    nll -= (t * b['weights']).sum()
    wsum += b['weights'].sum()
  assert got['tokens'] == wsum
  np.testing.assert_allclose(got['loss'], nll / wsum, rtol=1e-5)
  np.testing.assert_allclose(got['perplexity'], math.exp(nll / wsum), rtol=1e-5)


def test_token_perplexity_per_sequence_and_position_bucket():
  # Rows of 40 tokens (buckets 1-32, 33-40); in row 2 a new document starts at index 20, so its
  # positions restart: those targets count in bucket 1-32 by their position in the document.
  model, variables = _byte_model(max_len=64)
  lm = LM.from_model(model, variables)
  rng = np.random.RandomState(1)
  toks = rng.randint(0, 256, size=(2, 41)).astype(np.int32)
  pos = np.tile(np.arange(40, dtype=np.int32), (2, 1))
  pos[1, 20:] = np.arange(20)
  w = np.ones((2, 40), np.float32)
  w[0, -3:] = 0
  batch = {'inputs': toks[:, :-1], 'targets': toks[:, 1:], 'weights': w, 'positions': pos,
           'segment_ids': np.array([[1] * 40, [1] * 20 + [2] * 20], np.int32)}
  got = perplexity.token_perplexity(lm, [batch])
  seg = batch['segment_ids']
  lp = _log_softmax(jax.jit(lambda v, x: model.apply(v, x, positions=pos, segment_ids=seg))(
      variables, batch['inputs']))
  nll = -np.take_along_axis(lp, batch['targets'][..., None], -1)[..., 0] * w
  np.testing.assert_allclose(got['sequence_nll'], nll.sum(1), rtol=1e-5)
  assert got['sequence_tokens'] == [37.0, 40.0]
  early = (pos + 1 <= 32)
  assert got['by_position']['1-32']['tokens'] == (w * early).sum() == 32 + 40
  np.testing.assert_allclose(got['by_position']['1-32']['loss'],
                             (nll * early).sum() / (w * early).sum(), rtol=1e-5)
  np.testing.assert_allclose(got['by_position']['33-40']['loss'],
                             (nll * ~early).sum() / (w * ~early).sum(), rtol=1e-5)
  np.testing.assert_allclose(got['loss'], nll.sum() / w.sum(), rtol=1e-5)
  assert got['buckets'] == ['1-32', '33-40']
  np.testing.assert_allclose(np.sum(got['sequence_bucket_nll'], 1), got['sequence_nll'])
  assert got['sequence_bucket_tokens'] == [[32.0, 5.0], [40.0, 0.0]]


@pytest.mark.parametrize('n,L,stride', [(1, 4, None), (4, 4, None), (5, 4, None), (23, 4, None),
                                        (23, 4, 1), (23, 4, 3), (30, 8, 5)])
def test_rolling_windows_score_every_token_once_with_bounded_context(n, L, stride):
  toks = list(range(100, 100 + n))
  covered = []
  for ctx, cont in rolling_windows(toks, -1, L, stride):
    whole = ctx + cont
    assert len(whole) - 1 <= L          # the model reads at most L tokens
    assert whole[-len(cont):] == cont
    covered += cont
  assert covered == toks


def _brute_force_rolling_ll(model, variables, toks, L, stride, prefix):
  """Each token scored on its own context (derived independently of rolling_windows); contexts
  are right-padded to L (causal model: padding after the last context token changes nothing)."""
  s = L if stride is None else stride
  rows, lasts = [], []
  for i, t in enumerate(toks):
    if i < L:
      ctx = [prefix] + toks[:i]
    else:
      k = -(-(i + 1 - L) // s)                 # window index after the first
      end = min(L + k * s, len(toks))
      ctx = toks[end - L - 1:i]
    assert 1 <= len(ctx) <= L
    rows.append(ctx + [0] * (L - len(ctx)))
    lasts.append(len(ctx) - 1)
  logits = jax.jit(model.apply)(variables, jnp.asarray(rows, jnp.int32))
  lp = _log_softmax(np.asarray(logits)[np.arange(len(toks)), lasts])
  return float(lp[np.arange(len(toks)), toks].sum())


@pytest.mark.parametrize('stride', [None, 5])
def test_rolling_word_perplexity_equals_brute_force(stride):
  L = 16
  model, variables = _byte_model(max_len=L)
  text = 'the quick brown fox jumps over the lazy dog, twice: fox dog fox.'
  toks = TOK.encode(text)
  assert len(toks) > 3 * L
  scorer = Scorer(LM.from_model(model, variables), batch_size=3, pad_id=TOK.pad_id)
  got = perplexity.document_perplexity(scorer, TOK, [text], stride=stride)
  want_ll = _brute_force_rolling_ll(model, variables, toks, L, stride, TOK.eos_id)
  np.testing.assert_allclose(got['loglikelihood'], want_ll, rtol=1e-5)
  words = len(text.split())
  np.testing.assert_allclose(got['word_perplexity'], math.exp(-want_ll / words), rtol=1e-4)
  np.testing.assert_allclose(got['bits_per_byte'], -want_ll / len(text) / math.log(2), rtol=1e-5)


def test_wikitext_detokenizer_and_word_count_follow_the_harness():
  page = ' = Title = \n Some text @-@ here , and 3 @.@ 5 . \n'
  assert perplexity.wikitext_detokenizer(page) == ' = Title =\nSome text-here, and 3.5.\n'
  assert perplexity.count_words(page) == len(page.split()) + 2  # leading/trailing '' pieces


# ----------------------------------------------------------------------------- zero-shot

def _bigram_lm():
  """log p(next | prev): 'z' has p=1/2 after anything; after 'o' and 't' the space has p=1/2."""
  p = np.full([V, V], 0.5 / (V - 1))
  p[:, ord('z')] = 0.5
  for c in 'ot':
    p[ord(c), :] = 0.5 / (V - 1)
    p[ord(c), ord(' ')] = 0.5
  logp = np.log(p).astype(np.float32)
  return LM(lambda table, x: table[x], jnp.asarray(logp), max_len=64), logp


def _bigram_ll(logp, ctx, cont):
  seq = list(ctx) + list(cont)
  return sum(float(logp[seq[i - 1], seq[i]]) for i in range(len(ctx), len(seq)))


def _write(d, task, recs):
  with open(os.path.join(d, f'{task}.jsonl'), 'w') as f:
    for r in recs:
      f.write(json.dumps(r) + '\n')


ZERO_SHOT_DOCS = {
    'lambada_standard': [{'text': 'hello zzzz'}, {'text': 'hello abc'}],
    # sol1 has cheap z's -> acc picks it (label 0).
    'piqa': [{'goal': 'sleep', 'sol1': 'zzzz', 'sol2': 'ab', 'label': 0},
             {'goal': 'eat', 'sol1': 'ab', 'sol2': 'zzzz', 'label': 1}],
    # ending 0 is long but z-rich: acc picks the short ending 1, acc_norm (per char) picks 0.
    'hellaswag': [{'activity_label': 'Cooking', 'ctx_a': 'a man', 'ctx_b': 'stirs [title] it',
                   'endings': ['zzzzzzzzzzabc', 'q'], 'label': '0'}],
    # partial scoring: context 'The cat' ends in 't' (space likely next) beats 'The dog'.
    'winogrande': [{'sentence': 'The _ ran zzz.', 'option1': 'cat', 'option2': 'dog',
                    'answer': '1'},
                   {'sentence': 'A _ sat.', 'option1': 'dog', 'option2': 'cat', 'answer': '2'}],
    'arc_easy': [{'question': 'Which?', 'choices': {'text': ['ab', 'zz'], 'label': ['A', 'B']},
                  'answerKey': 'B'}],
    'arc_challenge': [{'question': 'Which?', 'choices': {'text': ['zzzzzzzzzzabc', 'q', 'xy'],
                                                         'label': ['1', '2', '3']},
                       'answerKey': '1'}],
}


def test_zero_shot_scores_follow_harness_definitions(tmp_path):
  lm, logp = _bigram_lm()
  scorer = Scorer(lm, batch_size=4)
  for task, recs in ZERO_SHOT_DOCS.items():
    _write(tmp_path, task, recs)
  ll_fn = lambda reqs: scorer.loglikelihood(reqs, prefix_token=TOK.eos_id)  # noqa: E731
  # The scorer's log-likelihoods are the table's, including is_greedy.
  reqs = [zero_shot.encode_pair(TOK, 'hello', ' zzzz'), zero_shot.encode_pair(TOK, 'hello ', 'abc')]
  assert reqs[1] == (TOK.encode('hello'), TOK.encode(' abc'))  # trailing space moves over
  got = ll_fn(reqs)
  for (ctx, cont), (ll, greedy) in zip(reqs, got):
    np.testing.assert_allclose(ll, _bigram_ll(logp, ctx, cont), rtol=1e-5)
  assert [g for _, g in got] == [True, False]

  res = zero_shot.evaluate_tasks(str(tmp_path), zero_shot.TASKS, ll_fn, TOK)
  lam_ll = [_bigram_ll(logp, TOK.encode('hello'), TOK.encode(c)) for c in (' zzzz', ' abc')]
  expected = {'lambada_standard:acc': 0.5,
              'lambada_standard:perplexity': math.exp(-np.mean(lam_ll)),
              'piqa:acc': 1.0, 'piqa:acc_norm': 1.0,
              'hellaswag:acc': 0.0, 'hellaswag:acc_norm': 1.0,
              'winogrande:acc': 1.0,
              'arc_easy:acc': 1.0, 'arc_easy:acc_norm': 1.0,
              'arc_challenge:acc': 0.0, 'arc_challenge:acc_norm': 1.0}
  for k, v in expected.items():
    np.testing.assert_allclose(res[k], v, rtol=1e-5, err_msg=k)
  assert res['piqa:n'] == 2 and 'winogrande:acc_norm' not in res
  table = zero_shot.markdown_table({'run': res})
  header = table.splitlines()[0]
  assert header.index('LMB. ppl') < header.index('PIQA') < header.index('Hella.') < \
      header.index('Wino.') < header.index('ARC-e') < header.index('ARC-c')
  assert '| run | – |' in table  # wikitext not run -> dash


def test_hellaswag_request_text_matches_harness_preprocessing():
  doc = zero_shot.make_doc('hellaswag', ZERO_SHOT_DOCS['hellaswag'][0], 'x')
  assert doc.contexts[0] == 'Cooking: a man Stirs. it'
  assert doc.continuations == [' zzzzzzzzzzabc', ' q'] and doc.gold == 0
  w = zero_shot.make_doc('winogrande', ZERO_SHOT_DOCS['winogrande'][0], 'x')
  assert w.contexts == ['The cat', 'The dog'] and w.continuations == [' ran zzz.'] * 2


def test_zero_shot_bad_input_names_file_and_field(tmp_path):
  lm, _ = _bigram_lm()
  ll_fn = Scorer(lm).loglikelihood
  with pytest.raises(FileNotFoundError, match='piqa.jsonl'):
    zero_shot.evaluate_tasks(str(tmp_path), ['piqa'], ll_fn, TOK)
  _write(tmp_path, 'piqa', [{'goal': 'g', 'sol1': 'a', 'label': 0}])
  with pytest.raises(ValueError, match=r"piqa.jsonl:1.*\['sol2'\]"):
    zero_shot.evaluate_tasks(str(tmp_path), ['piqa'], ll_fn, TOK)
  _write(tmp_path, 'arc_easy', [{'question': 'q', 'choices': {'text': ['a'], 'label': ['A']},
                                 'answerKey': 'C'}])
  with pytest.raises(ValueError, match="answerKey 'C'"):
    zero_shot.evaluate_tasks(str(tmp_path), ['arc_easy'], ll_fn, TOK)
  with pytest.raises(ValueError, match='Unknown zero-shot task'):
    zero_shot.evaluate_tasks(str(tmp_path), ['mmlu'], ll_fn, TOK)


# ----------------------------------------------------------------------------- passkey

PK_LEN = 300  # the byte-level passkey template needs ~260 tokens


def test_passkey_oracle_scores_one_and_random_model_scores_chance(tmp_path):
  def oracle(prompts, n):
    return [TOK.encode(f' {passkey_recover(np.asarray(p), TOK)}')[:n] for p in prompts]
  r = passkey.evaluate_passkey(oracle, TOK, [PK_LEN, PK_LEN + 20], [0.0, 0.5, 1.0], 3)
  assert r['mean_accuracy'] == 1.0 and np.shape(r['accuracy']) == (2, 3)
  model, variables = _byte_model(max_len=PK_LEN + 20)
  gen = generation.generate_fn(LM.from_model(model, variables), pad_id=TOK.pad_id)
  r = passkey.evaluate_passkey(gen, TOK, [PK_LEN], [0.0, 1.0], 4, batch_size=4)
  assert r['mean_accuracy'] <= 0.25   # chance is 1e-5
  path = plots.passkey_heatmap(r, str(tmp_path / 'passkey.png'))
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_passkey_with_decoys_scores_the_key_and_counts_decoy_answers():
  import re
  def first_number(prompts, n):   # token identity: the first five-digit number in the prompt
    return [TOK.encode(' ' + re.search(r'\d{5}', TOK.decode(p)).group(0))[:n] for p in prompts]
  def oracle(prompts, n):
    return [TOK.encode(f' {passkey_recover(np.asarray(p), TOK)}')[:n] for p in prompts]
  T = 480
  r = passkey.evaluate_passkey(oracle, TOK, [T], [0.5], 6, decoys=3)
  assert r['mean_accuracy'] == 1.0 and r['mean_decoy_rate'] == 0.0 and r['decoys'] == 3
  r = passkey.evaluate_passkey(first_number, TOK, [T], [0.0, 1.0], 6, decoys=3)
  acc, fooled = np.asarray(r['accuracy']), np.asarray(r['decoy_rate'])
  np.testing.assert_allclose(acc + fooled, 1.0)     # each answer is the key or a decoy's number
  assert acc[0, 0] == 1.0                           # key at depth 0: it is the first number
  assert fooled[0, 1] >= 0.5                        # key at the end: usually a decoy comes first
  assert 'decoy_rate' not in passkey.evaluate_passkey(oracle, TOK, [PK_LEN], [0.5], 2)


def test_passkey_compact_template_is_scored_and_recorded():
  def oracle(prompts, n):
    return [TOK.encode(f' {passkey_recover(np.asarray(p), TOK)}')[:n] for p in prompts]
  r = passkey.evaluate_passkey(oracle, TOK, [160], [0.0, 1.0], 4, decoys=3, template='compact')
  assert r['mean_accuracy'] == 1.0 and r['mean_decoy_rate'] == 0.0 and r['template'] == 'compact'
  prompt = passkey.passkey_prompts(TOK, 160, 0.5, 1, decoys=3, template='compact')[0][0]
  assert len(prompt) == 160 - 5 and 'Remember it' not in TOK.decode(prompt)  # T + 1 - 6 answer bytes
  assert 'template' not in passkey.evaluate_passkey(oracle, TOK, [PK_LEN], [0.5], 1)


# ----------------------------------------------------------------------------- generation

def test_kv_cache_sampling_at_temperature_zero_equals_full_forward_argmax():
  model, variables = _byte_model(max_len=32, seed=3)
  lm = LM.from_model(model, variables)
  prompts = [TOK.encode('hello'), TOK.encode('a much longer prompt'), TOK.encode('x')]
  gen = generation.Generator(model, variables, pad_id=TOK.pad_id)
  got, got_logits = gen.sample(prompts, 8, temperature=0.0, return_logits=True)
  want, want_logits = generation.greedy_decode(lm, prompts, 8, return_logits=True)
  assert got == want
  for a, b in zip(got_logits, want_logits):
    assert tl.rel_err(a, b) < 1e-4
  # top_k=1 / tiny top_p sample the argmax whatever the temperature.
  assert gen.sample(prompts, 8, temperature=1.5, top_k=1, rng=jax.random.PRNGKey(1)) == want
  assert gen.sample(prompts, 8, temperature=1.0, top_p=1e-6, rng=jax.random.PRNGKey(2)) == want
  # Sequences may end exactly at max_len + 1 tokens (the last one is never read).
  assert len(gen.sample([TOK.encode('abc')], 30, temperature=0.0)[0]) == 30
  with pytest.raises(ValueError, match='exceeds max_len'):
    gen.sample([TOK.encode('abc')], 31)
  # eos cut
  eos = want[1][3]
  out = gen.sample(prompts, 8, temperature=0.0, eos_id=eos)
  assert out == [w[:w.index(eos) + 1] if eos in w else w for w in want]
  assert out[1] == want[1][:want[1].index(eos) + 1]


def test_filter_logits_top_k_top_p_and_temperature_sampling_frequencies():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda f: np.asarray(f > jnp.finfo(jnp.float32).min / 2)[0].tolist()  # noqa: E731
  assert keep(generation.filter_logits(logits, 1.0, top_k=2)) == [True, True, False, False]
  assert keep(generation.filter_logits(logits, 1.0, top_p=0.5)) == [True, False, False, False]
  assert keep(generation.filter_logits(logits, 1.0, top_p=0.81)) == [True, True, True, False]
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  s = jax.vmap(lambda k: generation.sample_logits(k, logits, 2.0))(keys)[:, 0]
  freq = np.bincount(np.asarray(s), minlength=4) / len(keys)
  p = np.array([0.5, 0.3, 0.15, 0.05]) ** 0.5
  np.testing.assert_allclose(freq, p / p.sum(), atol=0.015)


# ----------------------------------------------------------------------------- attention stats

def test_attention_statistics_and_figures(tmp_path):
  T = 16
  runs = {}
  for name, kw in (('vanilla', dict(strategy='vanilla')), ('ssa', {})):
    model, variables = _byte_model(max_len=T, **kw)
    toks = np.asarray([TOK.encode('To be, or not to be: that is')[:T],
                       TOK.encode('the question. Whether tis nobler')[:T]], np.int32)
    probs, taus = attention_stats.capture(model, variables, toks)
    assert sorted(probs) == ['layer_0', 'layer_1']
    p = probs['layer_0']
    assert p.shape == (2, 4, T, T)
    curves = attention_stats.dilution_curves(p)
    for t in range(T):
      np.testing.assert_allclose(curves[t, :t + 1].sum(), 1.0, rtol=1e-5)
      assert np.all(curves[t, t + 1:] == 0) and np.all(np.diff(curves[t, :t + 1]) <= 1e-7)
    np.testing.assert_allclose(curves[5], np.sort(p[:, :, 5], -1)[..., ::-1].mean((0, 1)),
                               rtol=1e-6)
    ent = attention_stats.entropy_by_position(p)
    assert ent[0] == pytest.approx(0.0, abs=1e-6)
    assert np.all(ent <= np.log(np.arange(1, T + 1)) + 1e-5)
    stats = attention_stats.attention_statistics(model, variables, toks, TOK)
    runs[name] = stats
    if name == 'ssa':
      tq = taus['layer_1']['q']
      np.testing.assert_allclose(stats['temperature']['layer_1']['q'], tq.mean((0, 2)), rtol=1e-6)
      tt = stats['token_temperature']
      assert tt['pieces'][:2] == ['T', 'o'] and len(tt['tau_q']) == T
    else:
      assert 'token_temperature' not in stats and not any(stats['temperature'].values())
  f = plots.dilution_figure({k: v['dilution'] for k, v in runs.items()}, str(tmp_path / 'd.png'))
  g = plots.entropy_figure({k: v['entropy'] for k, v in runs.items()}, str(tmp_path / 'e.png'))
  h = plots.temperature_figure(runs['ssa']['temperature'], str(tmp_path / 't.png'))
  tt = runs['ssa']['token_temperature']
  i = plots.token_temperature_png(tt['pieces'], tt['tau_q'], str(tmp_path / 'f1.png'))
  j = plots.token_temperature_html(tt['pieces'], tt['tau_q'], str(tmp_path / 'f1.html'))
  for path in (f, g, h, i):
    assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  html_text = open(j).read()
  assert html_text.count('<span') == T and 'title="' in html_text


# ----------------------------------------------------------------------------- collection

def test_collect_gathers_runs_into_one_table(tmp_path, capsys):
  for name, ppl in (('vanilla', 30.0), ('ssa', 25.5)):
    d = tmp_path / name / 'eval'
    d.mkdir(parents=True)
    (d / 'eval_results.json').write_text(json.dumps(
        {'metrics': {'validation:perplexity': ppl, 'piqa:acc': 0.6}}))
  rows = collect.collect([str(tmp_path / 'vanilla'), f'SSA={tmp_path / "ssa"}'])
  assert list(rows) == ['vanilla', 'SSA']
  md = collect.table(rows)
  assert md.splitlines()[0] == '| run | piqa:acc | validation:perplexity |'
  assert '| SSA | 0.6 | 25.5 |' in md
  assert collect.main([str(tmp_path / '*'), '--paper']) == 0
  out = capsys.readouterr().out
  assert 'PIQA acc' in out and '| ssa |' in out and '| vanilla |' in out
  assert collect.main([str(tmp_path / 'missing')]) == 2


def test_harness_adapter_scores_a_request_as_the_bigram_model():
  from lm_eval.api.instance import Instance  # pylint: disable=g-import-not-at-top
  from ssa.evaluation import harness  # pylint: disable=g-import-not-at-top
  lm, logp = _bigram_lm()
  h = harness.make_harness_lm(lm=lm, tokenizer=TOK)
  req = Instance('loglikelihood', {}, ('hello', ' zzzz'), 0)
  (ll, greedy), = h.loglikelihood([req])
  np.testing.assert_allclose(ll, _bigram_ll(logp, TOK.encode('hello'), TOK.encode(' zzzz')),
                             rtol=1e-5)
  assert greedy


# ----------------------------------------------------------------------------- review fixes

def test_passkey_at_max_len_with_varying_answer_token_counts():
  """GPT-2 BPE gives five-digit answers of 2 or 3 tokens: every generate call must fit T ==
  max_len as Generator.sample requires (longest prompt + n - 1 <= max_len)."""
  from ssa.data import get_tokenizer  # pylint: disable=g-import-not-at-top
  gpt2 = get_tokenizer('gpt2')
  T, num = 80, 12
  lens = {c[2] for c in passkey.passkey_prompts(gpt2, T, 0.5, num)}
  assert len(lens) > 1, lens  # the test needs answers of different token counts
  calls = []

  def oracle(prompts, n):  # greedy decoder with Generator.sample's length rule at max_len = T
    longest = max(len(p) for p in prompts)
    if longest + n - 1 > T:
      raise ValueError(f'longest prompt ({longest}) + {n} - 1 exceeds max_len={T}')
    calls.append(n)
    return [gpt2.encode(f' {passkey_recover(np.asarray(p), gpt2)}')[:n] for p in prompts]

  r = passkey.evaluate_passkey(oracle, gpt2, [T], [0.0, 0.5, 1.0], num, batch_size=4)
  assert r['mean_accuracy'] == 1.0
  assert set(calls) == lens


def test_passkey_counts_only_the_exact_key():
  assert passkey.is_correct(TOK, TOK.encode(' 12345'), 12345)
  assert passkey.is_correct(TOK, TOK.encode('12345'), 12345)
  for wrong in (' 123456', '123456', ' 1234', ' 012345', 'x12345', ' 12 345', ''):
    assert not passkey.is_correct(TOK, TOK.encode(wrong), 12345), wrong
  # A model that appends a digit (6 new tokens: '<key>6') scores 0, not 1.
  def extra(prompts, n):
    return [TOK.encode(f'{passkey_recover(np.asarray(p), TOK)}6')[:n] for p in prompts]
  r = passkey.evaluate_passkey(extra, TOK, [PK_LEN], [0.5], 3)
  assert r['mean_accuracy'] == 0.0


def test_read_jsonl_requires_objects_and_limit_of_at_least_one(tmp_path):
  p = tmp_path / 'piqa.jsonl'
  p.write_text('{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}\n[1, 2]\n')
  with pytest.raises(ValueError, match=r'piqa.jsonl:2: expected a JSON object.*list'):
    perplexity.read_jsonl(str(p), zero_shot.FIELDS['piqa'], 'piqa')
  p.write_text('"just a string"\n')
  with pytest.raises(ValueError, match=r'piqa.jsonl:1: expected a JSON object'):
    perplexity.read_jsonl(str(p), ('page',))
  _write(tmp_path, 'piqa', ZERO_SHOT_DOCS['piqa'])
  ll = lambda reqs: [(0.0, False)] * len(reqs)  # noqa: E731
  with pytest.raises(ValueError, match=r'eval.zero_shot_limit=0'):
    zero_shot.evaluate_tasks(str(tmp_path), ['piqa'], ll, TOK, limit=0)
  assert zero_shot.evaluate_tasks(str(tmp_path), ['piqa'], ll, TOK, limit=1)['piqa:n'] == 1
  (tmp_path / 'w.jsonl').write_text('{"page": "a b"}\n')
  with pytest.raises(ValueError, match=r'limit=0'):
    perplexity.wikitext_texts(str(tmp_path / 'w.jsonl'), limit=0)


def test_fig1_layer_picks_the_named_layer_when_some_layers_lack_tau_q(monkeypatch):
  B, H, T = 1, 2, 3
  p = np.tril(np.ones([T, T]))
  probs = {f'layer_{i}': np.broadcast_to(p / p.sum(-1, keepdims=True), (B, H, T, T))
           for i in range(3)}
  taus = {'layer_0': {}, 'layer_1': {'q': np.full([B, T, H], 1.0)},
          'layer_2': {'q': np.full([B, T, H], 3.0)}}
  monkeypatch.setattr(attention_stats, 'capture', lambda *a, **k: (probs, taus))
  toks = np.asarray([TOK.encode('abc')], np.int32)
  stats = lambda layer: attention_stats.attention_statistics(  # noqa: E731
      None, None, toks, TOK, layer)['token_temperature']
  assert stats(1)['layer'] == 'layer_1' and stats(1)['tau_q'] == [1.0] * T
  assert stats(2)['layer'] == 'layer_2' and stats(2)['tau_q'] == [3.0] * T
  assert stats(-1)['layer'] == 'mean' and stats(-1)['tau_q'] == [2.0] * T
  with pytest.raises(ValueError, match=r"eval.fig1_layer=0: layer_0 has no query temperature"):
    stats(0)
  for bad in (3, -2):
    with pytest.raises(ValueError, match=rf'eval.fig1_layer={bad} is out of range.*3 layers'):
      stats(bad)
  with pytest.raises(ValueError, match='empty eval.attention_text'):
    attention_stats.attention_statistics(None, None, np.zeros([1, 0], np.int32), TOK)


def test_token_temperature_png_draws_dollar_signs_as_text(tmp_path):
  pieces = ['price ', '$x^$', ' and ', '$\\frac{', ' $5']  # not valid mathtext
  path = plots.token_temperature_png(pieces, [0.1, 0.5, 0.2, 0.9, 0.3], str(tmp_path / 'f.png'))
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_harness_generation_context_fits_max_len():
  from ssa.evaluation import harness  # pylint: disable=g-import-not-at-top
  ctx = list(range(100))
  for max_len, k in ((16, 4), (16, 16), (16, 17), (16, 40), (8, 1)):
    ids, n = harness.generation_context(ctx, max_len, k, eos_id=-1)
    assert n == min(k, max_len)
    assert ids == ctx[-(max_len + 1 - n):] and len(ids) + n - 1 <= max_len and len(ids) >= 1
  assert harness.generation_context([], 16, 4, eos_id=-1) == ([-1], 4)
  assert harness.generation_context([], 16, 40, eos_id=-1) == ([-1], 16)
  assert harness.generation_context([1, 2], 16, 4, eos_id=-1) == ([1, 2], 4)


def test_collect_paths_with_equals_and_duplicate_run_names(tmp_path, monkeypatch, capsys):
  def make(*parts, ppl=1.0):
    d = tmp_path.joinpath(*parts, 'eval')
    d.mkdir(parents=True)
    (d / 'eval_results.json').write_text(json.dumps({'metrics': {'validation:perplexity': ppl}}))
    return str(tmp_path.joinpath(*parts))
  lr = make('lr=0.1', ppl=2.0)
  assert collect.split_arg(lr) == (None, lr)
  assert collect.split_arg('ssa=/x/y') == ('ssa', '/x/y')
  assert collect.collect([lr]) == {'lr=0.1': {'validation:perplexity': 2.0}}
  monkeypatch.chdir(tmp_path)
  assert collect.collect(['lr=0.1']) == {'lr=0.1': {'validation:perplexity': 2.0}}  # existing path
  assert list(collect.collect([f'best={lr}'])) == ['best']
  # Same directory name under two sweeps: named by more of the path, no row lost.
  a, b = make('sweep_a', 'seed1', ppl=3.0), make('sweep_b', 'seed1', ppl=4.0)
  rows = collect.collect([a, b])
  assert rows == {'sweep_a/seed1': {'validation:perplexity': 3.0},
                  'sweep_b/seed1': {'validation:perplexity': 4.0}}
  with pytest.raises(ValueError, match="Two runs named 'x'"):
    collect.collect([f'x={a}', f'x={b}'])
  with pytest.raises(ValueError, match='Two runs named'):
    collect.collect([a, a])
  assert collect.main([f'x={a}', f'x={b}']) == 2
  assert "Two runs named 'x'" in capsys.readouterr().err


def test_figures_colour_blind_safe_map_colour_bars_and_caption(monkeypatch, tmp_path):
  figs = []
  monkeypatch.setattr(plots, '_save', lambda fig, path: figs.append(fig) or path)
  r = {'lengths': [16, 32], 'depths': [0.0, 1.0], 'accuracy': [[1.0, 0.25], [0.0, 0.5]]}
  plots.passkey_heatmap(r, str(tmp_path / 'p.png'))
  ax, cbar = figs[-1].axes
  assert ax.images[0].get_cmap().name == plots.ACCURACY_CMAP == 'cividis'
  assert cbar.get_ylabel() == 'accuracy'
  # cell labels contrast with the cell: dark cells (low accuracy) get white text
  colours = {t.get_text(): t.get_color() for t in ax.texts}
  assert colours == {'1.00': 'black', '0.25': 'white', '0.00': 'white', '0.50': 'black'}
  plots.token_temperature_png(list('abc'), [1.0, 1.2, 1.4], str(tmp_path / 't.png'))
  assert len(figs[-1].axes) == 2 and 'temperature' in figs[-1].axes[1].get_xlabel()
  np.testing.assert_allclose(figs[-1].axes[1].get_xlim(), [1.0, 1.4])
  curves = np.full((4, 4), 0.25)
  plots.dilution_figure({'ssa': {'layer_0': curves}}, str(tmp_path / 'd.png'),
                        caption='averaged over 2 sequences and the heads; run W')
  assert [t.get_text() for t in figs[-1].texts] == ['averaged over 2 sequences and the heads; run W']
