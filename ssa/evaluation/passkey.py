"""Passkey retrieval: accuracy over a grid of context lengths x key depths (SSA_SPEC §3).

For every (length T, depth) cell, `num_examples` examples of ssa.data.synthetic.PasskeyTask
(T tokens of prefix + filler + key sentence + question, key at the given relative depth, split
'test') are cut right after the question; the model greedily decodes as many tokens as the answer
' {key}' has, and the example counts as correct when the five digits it produced equal the key.

`generate(prompts, max_new_tokens) -> new tokens` is any greedy decoder
(ssa.evaluation.generation.generate_fn for a model; tests pass an oracle). Chance level: 1e-5.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from ssa.data.synthetic import PasskeyTask

_DIGITS = re.compile(r'\d{5}')


def passkey_prompts(tokenizer, seq_len: int, depth: float, num_examples: int, seed: int = 0):
  """[(prompt ids, key, number of answer tokens)] of one grid cell."""
  task = PasskeyTask(tokenizer, seq_len, depth, seed)
  out = []
  for i in range(num_examples):
    ex = task.example(i, 'test')
    a = int(ex['answer_start'])
    prompt = [int(t) for t in ex['inputs'][:a + 1]]
    n_ans = int(ex['weights'].sum())
    out.append((prompt, int(ex['passkey']), n_ans))
  return out


def decoded_key(tokenizer, ids: Sequence[int]):
  m = _DIGITS.search(tokenizer.decode(ids))
  return int(m.group(0)) if m else None


def evaluate_passkey(generate: Callable, tokenizer, lengths: Sequence[int],
                     depths: Sequence[float], num_examples: int, seed: int = 0,
                     batch_size: int = 8) -> dict:
  """{'lengths', 'depths', 'accuracy' [len(lengths)][len(depths)], 'mean_accuracy', examples}."""
  acc = np.zeros([len(lengths), len(depths)])
  samples = []
  for i, T in enumerate(lengths):
    for j, depth in enumerate(depths):
      cell = passkey_prompts(tokenizer, int(T), float(depth), num_examples, seed)
      n_new = max(n for _, _, n in cell)
      correct = 0
      for s in range(0, len(cell), batch_size):
        chunk = cell[s:s + batch_size]
        outs = generate([p for p, _, _ in chunk], n_new)
        for (_, key, n), out in zip(chunk, outs):
          got = decoded_key(tokenizer, out[:n])
          correct += int(got == key)
          if len(samples) < 5:
            samples.append({'length': int(T), 'depth': float(depth), 'key': key,
                            'output': tokenizer.decode(out[:n])})
      acc[i, j] = correct / len(cell)
  return {'lengths': [int(t) for t in lengths], 'depths': [float(d) for d in depths],
          'accuracy': acc.tolist(), 'mean_accuracy': float(acc.mean()),
          'num_examples': int(num_examples), 'samples': samples}
