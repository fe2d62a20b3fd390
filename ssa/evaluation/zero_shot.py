"""Zero-shot multiple choice by log-likelihood, scored as lm-evaluation-harness scores it.

Tasks are read from local JSONL files (one record per line) in the public field layouts of the
Hugging Face datasets the harness uses; nothing is downloaded. File: <dir>/<task>.jsonl.

  task              fields (dataset)                                   request(s)             metrics
  lambada_standard  text (EleutherAI/lambada_openai / lambada)         ctx = text up to the   acc (greedy),
                                                                       last space, cont =     perplexity
                                                                       ' ' + last word
  piqa              goal, sol1, sol2, label (0/1) (piqa)               'Question: {goal}\\nAnswer:' acc, acc_norm
                                                                       + ' ' + sol_i
  hellaswag         activity_label, ctx_a, ctx_b, endings, label       preprocess(activity_label acc, acc_norm
                    (Rowan/hellaswag)                                  + ': ' + ctx_a + ' ' +
                                                                       ctx_b.capitalize()) + ' '
                                                                       + preprocess(ending_i)
  winogrande        sentence, option1, option2, answer ('1'/'2')       partial scoring: ctx_i =  acc
                    (winogrande xl)                                    sentence[:_] + option_i,
                                                                       cont = ' ' + the text
                                                                       after '_' (stripped)
  arc_easy,         question, choices {text, label}, answerKey         'Question: {q}\\nAnswer:' acc, acc_norm
  arc_challenge     (allenai/ai2_arc)                                  + ' ' + choice_i

acc = [argmax_i LL_i == gold]; acc_norm = [argmax_i LL_i / len(choice_i in characters) == gold]
(np.argmax: the first of tied choices), as the harness's multiple_choice output type. Requests are
tokenized with the harness's rule (_encode_pair): trailing spaces of the context move to the
continuation, continuation tokens = encode(context + continuation)[len(encode(context)):].
Result keys: '<task>:<metric>' ('lambada_standard:acc', 'hellaswag:acc_norm', ...).

Evaluation unit (common.Unit): UNIT [eval.zero_shot_dir] scores eval.zero_shot_tasks and writes the
paper-ordered table to zero_shot.md and results['zero_shot_table'].
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Callable, Optional, Sequence

import numpy as np

from ssa.evaluation.common import EvalContext, check_limit, read_jsonl

TASKS = ('lambada_standard', 'piqa', 'hellaswag', 'winogrande', 'arc_easy', 'arc_challenge')
# The paper's table columns (docs/ssa.md §3), in order: (result key, header).
PAPER_COLUMNS = (('wikitext:word_perplexity', 'Wiki. ppl ↓'),
                 ('lambada_standard:perplexity', 'LMB. ppl ↓'),
                 ('lambada_standard:acc', 'LMB. acc ↑'), ('piqa:acc', 'PIQA acc ↑'),
                 ('hellaswag:acc_norm', 'Hella. acc_n ↑'), ('winogrande:acc', 'Wino. acc ↑'),
                 ('arc_easy:acc', 'ARC-e acc ↑'), ('arc_challenge:acc_norm', 'ARC-c acc_n ↑'))


@dataclasses.dataclass
class Doc:
  """One multiple-choice item: (context, continuation) per choice, gold index, choice strings."""
  contexts: list[str]
  continuations: list[str]
  gold: int
  choices: list[str]   # the choice strings whose lengths normalise acc_norm


def _hellaswag_preprocess(text: str) -> str:
  text = text.strip()
  text = text.replace(' [title]', '. ')
  text = re.sub('\\[.*?\\]', '', text)
  return text.replace('  ', ' ')


def _gold(value, n: int, field: str, where: str) -> int:
  try:
    g = int(value)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{where}: field {field!r}={value!r} is not an integer label.') from e
  if not 0 <= g < n:
    raise ValueError(f'{where}: field {field!r}={value!r} is out of range for {n} choices.')
  return g


def _mc(ctx: str, choices: Sequence[str], gold: int) -> Doc:
  return Doc([ctx] * len(choices), [' ' + c for c in choices], gold, list(choices))


def make_doc(task: str, r: dict, where: str) -> Doc:
  """The Doc of record r of `task` (see the module docstring)."""
  if task == 'lambada_standard':
    text = r['text']
    if ' ' not in text.strip():
      raise ValueError(f'{where}: field "text" has no last word to predict.')
    ctx, word = text.rsplit(' ', 1)
    return Doc([ctx], [' ' + word], 0, [word])
  if task == 'piqa':
    return _mc(f"Question: {r['goal']}\nAnswer:", [r['sol1'], r['sol2']],
               _gold(r['label'], 2, 'label', where))
  if task == 'hellaswag':
    ctx = r['ctx_a'] + ' ' + r['ctx_b'].capitalize()
    query = _hellaswag_preprocess(r['activity_label'] + ': ' + ctx)
    endings = [_hellaswag_preprocess(e) for e in r['endings']]
    return _mc(query, endings, _gold(r['label'], len(endings), 'label', where))
  if task == 'winogrande':
    sentence = r['sentence']
    if '_' not in sentence:
      raise ValueError(f'{where}: field "sentence" has no "_" blank.')
    i = sentence.index('_')
    cont = sentence[i + 1:].strip()
    opts = [r['option1'], r['option2']]
    gold = _gold(r['answer'], 3, 'answer', where) - 1
    if gold < 0:
      raise ValueError(f'{where}: field "answer"={r["answer"]!r}; expected "1" or "2".')
    return Doc([sentence[:i] + o for o in opts], [' ' + cont] * 2, gold,
               [sentence[:i] + o for o in opts])
  if task in ('arc_easy', 'arc_challenge'):
    ch = r['choices']
    if not isinstance(ch, dict) or 'text' not in ch or 'label' not in ch:
      raise ValueError(f'{where}: field "choices" must be {{"text": [...], "label": [...]}}.')
    if r['answerKey'] not in ch['label']:
      raise ValueError(f'{where}: answerKey {r["answerKey"]!r} is not one of the choice labels '
                       f'{ch["label"]}.')
    return _mc(f"Question: {r['question']}\nAnswer:", list(ch['text']),
               ch['label'].index(r['answerKey']))
  raise ValueError(f'Unknown zero-shot task {task!r}; expected one of {list(TASKS)}.')


FIELDS = {'lambada_standard': ('text',), 'piqa': ('goal', 'sol1', 'sol2', 'label'),
          'hellaswag': ('activity_label', 'ctx_a', 'ctx_b', 'endings', 'label'),
          'winogrande': ('sentence', 'option1', 'option2', 'answer'),
          'arc_easy': ('question', 'choices', 'answerKey'),
          'arc_challenge': ('question', 'choices', 'answerKey')}


def load_task(task: str, path: str, limit: Optional[int] = None) -> list[Doc]:
  """Docs of a task's JSONL file (the first `limit` >= 1, None = all); missing file / field raise
  naming them."""
  if task not in FIELDS:
    raise ValueError(f'Unknown zero-shot task {task!r}; expected one of {list(TASKS)}.')
  check_limit(limit, 'eval.zero_shot_limit')
  recs = read_jsonl(path, FIELDS[task], task)[:limit]
  return [make_doc(task, r, f'{path}:{i + 1}') for i, r in enumerate(recs)]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  """The harness's _encode_pair: trailing context spaces move to the continuation."""
  n = len(context) - len(context.rstrip())
  if n > 0:
    continuation = context[-n:] + continuation
    context = context[:-n]
  if not context:
    return [], list(tokenizer.encode(continuation))
  whole = list(tokenizer.encode(context + continuation))
  ctx = list(tokenizer.encode(context))
  return ctx, whole[len(ctx):]


def score_docs(task: str, docs: Sequence[Doc], loglikelihood: Callable, tokenizer) -> dict:
  """Metrics of `task`; loglikelihood([(ctx_ids, cont_ids)]) -> [(ll, is_greedy)]."""
  reqs, owners = [], []
  for d, doc in enumerate(docs):
    for c, k in zip(doc.contexts, doc.continuations):
      reqs.append(encode_pair(tokenizer, c, k))
      owners.append(d)
  results = loglikelihood(reqs)
  per_doc: list[list] = [[] for _ in docs]
  for (ll, greedy), d in zip(results, owners):
    per_doc[d].append((ll, greedy))
  out = {}
  if task == 'lambada_standard':
    lls = np.array([r[0][0] for r in per_doc])
    out['acc'] = float(np.mean([r[0][1] for r in per_doc]))
    out['perplexity'] = float(math.exp(min(-lls.mean(), 700.0)))
  else:
    accs, norms = [], []
    for doc, res in zip(docs, per_doc):
      lls = np.array([ll for ll, _ in res])
      lens = np.array([float(len(c)) for c in doc.choices])
      accs.append(float(np.argmax(lls) == doc.gold))
      norms.append(float(np.argmax(lls / lens) == doc.gold))
    out['acc'] = float(np.mean(accs))
    if task != 'winogrande':
      out['acc_norm'] = float(np.mean(norms))
  out['n'] = len(docs)
  return {f'{task}:{k}': v for k, v in out.items()}


def evaluate_tasks(task_dir: str, tasks: Sequence[str], loglikelihood: Callable, tokenizer,
                   limit: Optional[int] = None) -> dict:
  """Results of every task in `tasks`, each from <task_dir>/<task>.jsonl."""
  check_limit(limit, 'eval.zero_shot_limit')
  out = {}
  for task in tasks:
    docs = load_task(task, os.path.join(os.path.expanduser(task_dir), f'{task}.jsonl'), limit)
    out.update(score_docs(task, docs, loglikelihood, tokenizer))
  return out


def _fmt(key: str, v) -> str:
  if v is None:
    return '–'
  if 'perplexity' in key:
    return f'{v:.2f}'
  return f'{100 * v:.1f}'


def markdown_table(rows: dict[str, dict], columns=PAPER_COLUMNS) -> str:
  """Markdown table, one row per run (name -> results), the paper's columns (accuracies in %)."""
  head = '| run | ' + ' | '.join(h for _, h in columns) + ' |'
  sep = '|---|' + '---:|' * len(columns)
  lines = [head, sep]
  for name, res in rows.items():
    lines.append(f'| {name} | ' + ' | '.join(_fmt(k, res.get(k)) for k, _ in columns) + ' |')
  return '\n'.join(lines)


class ZeroShot:
  """eval.zero_shot_dir: '<task>:<metric>' of eval.zero_shot_tasks, and the paper's table."""
  name = 'zero_shot'

  def enabled(self, config) -> bool:
    return bool(config.eval.zero_shot_dir)

  def run(self, ctx: EvalContext) -> None:
    e, tok, scorer = ctx.config.eval, ctx.tok, ctx.scorer
    with ctx.bar('zero-shot requests') as bar:
      r = evaluate_tasks(e.zero_shot_dir, list(e.zero_shot_tasks),
                         lambda reqs: scorer.loglikelihood(reqs, prefix_token=tok.eos_id,
                                                           progress=bar), tok, e.zero_shot_limit)
    ctx.metrics.update(r)
    table = markdown_table({f'{ctx.config.model.preset} {ctx.config.ssa.strategy}': ctx.metrics})
    ctx.results['zero_shot_table'] = table
    with open(os.path.join(ctx.output_dir, 'zero_shot.md'), 'w') as f:
      f.write(table + '\n')
    ctx.log(table)


UNIT = ZeroShot()
