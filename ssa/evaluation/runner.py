"""The evaluation run behind eval.py: every enabled evaluation of config.eval, results + figures.

    results = run(config, loaded, output_dir)     # loaded = ssa.evaluation.loading.load(...)

Writes into output_dir:
  eval_results.json      {'meta': {...}, 'metrics': {flat '<name>:<metric>' numbers},
                          'passkey': grid, 'zero_shot_table': markdown, 'figures': [paths]};
                         rewritten after every section (meta.complete is False until the end), so
                         a section that raises leaves the metrics computed before it on disk
  attention_stats.json   the numbers of the attention figures (ssa/evaluation/attention_stats.py)
  zero_shot.md           the paper-ordered markdown table (when zero-shot tasks ran)
  figures/*.png, figures/token_temperature.html
Metric keys: '<split>:loss', '<split>:perplexity' (token level, packed batches),
'<split>:word_perplexity', '<split>:byte_perplexity', '<split>:bits_per_byte',
'<split>:doc_token_perplexity' (rolling windows over whole documents), 'wikitext:*' (from
eval.wikitext_jsonl), '<task>:<metric>' (zero-shot), 'passkey:mean_accuracy'.
Splits: eval.splits, or (empty, the default) data.eval_split alone.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Optional

import numpy as np

from ssa import plots
from ssa.config_lib import ConfigError
from ssa.evaluation import attention_stats, generation, passkey, perplexity, zero_shot
from ssa.evaluation.scoring import LM, Scorer


def make_lm(config, loaded) -> LM:
  max_len = config.eval.max_len or loaded.model.cfg.max_len
  if config.model.pos_emb == 'learned' and max_len > loaded.model.cfg.max_len:
    raise ConfigError(f'eval.max_len={max_len} exceeds model.max_len={loaded.model.cfg.max_len} '
                      '(learned position table).')
  return LM.from_model(loaded.model, loaded.variables, max_len)


def _tokenizer(config, model_cfg):
  from ssa.data import get_tokenizer  # pylint: disable=g-import-not-at-top
  tok = get_tokenizer(config.data.tokenizer, config.data.eos_token)
  if tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f'model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer '
                      f'{config.data.tokenizer!r} vocabulary ({tok.vocab_size}).')
  return tok


def _attention_rows(tok, texts, n_rows, T):
  ids: list[int] = []
  for t in texts:
    ids += tok.encode(t) + [tok.eos_id]
    if len(ids) >= n_rows * T:
      break
  n = min(n_rows, len(ids) // T)
  if n == 0:
    raise ValueError(f'attention statistics: the documents hold fewer than {T} tokens.')
  return np.asarray(ids[:n * T], np.int32).reshape(n, T)


def eval_splits(config) -> list[str]:
  """The splits scored: eval.splits, or [data.eval_split] when it is empty (the default)."""
  splits = config.eval.splits
  if isinstance(splits, str):  # --set=eval.splits=test
    splits = [s.strip() for s in splits.split(',') if s.strip()]
  return list(splits or [config.data.eval_split])


def write_results(results: dict, output_dir: str) -> str:
  """eval_results.json, written atomically (a temporary file renamed over the old one)."""
  path = os.path.join(output_dir, 'eval_results.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(tmp, path)
  return path


def run(config, loaded, output_dir: str, log=print) -> dict:
  """Runs the evaluations enabled in config.eval; returns (and writes) the results."""
  e = config.eval
  t0 = time.time()
  os.makedirs(output_dir, exist_ok=True)
  fig_dir = os.path.join(output_dir, 'figures')
  tok = _tokenizer(config, loaded.model.cfg)
  lm = make_lm(config, loaded)
  scorer = Scorer(lm, batch_size=e.batch_size, pad_id=tok.pad_id)
  from ssa.model import param_counts  # pylint: disable=g-import-not-at-top
  results: dict[str, Any] = {
      'meta': {'step': loaded.step, 'checkpoint_dir': loaded.directory,
               'preset': config.model.preset, 'strategy': config.ssa.strategy,
               'dataset': config.data.dataset, 'tokenizer': config.data.tokenizer,
               'max_len': lm.max_len, 'params': param_counts(loaded.variables['params'])},
      'metrics': {}, 'figures': []}
  results['meta']['complete'] = False
  m = results['metrics']
  splits = eval_splits(config)

  def checkpoint_results():  # after every section: earlier metrics survive a later failure
    results['meta']['seconds'] = time.time() - t0
    write_results(results, output_dir)

  docs_cache: dict[str, list[str]] = {}

  synthetic = config.data.dataset in ('passkey', 'graph')

  def texts_of(split):
    if synthetic:
      return None
    if split not in docs_cache:
      docs_cache[split] = perplexity.dataset_texts(config, split, e.word_ppl_max_docs)
    return docs_cache[split]

  for split in splits:
    if e.token_perplexity:
      from ssa.data import make_eval_iterator  # pylint: disable=g-import-not-at-top
      it, _ = make_eval_iterator(config, 0, 1, split=split, num_batches=e.ppl_batches)
      r = perplexity.token_perplexity(lm, it)
      m.update({f'{split}:loss': r['loss'], f'{split}:perplexity': r['perplexity'],
                f'{split}:tokens': r['tokens']})
      log(f'{split}: token loss {r["loss"]:.4f} ppl {r["perplexity"]:.3f} ({r["tokens"]:.0f} tokens)')
      checkpoint_results()
    if e.word_perplexity and not synthetic:  # synthetic tasks have no documents/words
      r = perplexity.document_perplexity(scorer, tok, texts_of(split), stride=e.rolling_stride)
      m.update({f'{split}:word_perplexity': r['word_perplexity'],
                f'{split}:byte_perplexity': r['byte_perplexity'],
                f'{split}:bits_per_byte': r['bits_per_byte'],
                f'{split}:doc_token_perplexity': r['token_perplexity'],
                f'{split}:documents': r['documents']})
      log(f'{split}: word ppl {r["word_perplexity"]:.3f} over {r["documents"]} documents')
      checkpoint_results()
  if e.wikitext_jsonl:
    r = perplexity.document_perplexity(scorer, tok, perplexity.wikitext_texts(e.wikitext_jsonl),
                                       stride=e.rolling_stride, detokenize=e.wikitext_detokenize)
    m.update({'wikitext:word_perplexity': r['word_perplexity'],
              'wikitext:byte_perplexity': r['byte_perplexity'],
              'wikitext:bits_per_byte': r['bits_per_byte']})
    log(f'wikitext: word ppl {r["word_perplexity"]:.3f}')
    checkpoint_results()

  if e.zero_shot_dir:
    r = zero_shot.evaluate_tasks(
        e.zero_shot_dir, list(e.zero_shot_tasks),
        lambda reqs: scorer.loglikelihood(reqs, prefix_token=tok.eos_id), tok, e.zero_shot_limit)
    m.update(r)
    table = zero_shot.markdown_table({f'{config.model.preset} {config.ssa.strategy}': m})
    results['zero_shot_table'] = table
    with open(os.path.join(output_dir, 'zero_shot.md'), 'w') as f:
      f.write(table + '\n')
    log(table)
    checkpoint_results()

  if e.passkey:
    too_long = [t for t in e.passkey_lengths if t > lm.max_len]
    if too_long:
      raise ConfigError(f'eval.passkey_lengths={tuple(e.passkey_lengths)} has lengths {too_long} '
                        f'above the model context {lm.max_len}.')
    gen = generation.generate_fn(lm, pad_id=tok.pad_id)
    r = passkey.evaluate_passkey(gen, tok, e.passkey_lengths, e.passkey_depths,
                                 e.passkey_num_examples, seed=config.data.seed,
                                 batch_size=e.batch_size)
    results['passkey'] = r
    m['passkey:mean_accuracy'] = r['mean_accuracy']
    log(f'passkey: mean accuracy {r["mean_accuracy"]:.3f}')
    if e.figures:
      results['figures'].append(plots.passkey_heatmap(
          r, os.path.join(fig_dir, 'passkey.png'),
          f'passkey {config.model.preset} {config.ssa.strategy}'))
    checkpoint_results()

  if e.attention_stats:
    results['figures'] += attention_figures(config, loaded, tok, texts_of(splits[0]), lm.max_len,
                                            output_dir)

  results['meta']['complete'] = True
  results['meta']['seconds'] = time.time() - t0
  log(f'wrote {write_results(results, output_dir)}')
  return results


def attention_figures(config, loaded, tok, texts, max_len, output_dir) -> list[str]:
  """attention_stats.json + dilution / entropy / temperature / Figure-1 figures."""
  e = config.eval
  fig_dir = os.path.join(output_dir, 'figures')
  fig1_ids = None
  if e.attention_text is not None:
    fig1_ids = tok.encode(e.attention_text)[:max_len]
    if not fig1_ids:
      raise ConfigError(f'eval.attention_text={e.attention_text!r} encodes to no tokens; give a '
                        'non-empty text, or None for the first attention row.')
  if texts is None:  # synthetic task: the first eval batch
    from ssa.data import make_eval_iterator  # pylint: disable=g-import-not-at-top
    it, _ = make_eval_iterator(config, 0, 1, split=config.data.eval_split, num_batches=1)
    rows = np.asarray(next(iter(it))['inputs'][:e.attention_num_seqs], np.int32)
  else:
    rows = _attention_rows(tok, texts, e.attention_num_seqs, max_len)
  if fig1_ids is not None:
    fig1 = attention_stats.attention_statistics(loaded.model, loaded.variables,
                                                np.asarray([fig1_ids], np.int32), tok,
                                                e.fig1_layer)
  else:
    fig1 = None
  stats = attention_stats.attention_statistics(loaded.model, loaded.variables, rows, tok,
                                               e.fig1_layer)
  if fig1 is not None and 'token_temperature' in fig1:
    stats['token_temperature'] = fig1['token_temperature']
  name = config.ssa.strategy
  stats['run'] = name
  with open(os.path.join(output_dir, 'attention_stats.json'), 'w') as f:
    json.dump(stats, f)
  if not e.figures:
    return []
  dil, ent = {name: stats['dilution']}, {name: stats['entropy']}
  if e.compare_workdir:
    other = os.path.join(os.path.expanduser(e.compare_workdir), 'attention_stats.json')
    if not os.path.isfile(other):
      raise FileNotFoundError(f'eval.compare_workdir: {other} does not exist (run eval.py on that '
                              'run first; compare_workdir is its output_dir).')
    with open(other) as f:
      o = json.load(f)
    oname = o.get('run', 'other')
    oname = oname if oname != name else f'{oname} (compare)'
    dil, ent = {oname: o['dilution'], **dil}, {oname: o['entropy'], **ent}
  paths = [plots.dilution_figure(dil, os.path.join(fig_dir, 'dilution.png')),
           plots.entropy_figure(ent, os.path.join(fig_dir, 'entropy.png'))]
  if any(stats['temperature'].values()):
    paths.append(plots.temperature_figure(stats['temperature'],
                                          os.path.join(fig_dir, 'temperature.png')))
  tt = stats.get('token_temperature')
  if tt:
    title = f'tau_q ({tt["layer"]}), {config.model.preset} {name}'
    paths.append(plots.token_temperature_html(tt['pieces'], tt['tau_q'],
                                              os.path.join(fig_dir, 'token_temperature.html'),
                                              title))
    paths.append(plots.token_temperature_png(tt['pieces'], tt['tau_q'],
                                             os.path.join(fig_dir, 'token_temperature.png'),
                                             title))
  return paths


def complete(config, loaded, prompts, log=print) -> list[list[str]]:
  """Completions of each prompt (config.eval sampling fields); printed and returned."""
  import jax  # pylint: disable=g-import-not-at-top
  e = config.eval
  tok = _tokenizer(config, loaded.model.cfg)
  lm = make_lm(config, loaded)
  gen = generation.Generator(loaded.model, loaded.variables, lm.max_len, tok.pad_id)
  out = []
  for p in prompts:
    ids = tok.encode(p) or [tok.eos_id]
    n = min(e.max_new_tokens, lm.max_len + 1 - len(ids))
    if n < 1:
      raise ValueError(f'prompt of {len(ids)} tokens leaves no room in max_len={lm.max_len}.')
    news = gen.sample([ids] * e.num_samples, n, rng=jax.random.PRNGKey(e.sample_seed),
                      temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, eos_id=tok.eos_id)
    texts = [tok.decode(x) for x in news]
    for t in texts:
      log(f'--- {p!r} ->\n{p}{t}')
    out.append(texts)
  return out
