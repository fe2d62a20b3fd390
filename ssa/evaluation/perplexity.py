"""Perplexity: token level over packed eval batches, and document level with rolling windows.

token_perplexity(lm, batches)
    loss = sum(-log p(target) * weight) / sum(weight) over the batches of ssa.data's eval
    iterator (packed documents, segment-masked attention); perplexity = exp(loss).

document_perplexity(scorer, tokenizer, texts, ...)
    lm-evaluation-harness's wikitext metrics: every document is scored in full with rolling
    windows (Scorer.loglikelihood_rolling, prefix token = EOS), and with LL the total
    log-likelihood over all documents,
        word_perplexity = exp(-LL / words)     words = len(re.split(r'\\s+', original text))
        byte_perplexity = exp(-LL / bytes)     bytes = len(original text as UTF-8)
        bits_per_byte   = -LL / bytes / ln 2
    plus token_perplexity = exp(-LL / tokens). For wikitext the harness scores the detokenized page
    (`wikitext_detokenizer`) but counts words and bytes of the original page; `detokenize=True`
    does the same.

Evaluation units (common.Unit): SPLITS = SplitPerplexity(TokenPerplexity() [eval.token_perplexity],
DocumentPerplexity() [eval.word_perplexity]) over the splits of common.eval_splits, and WIKITEXT
[eval.wikitext_jsonl] ('wikitext:*' keys).

Prefix token: the first window of a document (and every zero-shot request, zero_shot.py /
harness.py)
is conditioned on the tokenizer's EOS id, i.e. the first token is scored as p(t_0 | EOS). This is
lm-evaluation-harness's rule before 0.4.3 (prefix_token_id = eot_token_id), and for GPT-2 and
Pythia tokenizers, where BOS == EOS ('<|endoftext|>'), it is also the rule of later versions (which
prefer a BOS id when the tokenizer has one). The tokenizer interface here (ssa.data.tokenizers:
encode / decode / vocab_size / eos_id / pad_id) exposes no BOS id, so there is no prefix-token
option: for a tokenizer with a distinct BOS (e.g. Llama's '<s>'), scores differ from newer harness
versions in the first token of every document.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssa import measure
from ssa import data as data_lib  # called as data_lib.make_eval_iterator (tests patch ssa.data)
from ssa.evaluation.common import EvalContext, check_limit, is_synthetic
from ssa.evaluation.common import read_jsonl  # noqa: F401  (re-exported: perplexity.read_jsonl)
from ssa.evaluation.scoring import LM, Scorer


def _batch_nll(apply_fn, variables, batch):
  """Weighted next-token NLL of every target [B, T] and the weights [B, T]."""
  kw = {}
  if 'positions' in batch:
    kw['positions'] = batch['positions']
  if 'segment_ids' in batch:
    kw['segment_ids'] = batch['segment_ids']
  logits = apply_fn(variables, batch['inputs'], **kw).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
  w = batch['weights'].astype(jnp.float32)
  return nll * w, w


def token_perplexity(lm: LM, batches: Iterable[dict], max_batches: Optional[int] = None,
                     progress=None) -> dict:
  """Weighted next-token NLL over `batches`: {'loss', 'perplexity', 'tokens', 'batches',
  'by_position' (measure.bucket_losses over the 1-based position of each target inside its
  document, batch['positions'] + 1, or inside the row), 'sequence_nll' / 'sequence_tokens'
  (per row, in batch order: what ssa.measure.paired_difference pairs between two models scored
  on the same batches) and 'sequence_bucket_nll' / 'sequence_bucket_tokens' (the same per row and
  position bucket, [rows][buckets])}. progress: None or a tqdm-like bar, update(1) per batch."""
  fn = jax.jit(lambda v, b: _batch_nll(lm.apply_fn, v, b))
  rows_nll, rows_tok, n, T = [], [], 0, None
  for batch in batches:
    if max_batches is not None and n >= max_batches:
      break
    b = {k: np.asarray(batch[k]) for k in ('inputs', 'targets', 'weights', 'segment_ids',
                                            'positions') if k in batch}
    nll, w = (np.asarray(x, np.float64) for x in jax.device_get(fn(lm.variables, b)))
    if progress is not None:
      progress.update(1)
    T = nll.shape[1] if T is None else T
    pos = (b['positions'] if 'positions' in b else
           np.broadcast_to(np.arange(nll.shape[1]), nll.shape)) + 1
    s_rb, c_rb = measure.row_bucket_sums(nll, w, pos, T)
    rows_nll.append(s_rb)
    rows_tok.append(c_rb)
    n += 1
  if not rows_nll or sum(c.sum() for c in rows_tok) == 0:
    raise ValueError('token_perplexity: the batches hold no weighted target token.')
  s_rb, c_rb = np.concatenate(rows_nll), np.concatenate(rows_tok)
  weight = float(c_rb.sum())
  loss = float(s_rb.sum()) / weight
  return {'loss': loss, 'perplexity': math.exp(min(loss, 700.0)), 'tokens': weight, 'batches': n,
          'by_position': measure.bucket_losses(s_rb.sum(0), c_rb.sum(0), T),
          'buckets': [measure.bucket_name(b) for b in measure.position_buckets(T)],
          'sequence_nll': s_rb.sum(1).tolist(), 'sequence_tokens': c_rb.sum(1).tolist(),
          'sequence_bucket_nll': s_rb.tolist(), 'sequence_bucket_tokens': c_rb.tolist()}


def wikitext_detokenizer(string: str) -> str:
  """lm-evaluation-harness's wikitext detokenizer (lm_eval/tasks/wikitext/preprocess_wikitext.py)."""
  string = string.replace("s '", "s'")
  string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
  string = string.replace(' @-@ ', '-')
  string = string.replace(' @,@ ', ',')
  string = string.replace(' @.@ ', '.')
  string = string.replace(' : ', ': ')
  string = string.replace(' ; ', '; ')
  string = string.replace(' . ', '. ')
  string = string.replace(' ! ', '! ')
  string = string.replace(' ? ', '? ')
  string = string.replace(' , ', ', ')
  string = re.sub(r'\(\s*([^\)]*?)\s*\)', r'(\1)', string)
  string = re.sub(r'\[\s*([^\]]*?)\s*\]', r'[\1]', string)
  string = re.sub(r'{\s*([^}]*?)\s*}', r'{\1}', string)
  string = re.sub(r'\"\s*([^\"]*?)\s*\"', r'"\1"', string)
  string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
  string = string.replace('= = = =', '====')
  string = string.replace('= = =', '===')
  string = string.replace('= =', '==')
  string = string.replace(' ' + chr(176) + ' ', chr(176))
  string = string.replace(' \n', '\n')
  string = string.replace('\n ', '\n')
  string = string.replace(' N ', ' 1 ')
  string = string.replace(" 's", "'s")
  return string


def count_words(text: str) -> int:
  """The harness's word count: len(re.split(r'\\s+', text))."""
  return len(re.split(r'\s+', text))


def document_perplexity(scorer: Scorer, tokenizer, texts: Sequence[str], *,
                        stride: Optional[int] = None, detokenize: bool = False,
                        progress=None) -> dict:
  """Word/byte/token perplexity of whole documents (see the module docstring); progress: None
  or a tqdm-like bar updated as scoring windows are done."""
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError('document_perplexity: no non-empty document.')
  scored = [wikitext_detokenizer(t) if detokenize else t for t in texts]
  toks = [tokenizer.encode(t) for t in scored]
  lls = scorer.loglikelihood_rolling(toks, prefix_token=tokenizer.eos_id, stride=stride,
                                     progress=progress)
  ll = float(np.sum(lls))
  words = sum(count_words(t) for t in texts)
  nbytes = sum(len(t.encode('utf-8')) for t in texts)
  ntok = sum(len(t) for t in toks)
  exp = lambda x: math.exp(min(x, 700.0))  # noqa: E731
  return {'word_perplexity': exp(-ll / words), 'byte_perplexity': exp(-ll / nbytes),
          'bits_per_byte': -ll / nbytes / math.log(2), 'token_perplexity': exp(-ll / ntok),
          'loglikelihood': ll, 'documents': len(texts), 'words': words, 'bytes': nbytes,
          'tokens': ntok}


def wikitext_texts(path: str, limit: Optional[int] = None) -> list[str]:
  """Pages of a JSONL file in EleutherAI/wikitext_document_level layout (field 'page');
  limit = the first `limit` >= 1 pages, None = all."""
  check_limit(limit, 'wikitext_texts: limit')
  recs = read_jsonl(path, ('page',), 'wikitext')
  return [r['page'] for r in recs[:limit]]


# ----------------------------------------------------------------------------- evaluation units


class TokenPerplexity:
  """eval.token_perplexity: '<split>:loss' / ':perplexity' / ':tokens' over eval.ppl_batches."""
  name = 'token_perplexity'

  def enabled(self, config) -> bool:
    return bool(config.eval.token_perplexity)

  def run_split(self, ctx: EvalContext, split: str) -> None:
    it, _ = data_lib.make_eval_iterator(ctx.config, 0, 1, split=split,
                                        num_batches=ctx.config.eval.ppl_batches)
    with ctx.bar(f'{split} token perplexity', ctx.config.eval.ppl_batches) as bar:
      r = token_perplexity(ctx.lm, it, progress=bar)
    ctx.metrics.update({f'{split}:loss': r['loss'], f'{split}:perplexity': r['perplexity'],
                        f'{split}:tokens': r['tokens']})
    ctx.metrics.update({f'{split}:loss@{k}': v['loss'] for k, v in r['by_position'].items()
                        if v['loss'] is not None})
    ctx.results.setdefault('by_position', {})[split] = r['by_position']
    ctx.results.setdefault('sequences', {})[split] = {
        'buckets': r['buckets'],
        'nll': r['sequence_bucket_nll'], 'tokens': r['sequence_bucket_tokens']}
    by_pos = ', '.join(f'{k}: {v["loss"]:.3f}' for k, v in r['by_position'].items()
                       if v['loss'] is not None)
    ctx.log(f'{split}: token loss {r["loss"]:.4f} ppl {r["perplexity"]:.3f} '
            f'({r["tokens"]:.0f} tokens; by position {by_pos})')
    if r['tokens'] < measure.MIN_LM_EVAL_TOKENS:
      ctx.log(f'{split}: note: {r["tokens"]:.0f} evaluation tokens, below the '
              f'{measure.MIN_LM_EVAL_TOKENS} the measurement standard asks for comparisons '
              '(raise eval.ppl_batches / data.eval_batches)')

  def run(self, ctx: EvalContext) -> None:
    for split in ctx.splits:
      self.run_split(ctx, split)


class DocumentPerplexity:
  """eval.word_perplexity: word / byte / token perplexity of eval.word_ppl_max_docs documents of
  each split (rolling windows); synthetic datasets have no documents, so it is off for them."""
  name = 'word_perplexity'

  def enabled(self, config) -> bool:
    return bool(config.eval.word_perplexity) and not is_synthetic(config)

  def run_split(self, ctx: EvalContext, split: str) -> None:
    with ctx.bar(f'{split} word perplexity') as bar:
      r = document_perplexity(ctx.scorer, ctx.tok, ctx.texts(split),
                              stride=ctx.config.eval.rolling_stride, progress=bar)
    ctx.metrics.update({f'{split}:word_perplexity': r['word_perplexity'],
                        f'{split}:byte_perplexity': r['byte_perplexity'],
                        f'{split}:bits_per_byte': r['bits_per_byte'],
                        f'{split}:doc_token_perplexity': r['token_perplexity'],
                        f'{split}:documents': r['documents']})
    ctx.log(f'{split}: word ppl {r["word_perplexity"]:.3f} over {r["documents"]} documents')

  def run(self, ctx: EvalContext) -> None:
    for split in ctx.splits:
      self.run_split(ctx, split)


class SplitPerplexity:
  """The per-split units above, run split by split (split 1: token, document; split 2: ...), which
  is the order of their metric keys; eval_results.json is rewritten after each part."""

  def __init__(self, *parts):
    self.parts = parts
    self.name = '+'.join(p.name for p in parts)

  def enabled(self, config) -> bool:
    return any(p.enabled(config) for p in self.parts)

  def run(self, ctx: EvalContext) -> None:
    parts = [p for p in self.parts if p.enabled(ctx.config)]
    for split in ctx.splits:
      for p in parts:
        p.run_split(ctx, split)
        ctx.save()


class Wikitext:
  """eval.wikitext_jsonl: 'wikitext:word_perplexity' / ':byte_perplexity' / ':bits_per_byte'."""
  name = 'wikitext'

  def enabled(self, config) -> bool:
    return bool(config.eval.wikitext_jsonl)

  def run(self, ctx: EvalContext) -> None:
    e = ctx.config.eval
    with ctx.bar('wikitext word perplexity') as bar:
      r = document_perplexity(ctx.scorer, ctx.tok, wikitext_texts(e.wikitext_jsonl),
                              stride=e.rolling_stride, detokenize=e.wikitext_detokenize,
                              progress=bar)
    ctx.metrics.update({'wikitext:word_perplexity': r['word_perplexity'],
                        'wikitext:byte_perplexity': r['byte_perplexity'],
                        'wikitext:bits_per_byte': r['bits_per_byte']})
    ctx.log(f'wikitext: word ppl {r["word_perplexity"]:.3f}')


SPLITS = SplitPerplexity(TokenPerplexity(), DocumentPerplexity())
WIKITEXT = Wikitext()
