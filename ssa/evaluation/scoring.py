"""Log-likelihood scoring of token sequences, jitted in fixed (bucketed) shapes.

Everything in ssa/evaluation scores through one small interface, so a test can pass a model whose
log-likelihoods are known (e.g. a bigram table) as well as the real Transformer:

    lm = LM(apply_fn, variables, max_len)      apply_fn(variables, tokens_BT) -> logits [B, T, V]
    lm = LM.from_model(model, variables)       the Transformer (kv-cache generation, attention capture)

`Scorer(lm)` turns the logits into per-token log-probabilities of given targets (and whether each
target is the argmax), padding every batch to `batch_size` rows and a power-of-two length bucket
(<= max_len), so one compiled program serves all requests of a bucket.

Request semantics follow lm-evaluation-harness (HFLM._loglikelihood_tokens):
  loglikelihood(context, continuation): the model reads (context + continuation)[-(max_len+1):][:-1]
  and the last len(continuation) positions are scored; is_greedy = every continuation token is the
  argmax. An empty context is replaced by [prefix_token] (the harness uses EOT).
  loglikelihood_rolling(tokens): the document is cut into windows by `rolling_windows` (the
  harness's get_rolling_token_windows + make_disjoint_window) so every token is scored exactly
  once; stride = max_len reproduces the harness (disjoint windows), a smaller stride gives every
  window after the first max_len - stride tokens of extra context.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class LM:
  """A language model as the evaluations see it."""
  apply_fn: Callable[..., Any]   # (variables, tokens_BT, **kw) -> logits [B, T, V] (jax-traceable)
  variables: Any                 # pytree passed as the first argument of apply_fn
  max_len: int                   # longest input the model accepts
  model: Any = None              # the Transformer, if any (kv-cache generation, attention capture)

  @classmethod
  def from_model(cls, model, variables, max_len: Optional[int] = None) -> 'LM':
    def apply_fn(v, tokens_BT, **kw):
      return model.apply(v, tokens_BT, **kw)
    return cls(apply_fn, variables, int(max_len or model.cfg.max_len), model)


def bucket(n: int, max_len: int, min_bucket: int = 16) -> int:
  """Smallest power of two >= n (at least min_bucket), capped at max_len."""
  b = min_bucket
  while b < n:
    b *= 2
  return min(b, max_len)


def _token_logprobs(apply_fn, variables, inputs_BT, targets_BT):
  logits_BTV = apply_fn(variables, inputs_BT).astype(jnp.float32)
  logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
  logp_BT = jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
  greedy_BT = jnp.argmax(logits_BTV, axis=-1) == targets_BT
  return logp_BT, greedy_BT


class Scorer:
  """Per-token log-probabilities of (inputs, targets) rows under `lm`, in fixed shapes."""

  def __init__(self, lm: LM, *, batch_size: int = 8, pad_id: int = 0, min_bucket: int = 16):
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size}; expected a positive integer.')
    self.lm, self.batch_size, self.pad_id, self.min_bucket = lm, batch_size, pad_id, min_bucket
    self.max_len = lm.max_len
    self._fn = jax.jit(lambda v, x, y: _token_logprobs(lm.apply_fn, v, x, y))

  def score_rows(self, rows: Sequence[tuple[Sequence[int], Sequence[int]]], progress=None):
    """[(logp [n], is_greedy [n])] for rows (inputs, targets) of equal lengths n <= max_len.
    progress: None, or a tqdm-like bar whose update(k) is called as k rows are scored."""
    out: list[Any] = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    for s in range(0, len(order), self.batch_size):
      idx = order[s:s + self.batch_size]
      n_max = max(len(rows[i][0]) for i in idx)
      if n_max > self.max_len:
        raise ValueError(f'row of {n_max} tokens exceeds the scoring context max_len={self.max_len}.')
      L = bucket(max(n_max, 1), self.max_len, self.min_bucket)
      x = np.full([self.batch_size, L], self.pad_id, np.int32)
      y = np.full([self.batch_size, L], self.pad_id, np.int32)
      for r, i in enumerate(idx):
        inp, tgt = rows[i]
        if len(inp) != len(tgt):
          raise ValueError(f'inputs ({len(inp)}) and targets ({len(tgt)}) differ in length.')
        x[r, :len(inp)], y[r, :len(tgt)] = inp, tgt
      logp, greedy = jax.device_get(self._fn(self.lm.variables, x, y))
      for r, i in enumerate(idx):
        n = len(rows[i][0])
        out[i] = (np.asarray(logp[r, :n], np.float64), np.asarray(greedy[r, :n], bool))
      if progress is not None:
        progress.update(len(idx))
    return out

  def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                    prefix_token: int = 0, progress=None) -> list[tuple[float, bool]]:
    """[(sum log p(continuation | context), is_greedy)] for (context_ids, continuation_ids)."""
    rows, spans = [], []
    for ctx, cont in requests:
      if len(cont) == 0:
        raise ValueError('loglikelihood request with an empty continuation.')
      ctx = list(ctx) if len(ctx) else [prefix_token]
      whole = (ctx + list(cont))[-(self.max_len + 1):]
      rows.append((whole[:-1], whole[1:]))
      spans.append(min(len(cont), len(whole) - 1))
    out = []
    if progress is not None and getattr(progress, 'total', 0) is None:
      progress.total = len(rows)
    for (logp, greedy), n in zip(self.score_rows(rows, progress), spans):
      out.append((float(logp[-n:].sum()), bool(greedy[-n:].all())))
    return out

  def loglikelihood_rolling(self, docs: Sequence[Sequence[int]], prefix_token: int,
                            stride: Optional[int] = None, progress=None) -> list[float]:
    """Total log-likelihood of each token list, every token scored once (rolling windows)."""
    reqs, owner = [], []
    for d, toks in enumerate(docs):
      for ctx, cont in rolling_windows(list(toks), prefix_token, self.max_len, stride):
        reqs.append((ctx, cont))
        owner.append(d)
    totals = np.zeros(len(docs))
    for (ll, _), d in zip(self.loglikelihood(reqs, prefix_token, progress), owner):
      totals[d] += ll
    return [float(t) for t in totals]


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int,
                    stride: Optional[int] = None) -> Iterator[tuple[list[int], list[int]]]:
  """(context, continuation) windows that score every token of `tokens` exactly once.

  The harness's get_rolling_token_windows(tokens, prefix_token, max_seq_len=max_len,
  context_len=max_len - stride + 1) followed by make_disjoint_window; stride=None = max_len
  (context_len=1: the harness's loglikelihood_rolling).
  """
  stride = max_len if stride is None else stride
  if not 1 <= stride <= max_len:
    raise ValueError(f'rolling stride={stride}; expected 1 <= stride <= max_len={max_len}.')
  if not tokens:
    return
  pred_len = stride
  first = min(max_len, len(tokens))
  windows = [([prefix_token] + tokens[:first - 1], tokens[:first])]
  predicted = first
  while predicted < len(tokens):
    n = min(len(tokens) - predicted, pred_len)
    end = predicted + n
    windows.append((tokens[max(end - max_len - 1, 0):end - 1], tokens[end - n:end]))
    predicted += n
  for a, b in windows:  # make_disjoint_window
    yield a[:len(a) - (len(b) - 1)], b
