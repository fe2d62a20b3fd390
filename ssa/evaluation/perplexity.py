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

Prefix token: the first window of a document (and every zero-shot request, runner.py / harness.py)
is conditioned on the tokenizer's EOS id, i.e. the first token is scored as p(t_0 | EOS). This is
lm-evaluation-harness's rule before 0.4.3 (prefix_token_id = eot_token_id), and for GPT-2 and
Pythia tokenizers, where BOS == EOS ('<|endoftext|>'), it is also the rule of later versions (which
prefer a BOS id when the tokenizer has one). The tokenizer interface here (ssa.data.tokenizers:
encode / decode / vocab_size / eos_id / pad_id) exposes no BOS id, so there is no prefix-token
option: for a tokenizer with a distinct BOS (e.g. Llama's '<s>'), scores differ from newer harness
versions in the first token of every document.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssa.evaluation.scoring import LM, Scorer


def _batch_nll(apply_fn, variables, batch):
  kw = {}
  if 'positions' in batch:
    kw['positions'] = batch['positions']
  if 'segment_ids' in batch:
    kw['segment_ids'] = batch['segment_ids']
  logits = apply_fn(variables, batch['inputs'], **kw).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(logp, batch['targets'][..., None], -1)[..., 0]
  w = batch['weights'].astype(jnp.float32)
  return jnp.sum(nll * w), jnp.sum(w)


def token_perplexity(lm: LM, batches: Iterable[dict], max_batches: Optional[int] = None) -> dict:
  """{'loss', 'perplexity', 'tokens', 'batches'} of weighted next-token NLL over `batches`."""
  fn = jax.jit(lambda v, b: _batch_nll(lm.apply_fn, v, b))
  total, weight, n = 0.0, 0.0, 0
  for batch in batches:
    if max_batches is not None and n >= max_batches:
      break
    b = {k: np.asarray(batch[k]) for k in ('inputs', 'targets', 'weights', 'segment_ids',
                                            'positions') if k in batch}
    s, w = jax.device_get(fn(lm.variables, b))
    total, weight, n = total + float(s), weight + float(w), n + 1
  if weight == 0:
    raise ValueError('token_perplexity: the batches hold no weighted target token.')
  loss = total / weight
  return {'loss': loss, 'perplexity': math.exp(min(loss, 700.0)), 'tokens': weight, 'batches': n}


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
                        stride: Optional[int] = None, detokenize: bool = False) -> dict:
  """Word/byte/token perplexity of whole documents (see the module docstring)."""
  texts = [t for t in texts if t]
  if not texts:
    raise ValueError('document_perplexity: no non-empty document.')
  scored = [wikitext_detokenizer(t) if detokenize else t for t in texts]
  toks = [tokenizer.encode(t) for t in scored]
  lls = scorer.loglikelihood_rolling(toks, prefix_token=tokenizer.eos_id, stride=stride)
  ll = float(np.sum(lls))
  words = sum(count_words(t) for t in texts)
  nbytes = sum(len(t.encode('utf-8')) for t in texts)
  ntok = sum(len(t) for t in toks)
  exp = lambda x: math.exp(min(x, 700.0))  # noqa: E731
  return {'word_perplexity': exp(-ll / words), 'byte_perplexity': exp(-ll / nbytes),
          'bits_per_byte': -ll / nbytes / math.log(2), 'token_perplexity': exp(-ll / ntok),
          'loglikelihood': ll, 'documents': len(texts), 'words': words, 'bytes': nbytes,
          'tokens': ntok}


def check_limit(limit: Optional[int], name: str) -> None:
  """A record limit is None (all records) or an integer >= 1; anything else raises naming it."""
  if limit is None:
    return
  if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
    raise ValueError(f'{name}={limit!r}: expected a number of records >= 1, or None for all '
                     '(0 would score nothing and give NaN metrics).')


def read_jsonl(path: str, fields: Sequence[str], task: str = '') -> list[dict]:
  """Records of a JSONL file; a missing file, bad JSON or a missing field raises naming it."""
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{task + ": " if task else ""}JSONL file {path} does not exist.')
  out = []
  with open(path, encoding='utf-8') as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{i}: not valid JSON ({e}).') from e
      if not isinstance(rec, dict):
        raise ValueError(f'{path}:{i}: expected a JSON object {{"field": value, ...}} per line, '
                         f'got {type(rec).__name__} {line.strip()[:60]!r} '
                         f'({task or "this file"} expects fields {list(fields)}).')
      missing = [k for k in fields if k not in rec]
      if missing:
        raise ValueError(f'{path}:{i}: record lacks field(s) {missing} '
                         f'({task or "this file"} expects fields {list(fields)}; found '
                         f'{sorted(rec)}).')
      out.append(rec)
  if not out:
    raise ValueError(f'{path}: no records.')
  return out


def wikitext_texts(path: str, limit: Optional[int] = None) -> list[str]:
  """Pages of a JSONL file in EleutherAI/wikitext_document_level layout (field 'page');
  limit = the first `limit` >= 1 pages, None = all."""
  check_limit(limit, 'wikitext_texts: limit')
  recs = read_jsonl(path, ('page',), 'wikitext')
  return [r['page'] for r in recs[:limit]]


def dataset_texts(config, split: str, limit: Optional[int] = None) -> list[str]:
  """Document texts of split `split` of config.data.dataset (the training data code)."""
  from ssa.data import sources  # pylint: disable=g-import-not-at-top
  from ssa.data.pipeline import record_text  # pylint: disable=g-import-not-at-top
  src = sources.get_text_source(config.data, split)
  n = len(src.source) if limit is None else min(limit, len(src.source))
  return [record_text(src.source[i], src.text_key) for i in range(n)]
