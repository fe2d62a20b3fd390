"""Passkey retrieval: accuracy over a grid of context lengths x key depths (docs/ssa.md §3).

For every (length T, depth) cell, `num_examples` examples of ssa.data.synthetic.PasskeyTask
(T tokens of prefix + filler + key sentence + question, key at the given relative depth, split
'test') are cut right after the question; the model greedily decodes as many tokens as the answer
' {key}' has, and the example counts as correct when the first number of the decoded continuation
(after optional leading whitespace) is exactly the key: ' 123456' or ' 1234' is wrong for 12345.

The answer's token count may vary with the key (GPT-2 BPE splits five digits into 1-3 tokens), and
the prompt is the first T + 1 - n tokens of the example, so prompts are grouped by n: each
generate call decodes exactly n tokens after prompts of T + 1 - n tokens, which needs
T <= max_len whatever n is.

`generate(prompts, max_new_tokens) -> new tokens` is any greedy decoder
(ssa.evaluation.generation.generate_fn for a model; tests pass an oracle). Chance level: 1e-5.

Evaluation unit (common.Unit): UNIT [eval.passkey] runs the eval.passkey_* grid on the model:
results['passkey'] (the grid), 'passkey:mean_accuracy', figures/passkey.png (eval.figures).
"""

from __future__ import annotations

import os
import re
from typing import Callable, Optional, Sequence

import numpy as np

from ssa import plots
from ssa.config_lib import ConfigError
from ssa.data.synthetic import PasskeyTask
from ssa.evaluation import generation
from ssa.evaluation.common import EvalContext

_FIRST_NUMBER = re.compile(r'\s*(\d+)')


def passkey_prompts(tokenizer, seq_len: int, depth: float, num_examples: int, seed: int = 0,
                    decoys: int = 0, template: str = 'standard'):
  """[(prompt ids, key, number of answer tokens, decoy numbers)] of one grid cell."""
  task = PasskeyTask(tokenizer, seq_len, depth, seed, decoys, template)
  out = []
  for i in range(num_examples):
    ex = task.example(i, 'test')
    a = int(ex['answer_start'])
    prompt = [int(t) for t in ex['inputs'][:a + 1]]
    n_ans = int(ex['weights'].sum())
    out.append((prompt, int(ex['passkey']), n_ans,
                [int(n) for n in ex.get('decoy_numbers', ())]))
  return out


def decoded_number(tokenizer, ids: Sequence[int]) -> Optional[str]:
  """The digits of the number that starts the decoded text (after whitespace), else None."""
  m = _FIRST_NUMBER.match(tokenizer.decode(ids))
  return m.group(1) if m else None


def decoded_key(tokenizer, ids: Sequence[int]) -> Optional[int]:
  d = decoded_number(tokenizer, ids)
  return int(d) if d is not None else None


def is_correct(tokenizer, ids: Sequence[int], key: int) -> bool:
  """True when the continuation starts with exactly the key's digits (no extra digit)."""
  return decoded_number(tokenizer, ids) == str(int(key))


def evaluate_passkey(generate: Callable, tokenizer, lengths: Sequence[int],
                     depths: Sequence[float], num_examples: int, seed: int = 0,
                     batch_size: int = 8, decoys: int = 0, progress=None,
                     template: str = 'standard') -> dict:
  """{'lengths', 'depths', 'accuracy' [len(lengths)][len(depths)], 'mean_accuracy', examples};
  with decoys, also 'decoy_rate' (same grid): the fraction of answers that are a decoy's number.
  'correct' [len(lengths)][len(depths)][num_examples]: 0/1 per example (the same examples for
  every model given the same seed, decoys and template: paired comparisons use it). progress: None
  or a tqdm-like bar, update(1) per (length, depth) cell. template: data.passkey_template
  (recorded in the result when not 'standard')."""
  acc = np.zeros([len(lengths), len(depths)])
  correct_items = [[None] * len(depths) for _ in lengths]
  fooled = np.zeros_like(acc)
  samples = []
  for i, T in enumerate(lengths):
    for j, depth in enumerate(depths):
      cell = passkey_prompts(tokenizer, int(T), float(depth), num_examples, seed, decoys, template)
      outs: list = [None] * len(cell)
      # One group per answer length n: prompts of T + 1 - n tokens, n new tokens each.
      for n in sorted({c[2] for c in cell}):
        idx = [k for k, c in enumerate(cell) if c[2] == n]
        for s in range(0, len(idx), batch_size):
          chunk = idx[s:s + batch_size]
          for k, out in zip(chunk, generate([cell[k][0] for k in chunk], n)):
            outs[k] = list(out)[:n]
      correct = wrong_decoy = 0
      items = []
      for (_, key, _, decoy_nums), out in zip(cell, outs):
        items.append(int(is_correct(tokenizer, out, key)))
        correct += items[-1]
        wrong_decoy += int(any(is_correct(tokenizer, out, d) for d in decoy_nums))
        if len(samples) < 5:
          samples.append({'length': int(T), 'depth': float(depth), 'key': key,
                          'output': tokenizer.decode(out)})
      acc[i, j] = correct / len(cell)
      if progress is not None:
        progress.update(1)
      correct_items[i][j] = items
      fooled[i, j] = wrong_decoy / len(cell)
  out = {'lengths': [int(t) for t in lengths], 'depths': [float(d) for d in depths],
         'accuracy': acc.tolist(), 'mean_accuracy': float(acc.mean()),
         'num_examples': int(num_examples), 'samples': samples, 'decoys': int(decoys),
         'correct': correct_items}
  if template != 'standard':
    out['template'] = template
  if decoys:
    out['decoy_rate'] = fooled.tolist()
    out['mean_decoy_rate'] = float(fooled.mean())
  return out


class Passkey:
  """eval.passkey: the grid of eval.passkey_lengths x eval.passkey_depths, greedy kv-cache."""
  name = 'passkey'

  def enabled(self, config) -> bool:
    return bool(config.eval.passkey)

  def run(self, ctx: EvalContext) -> None:
    e, lm, config = ctx.config.eval, ctx.lm, ctx.config
    too_long = [t for t in e.passkey_lengths if t > lm.max_len]
    if too_long:
      raise ConfigError(f'eval.passkey_lengths={tuple(e.passkey_lengths)} has lengths {too_long} '
                        f'above the model context {lm.max_len}.')
    gen = generation.generate_fn(lm, pad_id=ctx.tok.pad_id)
    with ctx.bar('passkey cells', len(e.passkey_lengths) * len(e.passkey_depths)) as bar:
      r = evaluate_passkey(gen, ctx.tok, e.passkey_lengths, e.passkey_depths,
                           e.passkey_num_examples, seed=config.data.seed,
                           batch_size=e.batch_size, decoys=config.data.passkey_decoys,
                           progress=bar, template=config.data.passkey_template)
    ctx.results['passkey'] = r
    ctx.metrics['passkey:mean_accuracy'] = r['mean_accuracy']
    ctx.log(f'passkey: mean accuracy {r["mean_accuracy"]:.3f}')
    if e.figures:
      ctx.results['figures'].append(plots.passkey_heatmap(
          r, os.path.join(ctx.fig_dir, 'passkey.png'),
          f'passkey {config.model.preset} {config.ssa.strategy}'))


UNIT = Passkey()
