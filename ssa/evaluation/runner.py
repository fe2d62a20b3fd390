"""The evaluation run behind eval.py: every evaluation unit that config.eval enables, in order.

    results = run(config, loaded, output_dir)     # loaded = ssa.evaluation.loading.load(...)
    complete(config, loaded, prompts)             # eval.py --prompt: generation.complete

Units (common.Unit: name, enabled(config), run(ctx)), run in the order of UNITS:
  perplexity.SPLITS    eval.token_perplexity, eval.word_perplexity   per split of eval_splits
  perplexity.WIKITEXT  eval.wikitext_jsonl
  zero_shot.UNIT       eval.zero_shot_dir
  passkey.UNIT         eval.passkey
  attention_stats.UNIT eval.attention_stats
Writes into output_dir:
  eval_results.json      {'meta': {...}, 'metrics': {flat '<name>:<metric>' numbers},
                          'passkey': grid, 'zero_shot_table': markdown, 'figures': [paths]};
                         rewritten after every unit (meta.complete is False until the end), so
                         a unit that raises leaves the metrics computed before it on disk
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

import os

from ssa.evaluation import attention_stats, passkey, perplexity, zero_shot
from ssa.evaluation.attention_stats import attention_figures  # noqa: F401  (re-exported)
from ssa.evaluation.common import EvalContext, eval_splits, make_lm, write_results  # noqa: F401
from ssa.evaluation.generation import complete  # noqa: F401  (re-exported: eval.py --prompt)

UNITS = (perplexity.SPLITS, perplexity.WIKITEXT, zero_shot.UNIT, passkey.UNIT,
         attention_stats.UNIT)


def run(config, loaded, output_dir: str, log=print, units=UNITS) -> dict:
  """Runs the units enabled in config.eval; returns (and writes) the results."""
  os.makedirs(output_dir, exist_ok=True)
  ctx = EvalContext.create(config, loaded, output_dir, log)
  for unit in units:
    if unit.enabled(config):
      unit.run(ctx)
      ctx.save()   # after every unit: earlier metrics survive a later failure
  ctx.results['meta']['complete'] = True
  log(f'wrote {ctx.save()}')
  return ctx.results
