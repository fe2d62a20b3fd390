"""Synthetic tasks (docs/ssa.md §3): passkey retrieval, graph next-token, denoising.

Every example is a pure function of (seed, split, index): numpy Generator seeded with
[seed, split id, index] (split ids: train 0, validation 1, test 2), so a task is deterministic given
its seed, random access, and cheap to shard (process p of P takes indices p, p+P, ...).

Passkey retrieval  (`passkey_example`, `passkey_dataset`)
  Token layout, exactly T + 1 tokens (T = seq_len), with text pieces tokenized separately:
    PREFIX | filler[:cut] | KEY_SENTENCE | filler[cut:] | QUESTION | ANSWER
    PREFIX   = "There is an important info hidden inside a lot of irrelevant text. Find it and
                memorize it. I will quiz you about the important information there."
    filler   = the sentences of FILLER_SENTENCES repeated, truncated to the token budget
               (budget = T + 1 - all other pieces: the "filler length" is set by seq_len)
    KEY_SENTENCE = " The pass key is {key}. Remember it. {key} is the pass key."
    QUESTION = " What is the pass key? The pass key is"     ANSWER = " {key}"
  key: five-digit integer uniform in [10000, 99999]. depth in [0, 1] (None = uniform per example):
  the key sentence starts at the filler sentence boundary nearest to depth * filler length.
  inputs = tokens[:-1], targets = tokens[1:], weights = 1 exactly on the positions whose target is
  an ANSWER token (the only scored targets), 0 elsewhere; segment_ids = 1, positions = 0..T-1.
  Extra fields: 'passkey' (the key), 'key_start' (input index where KEY_SENTENCE starts),
  'answer_start' (first input index whose target is an answer token).
  Answer-recovery rule: the key is the five digits after "The pass key is " in decode(inputs);
  decode(targets[weights > 0]) == " {key}".
  Decoys (decoys = m > 0; data.passkey_decoys): the key can no longer be found by token identity
  (the only run of digits). m DECOY_SENTENCEs " The {label} is {num}. Remember it. {num} is the
  {label}." are added, each with a distinct label from DECOY_LABELS and a five-digit number other
  than the key and the other decoys, each at a uniformly random filler sentence boundary; and the
  filler becomes random: each sentence drawn uniformly from FILLER_SENTENCES + RANDOM_FILLER.
  Only the label tells the pass key from a decoy. Extra fields 'decoy_starts' [m] (input indices) and
  'decoy_numbers' [m].
  Templates (data.passkey_template; PASSKEY_TEMPLATES): 'standard' is the layout above; 'compact'
  is the same task in about a third of the text, for byte-level models at short T: no PREFIX,
  KEY_SENTENCE = " The pass key is {key}.", DECOY_SENTENCE = " The {label} is {num}.", the same
  QUESTION and ANSWER (with 3 decoys it needs ~150 bytes, the standard one ~480).

Graph next-token  (`Graph`, `graph_dataset`)
  A directed random graph on V = num_nodes nodes (node = token id): node i has out-degree
  deg_i ~ uniform integer in [min_degree, max_degree] and deg_i distinct out-neighbours drawn
  uniformly (self-loops allowed), all from the task seed (the graph is the same for every split).
  Target law P*(. | i) = uniform over the out-neighbours of i (`Graph.target_law()`, [V, V]).
  An example is a random walk of T + 1 nodes: x_0 uniform, x_{t+1} ~ P*(. | x_t);
  inputs = walk[:-1], targets = walk[1:], weights = 1, segment_ids = 1, positions = 0..T-1.
  Answer-recovery rule: targets[t] is an out-neighbour of inputs[t], each with probability
  1 / deg(inputs[t]).

Denoising  (`denoising_example`, `denoising_dataset`)
  Hidden mean mu ~ N(0, I_d). A context of n tokens, k of them signal (random positions):
  z_j = mu + sigma_signal * eps_j (signal), z_j = sigma_noise * eps_j (pure noise), eps ~ N(0, I_d).
  inputs = [n, d + 1]: z_j with a last channel s_j = 1 for signal, 0 for noise. target = mu.
  Answer-recovery rule (Bayes-optimal posterior mean, `denoising_bayes_estimate`):
    mu_hat = sum_{s_j = 1} z_j / (k + sigma_signal^2), expected squared error per coordinate
    sigma_signal^2 / (k + sigma_signal^2) (exact when sigma_signal = 0). Naive averaging of all
    tokens (`denoising_naive_estimate`) is the baseline.
"""

from __future__ import annotations

import dataclasses
import re
import sys

import grain
import numpy as np

from ssa.data import tokenizers
from ssa.data.errors import DataError

SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}
PASSKEY_PREFIX = ('There is an important info hidden inside a lot of irrelevant text. Find it and '
                  'memorize it. I will quiz you about the important information there.')
FILLER_SENTENCES = (' The grass is green.', ' The sky is blue.', ' The sun is yellow.',
                    ' Here we go.', ' There and back again.')
PASSKEY_SENTENCE = ' The pass key is {key}. Remember it. {key} is the pass key.'
PASSKEY_QUESTION = ' What is the pass key? The pass key is'
PASSKEY_ANSWER = ' {key}'
PASSKEY_RE = re.compile(r'The pass key is (\d{5})\.')
DECOY_SENTENCE = ' The {label} is {num}. Remember it. {num} is the {label}.'
DECOY_LABELS = ('door code', 'locker number', 'bank pin', 'room number', 'ticket number',
                'safe combination', 'badge id', 'order number')
RANDOM_FILLER = (' The river is wide.', ' A bird sang at dawn.', ' The road turns left.',
                 ' Bread is baked daily.', ' The wind is cold.', ' A door opened slowly.',
                 ' The hills are far away.', ' Rain fell all night.')


@dataclasses.dataclass(frozen=True)
class PasskeyTemplate:
  """The text pieces of one passkey layout (data.passkey_template)."""
  prefix: str
  key_sentence: str     # {key}
  decoy_sentence: str   # {label}, {num}
  question: str
  answer: str = PASSKEY_ANSWER


PASSKEY_TEMPLATES = {
    'standard': PasskeyTemplate(PASSKEY_PREFIX, PASSKEY_SENTENCE, DECOY_SENTENCE,
                                PASSKEY_QUESTION),
    # The same task in ~1/3 of the text, for byte-level models at short T: no prefix, the key and
    # decoy sentences once each.
    'compact': PasskeyTemplate('', ' The pass key is {key}.', ' The {label} is {num}.',
                               PASSKEY_QUESTION),
}


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in SPLIT_IDS:
    raise DataError(f'synthetic split {split!r}; expected one of {sorted(SPLIT_IDS)}.')
  return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def _row(tokens: np.ndarray) -> dict[str, np.ndarray]:
  t = len(tokens) - 1
  return {'inputs': tokens[:-1].astype(np.int32), 'targets': tokens[1:].astype(np.int32),
          'weights': np.ones([t], np.float32), 'segment_ids': np.ones([t], np.int32),
          'positions': np.arange(t, dtype=np.int32)}


# ----------------------------------------------------------------------------- passkey

class PasskeyTask:
  """Passkey examples for one tokenizer and sequence length (see module docstring)."""

  def __init__(self, tokenizer, seq_len: int, depth: float | None = 0.5, seed: int = 0,
               decoys: int = 0, template: str = 'standard'):
    if depth is not None and not 0.0 <= depth <= 1.0:
      raise DataError(f'passkey depth={depth}; expected a number in [0, 1] or None (random).')
    if isinstance(decoys, bool) or not isinstance(decoys, (int, np.integer)) or not (
        0 <= decoys <= len(DECOY_LABELS)):
      raise DataError(f'passkey decoys={decoys!r}; expected an integer in 0..{len(DECOY_LABELS)} '
                      '(one per label of DECOY_LABELS).')
    if template not in PASSKEY_TEMPLATES:
      raise DataError(f'passkey template={template!r}; expected one of '
                      f'{sorted(PASSKEY_TEMPLATES)}.')
    self.tokenizer, self.seq_len, self.depth, self.seed = tokenizer, seq_len, depth, seed
    self.decoys, self.template = int(decoys), template
    tp = self._tp = PASSKEY_TEMPLATES[template]
    enc = lambda s: np.asarray(tokenizer.encode(s), np.int32)
    self._prefix, self._question = enc(tp.prefix), enc(tp.question)
    pool = FILLER_SENTENCES + (RANDOM_FILLER if self.decoys else ())
    self._sentences = [enc(s) for s in pool]
    samples = (10000, 99999, 12345, 67890, 31415)
    longest = max(len(enc(tp.key_sentence.format(key=k)) + len(enc(tp.answer.format(key=k))))
                  for k in samples)
    longest += sum(sorted((len(enc(tp.decoy_sentence.format(label=l, num=n)))
                           for l in DECOY_LABELS for n in samples), reverse=True)[:self.decoys])
    need = len(self._prefix) + len(self._question) + longest + 4
    if seq_len + 1 < need:
      raise DataError(f'passkey: seq_len={seq_len} is too short for the passkey template '
                      f'({self.decoys} decoys) with tokenizer {tokenizer.name!r}; it needs at '
                      f'least ~{need} tokens ({template!r} template).')

  def example(self, index: int, split: str = 'train') -> dict[str, np.ndarray]:
    rng = _rng(self.seed, split, index)
    key = int(rng.integers(10000, 100000))
    depth = float(rng.random()) if self.depth is None else self.depth
    enc = lambda s: np.asarray(self.tokenizer.encode(s), np.int32)
    tp = self._tp
    key_ids, ans_ids = enc(tp.key_sentence.format(key=key)), enc(tp.answer.format(key=key))
    decoy_ids = []
    if self.decoys:
      labels = rng.choice(len(DECOY_LABELS), self.decoys, replace=False)
      nums = set()
      while len(nums) < self.decoys:
        n = int(rng.integers(10000, 100000))
        if n != key:
          nums.add(n)
      decoy_nums = [int(n) for n in rng.permutation(sorted(nums))]
      decoy_ids = [enc(tp.decoy_sentence.format(label=DECOY_LABELS[l], num=n))
                   for l, n in zip(labels, decoy_nums)]
    budget = (self.seq_len + 1 - len(self._prefix) - len(key_ids) - len(self._question)
              - len(ans_ids) - sum(map(len, decoy_ids)))
    if budget < 0:
      raise DataError(f'passkey: seq_len={self.seq_len} is too short for key {key}.')
    filler, bounds = [], [0]
    while bounds[-1] < budget:
      i = (int(rng.integers(len(self._sentences))) if self.decoys
           else (len(bounds) - 1) % len(self._sentences))
      filler.append(self._sentences[i])
      bounds.append(bounds[-1] + len(filler[-1]))
    filler = np.concatenate(filler)[:budget] if filler else np.zeros([0], np.int32)
    bounds = np.array([b for b in bounds if b <= budget])
    cut = int(bounds[np.argmin(np.abs(bounds - depth * budget))])
    # (filler offset, order, tokens) of every inserted sentence; the key first at equal offsets
    inserts = [(cut, 0, key_ids)] + [(int(rng.choice(bounds)), 1 + j, d)
                                     for j, d in enumerate(decoy_ids)]
    inserts.sort(key=lambda x: (x[0], x[1]))
    pieces, starts, at, pos = [self._prefix], {}, 0, len(self._prefix)
    for off, order, ids in inserts:
      pieces.append(filler[at:off])
      pos += off - at
      starts[order] = pos
      pieces.append(ids)
      pos += len(ids)
      at = off
    pieces += [filler[at:], self._question, ans_ids]
    tokens = np.concatenate(pieces).astype(np.int32)
    assert len(tokens) == self.seq_len + 1
    row = _row(tokens)
    answer_start = self.seq_len + 1 - len(ans_ids) - 1
    row['weights'] = np.zeros([self.seq_len], np.float32)
    row['weights'][answer_start:] = 1.0
    row['passkey'] = np.int32(key)
    row['key_start'] = np.int32(starts[0])
    row['answer_start'] = np.int32(answer_start)
    if self.decoys:
      row['decoy_starts'] = np.array([starts[1 + j] for j in range(self.decoys)], np.int32)
      row['decoy_numbers'] = np.array(decoy_nums, np.int32)
    return row


def passkey_recover(inputs: np.ndarray, tokenizer) -> int:
  """The documented recovery rule: the five digits after 'The pass key is ' (and before a '.')
  in the input text (either template)."""
  m = PASSKEY_RE.search(tokenizer.decode(inputs))
  if m is None:
    raise ValueError('no passkey sentence in the input.')
  return int(m.group(1))


# ----------------------------------------------------------------------------- graph

class NodeTokenizer:
  """Identity 'tokenizer' of the graph task: token id = node id, vocab = num_nodes."""

  def __init__(self, num_nodes: int):
    self.name, self.vocab_size, self.eos_id, self.pad_id = f'nodes{num_nodes}', num_nodes, 0, 0

  def encode(self, text: str) -> list[int]:
    return [int(x) for x in text.split()]

  def decode(self, ids) -> str:
    return ' '.join(str(int(i)) for i in ids)


class Graph:
  """The random graph of the graph next-token task (module docstring)."""

  def __init__(self, num_nodes: int = 64, min_degree: int = 1, max_degree: int = 16, seed: int = 0):
    if not 1 <= min_degree <= max_degree <= num_nodes:
      raise DataError(f'graph task: need 1 <= graph_min_degree ({min_degree}) <= graph_max_degree '
                      f'({max_degree}) <= graph_num_nodes ({num_nodes}).')
    rng = np.random.default_rng([int(seed), 1000])
    self.num_nodes, self.seed = num_nodes, seed
    self.degrees = rng.integers(min_degree, max_degree + 1, size=num_nodes)
    self.neighbours = [np.sort(rng.choice(num_nodes, size=int(k), replace=False))
                       for k in self.degrees]

  def target_law(self) -> np.ndarray:
    """P*[i, j] = 1 / deg(i) if j is an out-neighbour of i, else 0."""
    p = np.zeros([self.num_nodes, self.num_nodes], np.float64)
    for i, nb in enumerate(self.neighbours):
      p[i, nb] = 1.0 / len(nb)
    return p

  def walk(self, length: int, rng: np.random.Generator) -> np.ndarray:
    x = np.empty([length], np.int32)
    x[0] = rng.integers(self.num_nodes)
    u = rng.random(length)
    for t in range(1, length):
      nb = self.neighbours[x[t - 1]]
      x[t] = nb[min(int(u[t] * len(nb)), len(nb) - 1)]
    return x

  def example(self, index: int, seq_len: int, split: str = 'train') -> dict[str, np.ndarray]:
    return _row(self.walk(seq_len + 1, _rng(self.seed, split, index)))


# ----------------------------------------------------------------------------- denoising

def denoising_example(index: int, *, num_tokens: int = 32, dim: int = 8, num_signal: int = 8,
                      sigma_signal: float = 0.5, sigma_noise: float = 2.0, seed: int = 0,
                      split: str = 'train') -> dict[str, np.ndarray]:
  """{'inputs': [n, d+1] float32, 'targets': [d] (= mu), 'is_signal': [n] bool}."""
  if not 0 < num_signal <= num_tokens:
    raise DataError(f'denoising: need 0 < num_signal ({num_signal}) <= num_tokens ({num_tokens}).')
  rng = _rng(seed, split, index)
  mu = rng.standard_normal(dim)
  signal = np.zeros([num_tokens], bool)
  signal[rng.choice(num_tokens, size=num_signal, replace=False)] = True
  eps = rng.standard_normal([num_tokens, dim])
  z = np.where(signal[:, None], mu + sigma_signal * eps, sigma_noise * eps)
  inputs = np.concatenate([z, signal[:, None].astype(np.float64)], axis=1)
  return {'inputs': inputs.astype(np.float32), 'targets': mu.astype(np.float32),
          'is_signal': signal}


def denoising_bayes_estimate(inputs: np.ndarray, sigma_signal: float) -> np.ndarray:
  """Posterior mean of mu (prior N(0, I)): sum of signal tokens / (k + sigma_signal^2)."""
  z, s = inputs[..., :-1], inputs[..., -1:]
  k = s.sum(axis=-2)
  return (z * s).sum(axis=-2) / (k + sigma_signal ** 2)


def denoising_naive_estimate(inputs: np.ndarray) -> np.ndarray:
  """Average of all context tokens (signal and noise)."""
  return inputs[..., :-1].mean(axis=-2)


# ----------------------------------------------------------------------------- datasets

def _indexed(fn, num_examples, batch_size, process_index, process_count) -> grain.IterDataset:
  n = sys.maxsize if num_examples is None else num_examples
  ds = grain.MapDataset.range(n)[process_index::process_count].map(fn)
  return ds.batch(batch_size, drop_remainder=num_examples is None).to_iter_dataset()


def passkey_dataset(tokenizer, *, seq_len, batch_size, depth=0.5, seed=0, split='train',
                    num_examples=None, process_index=0, process_count=1,
                    decoys: int = 0, template: str = 'standard') -> grain.IterDataset:
  """Batches of passkey examples (num_examples=None: infinite); per-process batch_size."""
  task = PasskeyTask(tokenizer, seq_len, depth, seed, decoys, template)
  return _indexed(lambda i: task.example(i, split), num_examples, batch_size, process_index,
                  process_count)


def graph_dataset(graph: Graph, *, seq_len, batch_size, split='train', num_examples=None,
                  process_index=0, process_count=1) -> grain.IterDataset:
  """Batches of random walks on `graph`."""
  return _indexed(lambda i: graph.example(i, seq_len, split), num_examples, batch_size,
                  process_index, process_count)


def denoising_dataset(*, batch_size, num_examples=None, split='train', process_index=0,
                      process_count=1, **task_kwargs) -> grain.IterDataset:
  """Batches of denoising examples; task_kwargs as in `denoising_example`."""
  denoising_example(0, **task_kwargs)  # validate parameters eagerly
  return _indexed(lambda i: denoising_example(i, split=split, **task_kwargs), num_examples,
                  batch_size, process_index, process_count)


def lm_task_dataset(d, split: str, process_index: int, process_count: int):
  """(IterDataset, tokenizer) of config.data.dataset in ('passkey', 'graph')."""
  b = d.batch_size // process_count
  if d.dataset == 'passkey':
    tok = tokenizers.get_tokenizer(d.tokenizer, d.eos_token)
    n = None if split == d.train_split else d.passkey_num_examples
    return passkey_dataset(tok, seq_len=d.seq_len, batch_size=b, depth=d.passkey_depth,
                           seed=d.seed, split=split, num_examples=n, process_index=process_index,
                           process_count=process_count, decoys=d.passkey_decoys,
                           template=d.passkey_template), tok
  if d.dataset == 'graph':
    g = Graph(d.graph_num_nodes, d.graph_min_degree, d.graph_max_degree, d.seed)
    n = None if split == d.train_split else d.passkey_num_examples
    return graph_dataset(g, seq_len=d.seq_len, batch_size=b, split=split, num_examples=n,
                         process_index=process_index, process_count=process_count), \
        NodeTokenizer(d.graph_num_nodes)
  raise DataError(f'config.data.dataset={d.dataset!r} is not a synthetic LM task.')
