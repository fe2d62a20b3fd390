"""The measurement standard: how every comparison in this project is reported (docs/results.md).

Paired comparisons. Two arms scored on the SAME evaluation sequences (and, when there are seeds,
the same seeds: seed s of arm A beside seed s of arm B):

    d = paired_difference(nll_a, nll_b, tokens)   # arrays [seeds, sequences] or [sequences]
    d['mean'], d['ci95'], d['mde'], d['tokens'], d['sequences'], d['seeds']

`mean` is the token-weighted mean of a - b (sum over tokens of a - b / tokens, pooled over seeds);
the 95% interval is a percentile bootstrap that resamples sequences (and, with several seeds,
seeds as well, independently: a two-way bootstrap, since both the evaluation text and the seed
are random draws); `se` is the bootstrap standard deviation and `mde` the minimum detectable
effect at that sample size,

    mde = (z_{1 - alpha/2} + z_{power}) * se        (alpha 0.05, power 0.8: 2.80 * se)

i.e. the smallest true difference this measurement finds with probability `power` at level
`alpha`. A difference whose interval contains 0 is a null result at this MDE, and is reported as
such. Accuracies (passkey) use the same function with one 0/1 value per item and weight 1.

Per-position evaluation. `position_buckets(T)` = 1-32, 33-128, 129-256, 257-512, ... (doubling)
up to T (1-based positions inside the context), and `bucket_sums(nll, weights, positions, T)`
the summed loss and token count of each bucket; `bucket_losses` turns them into mean losses.

n-gram baselines. `ngram_baselines(train_docs, eval_docs, vocab_size)`: unigram, bigram and
trigram models with add-k smoothing, counted on the train split, scored (nats/token) on the
evaluation split, the first tokens of a document conditioned on the shorter history they have;
k is chosen per order on a held-out tenth of the TRAIN documents (never the evaluation split)
from K_GRID. Every language-model result states where it sits against these.

Pure numpy (no jax): experiments, eval.py and the result scripts share it.
"""

from __future__ import annotations

import statistics as _stats
from typing import Optional, Sequence

import numpy as np

K_GRID = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)   # add-k values tried (n-gram baselines)
MIN_LM_EVAL_TOKENS = 100_000                        # the standard's minimum for LM comparisons


# ----------------------------------------------------------------------------- paired comparison

def z(p: float) -> float:
  """The standard normal quantile at p."""
  return _stats.NormalDist().inv_cdf(p)


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
  """Smallest true difference a two-sided test at level `alpha` finds with probability `power`
  when the estimate's standard error is `se`."""
  if se < 0 or not 0 < alpha < 1 or not 0 < power < 1:
    raise ValueError(f'minimum_detectable_effect(se={se}, alpha={alpha}, power={power}): expected '
                     'se >= 0 and alpha, power in (0, 1).')
  return (z(1 - alpha / 2) + z(power)) * se


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim == 1:
    x = x[None]
  if x.ndim != 2 or x.size == 0:
    raise ValueError(f'{name}: expected a non-empty [sequences] or [seeds, sequences] array, '
                     f'got shape {np.shape(x)}.')
  return x


def paired_difference(a, b, weights=None, *, num_bootstrap: int = 2000, alpha: float = 0.05,
                      power: float = 0.8, seed: int = 0) -> dict:
  """Paired difference a - b over the same evaluation sequences (see the module docstring).

  a, b: per-sequence SUMS (e.g. summed NLL of each sequence's tokens), [seeds, sequences] or
    [sequences]; weights: tokens per sequence ([sequences] or the same shape as a), None = 1 per
    sequence (a, b are then per-item values such as 0/1 accuracies).
  Returns {'mean', 'ci95': [lo, hi], 'se', 'mde', 'excludes_zero', 'a', 'b', 'tokens',
  'sequences', 'seeds', 'alpha', 'power', 'num_bootstrap'}; 'a' and 'b' are the arms' own
  token-weighted means, 'tokens' counts the evaluation tokens of one seed.
  """
  a2, b2 = _as_2d(a, 'paired_difference: a'), _as_2d(b, 'paired_difference: b')
  if a2.shape != b2.shape:
    raise ValueError(f'paired_difference: a {a2.shape} and b {b2.shape} are not paired '
                     '(same seeds x sequences expected).')
  w2 = np.ones_like(a2) if weights is None else np.broadcast_to(
      _as_2d(weights, 'paired_difference: weights'), a2.shape).astype(np.float64)
  if np.any(w2 < 0) or w2.sum() <= 0:
    raise ValueError('paired_difference: weights must be >= 0 with a positive total.')
  if not (np.all(np.isfinite(a2)) and np.all(np.isfinite(b2))):
    raise ValueError('paired_difference: a or b holds a non-finite value.')
  S, N = a2.shape
  d2 = a2 - b2
  mean = float(d2.sum() / w2.sum())
  rng = np.random.default_rng(seed)
  boots = np.empty(num_bootstrap)
  for i in range(num_bootstrap):
    rows = rng.integers(0, S, S) if S > 1 else np.zeros(1, np.int64)
    cols = rng.integers(0, N, N)
    dw = d2[rows][:, cols].sum()
    ww = w2[rows][:, cols].sum()
    boots[i] = dw / ww if ww > 0 else mean
  lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
  se = float(boots.std(ddof=1)) if num_bootstrap > 1 else 0.0
  return {'mean': mean, 'ci95': [float(lo), float(hi)], 'se': se,
          'mde': minimum_detectable_effect(se, alpha, power),
          'excludes_zero': bool(lo > 0 or hi < 0),
          'a': float(a2.sum() / w2.sum()), 'b': float(b2.sum() / w2.sum()),
          'tokens': float(w2.sum() / S), 'sequences': int(N), 'seeds': int(S),
          'alpha': alpha, 'power': power, 'num_bootstrap': num_bootstrap}


def describe(d: dict, unit: str = 'nats/token', digits: int = 4) -> str:
  """One line for a paired_difference result, e.g. '-0.0123 [-0.0170, -0.0076] (MDE 0.0066, ...)'."""
  lo, hi = d['ci95']
  verdict = 'interval excludes 0' if d['excludes_zero'] else 'null: interval contains 0'
  return (f'{d["mean"]:+.{digits}f} {unit} [{lo:+.{digits}f}, {hi:+.{digits}f}] 95% CI, '
          f'MDE {d["mde"]:.{digits}f}; {d["seeds"]} seed(s), {d["sequences"]} sequences, '
          f'{d["tokens"]:.0f} tokens; {verdict}')


# ----------------------------------------------------------------------------- position buckets

def position_buckets(T: int) -> list[tuple[int, int]]:
  """[(first, last)] 1-based inclusive position ranges: 1-32, 33-128, 129-256, 257-512, ...
  (doubling) up to T; the last bucket ends at T."""
  if T < 1:
    raise ValueError(f'position_buckets: T={T}; expected T >= 1.')
  edges = [0, 32, 128]
  while edges[-1] < T:
    edges.append(edges[-1] * 2)
  out = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    if lo >= T:
      break
    out.append((lo + 1, min(hi, T)))
  return out


def bucket_name(bucket: tuple[int, int]) -> str:
  return f'{bucket[0]}-{bucket[1]}'


def bucket_index(positions, T: int) -> np.ndarray:
  """Bucket number of each 1-based position (positions > T go to the last bucket)."""
  lasts = np.array([hi for _, hi in position_buckets(T)])
  idx = np.searchsorted(lasts, np.asarray(positions), side='left')
  return np.minimum(idx, len(lasts) - 1)


def bucket_sums(nll, weights, positions, T: int) -> tuple[np.ndarray, np.ndarray]:
  """(summed nll [num_buckets], token count [num_buckets]) of tokens at 1-based `positions`
  (any matching shapes), weighted by `weights` (0 = padding)."""
  nll, w = np.asarray(nll, np.float64).ravel(), np.asarray(weights, np.float64).ravel()
  idx = bucket_index(np.asarray(positions).ravel(), T)
  nb = len(position_buckets(T))
  return (np.bincount(idx, nll * w, minlength=nb), np.bincount(idx, w, minlength=nb))


def row_bucket_sums(nll_BT, weights_BT, positions_BT, T: int) -> tuple[np.ndarray, np.ndarray]:
  """Per row: (summed nll [B, num_buckets], token count [B, num_buckets]), as bucket_sums; the
  per-sequence sums that paired_difference pairs bucket by bucket."""
  nll, w = np.asarray(nll_BT, np.float64), np.asarray(weights_BT, np.float64)
  idx = bucket_index(positions_BT, T)
  nb = len(position_buckets(T))
  rows = np.broadcast_to(np.arange(nll.shape[0])[:, None], nll.shape)
  s, c = np.zeros((nll.shape[0], nb)), np.zeros((nll.shape[0], nb))
  np.add.at(s, (rows, idx), nll * w)
  np.add.at(c, (rows, idx), w)
  return s, c


def bucket_losses(sums, counts, T: int) -> dict:
  """{'1-32': {'loss', 'tokens'}, ...}; loss None for an empty bucket."""
  out = {}
  for b, s, n in zip(position_buckets(T), sums, counts):
    out[bucket_name(b)] = {'loss': float(s / n) if n > 0 else None, 'tokens': float(n)}
  return out


# ----------------------------------------------------------------------------- n-gram baselines

def _ngram_keys(docs: Sequence[np.ndarray], n: int, vocab_size: int):
  """(history key, token) of every token whose document gives it n-1 tokens of history."""
  hist, tok = [], []
  for d in docs:
    d = np.asarray(d, np.int64)
    if len(d) < n:
      continue
    h = np.zeros(len(d) - n + 1, np.int64)
    for j in range(n - 1):
      h = h * vocab_size + d[j:len(d) - n + 1 + j]
    hist.append(h)
    tok.append(d[n - 1:])
  if not hist:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  return np.concatenate(hist), np.concatenate(tok)


class _NGram:
  """Counts of (history, token) and of histories for one order n."""

  def __init__(self, docs, n: int, vocab_size: int):
    if n > 1 and float(vocab_size) ** n >= 2 ** 62:
      raise ValueError(f'ngram order {n} with vocab_size {vocab_size} overflows int64 keys.')
    self.n, self.V = n, vocab_size
    h, t = _ngram_keys(docs, n, vocab_size)
    self.pair_keys, self.pair_counts = np.unique(h * vocab_size + t, return_counts=True)
    self.hist_keys, self.hist_counts = np.unique(h, return_counts=True)

  @staticmethod
  def _lookup(keys, counts, query):
    if len(keys) == 0:
      return np.zeros(len(query))
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[i] == query, counts[i], 0).astype(np.float64)

  def nll(self, docs, k: float) -> tuple[float, float]:
    """(summed -log p, tokens) of the tokens with a full history of n-1 tokens."""
    h, t = _ngram_keys(docs, self.n, self.V)
    c_pair = self._lookup(self.pair_keys, self.pair_counts, h * self.V + t)
    c_hist = self._lookup(self.hist_keys, self.hist_counts, h)
    return float(-np.log((c_pair + k) / (c_hist + k * self.V)).sum()), float(len(t))


def _score(models, docs, ks) -> tuple[float, float]:
  """Nats/token of the order-len(models) model on docs: a token at document position i < n-1 is
  scored by the order-(i+1) model (its full available history)."""
  n = len(models)
  total, count = models[-1].nll(docs, ks[-1])
  for i in range(n - 1):  # token i of each document (if it exists) under the order-(i+1) model
    prefix = [np.asarray(d)[:i + 1] for d in docs if len(d) > i]
    if not prefix:
      continue
    s, c = models[i].nll(prefix, ks[i])   # a prefix of i+1 tokens: only token i has i of history
    total, count = total + s, count + c
  return total, count


def ngram_baselines(train_docs: Sequence[Sequence[int]], eval_docs: Sequence[Sequence[int]],
                    vocab_size: int, max_order: int = 3, k: Optional[float] = None) -> dict:
  """{'unigram': {'nll', 'k', 'tokens'}, 'bigram': ..., 'trigram': ...}: add-k n-gram models
  counted on `train_docs`, nats/token on `eval_docs` (see the module docstring). k=None picks
  k per order from K_GRID on the last tenth of the train documents (counted on the rest)."""
  train = [np.asarray(d, np.int64) for d in train_docs if len(d)]
  evals = [np.asarray(d, np.int64) for d in eval_docs if len(d)]
  if not train or not evals:
    raise ValueError('ngram_baselines: the train and the evaluation documents must hold tokens.')
  for name, docs in (('train', train), ('eval', evals)):
    top = max(int(d.max()) for d in docs)
    if top >= vocab_size or min(int(d.min()) for d in docs) < 0:
      raise ValueError(f'ngram_baselines: a {name} token id ({top}) is outside [0, {vocab_size}).')
  names = ('unigram', 'bigram', 'trigram', '4-gram', '5-gram')[:max_order]
  ks = []
  if k is None:
    if len(train) >= 10:
      cut = len(train) - max(1, len(train) // 10)
      fit, tune = train[:cut], train[cut:]
    else:  # one long document: split its tokens
      whole = np.concatenate(train)
      cut = int(len(whole) * 0.9)
      fit, tune = [whole[:cut]], [whole[cut:]]
    tune_models = [_NGram(fit, n, vocab_size) for n in range(1, max_order + 1)]
    for n in range(1, max_order + 1):
      best = min(K_GRID, key=lambda kk: _score(tune_models[:n], tune, ks + [kk])[0])
      ks.append(best)
  else:
    if k <= 0:
      raise ValueError(f'ngram_baselines: k={k}; expected k > 0.')
    ks = [k] * max_order
  models = [_NGram(train, n, vocab_size) for n in range(1, max_order + 1)]
  out = {}
  for n in range(1, max_order + 1):
    s, c = _score(models[:n], evals, ks[:n])
    out[names[n - 1]] = {'nll': s / c, 'k': ks[n - 1], 'tokens': c}
  return out


def where_it_sits(loss: float, baselines: dict) -> str:
  """'below trigram (1.97)' / 'between bigram (2.50) and trigram (1.97)' / 'above unigram ...'."""
  order = sorted(baselines.items(), key=lambda kv: -kv[1]['nll'])   # worst (unigram) first
  if loss > order[0][1]['nll']:
    return f'above {order[0][0]} ({order[0][1]["nll"]:.3f})'
  for (n1, b1), (n2, b2) in zip(order, order[1:]):
    if b2['nll'] < loss <= b1['nll']:
      return f'between {n1} ({b1["nll"]:.3f}) and {n2} ({b2["nll"]:.3f})'
  return f'below {order[-1][0]} ({order[-1][1]["nll"]:.3f})'
