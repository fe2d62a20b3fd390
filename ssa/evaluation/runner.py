"""The evaluation run behind eval.py: every evaluation unit that config.eval enables, in order.

    results = run(config, loaded, output_dir)     # loaded = ssa.evaluation.loading.load(...)
    complete(config, loaded, prompts)             # eval.py --prompt: generation.complete

Units (common.Unit: name, enabled(config), run(ctx)), run in the order of UNITS:
  perplexity.SPLITS    eval.token_perplexity, eval.word_perplexity   per split of eval_splits
  perplexity.WIKITEXT  eval.wikitext_jsonl
  zero_shot.UNIT       eval.zero_shot_dir
  passkey.UNIT         eval.passkey
  attention_stats.UNIT eval.attention_stats
Progress: a line before and after each unit ('[2/4] zero_shot done in 12.3 s') and, on a
terminal, a progress bar over each unit's batches.
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
import time

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
  todo = [u for u in units if u.enabled(config)]
  for i, unit in enumerate(todo, 1):
    t0 = time.time()
    log(f'[{i}/{len(todo)}] {unit.name} ...')
    unit.run(ctx)
    ctx.save()   # after every unit: earlier metrics survive a later failure
    log(f'[{i}/{len(todo)}] {unit.name} done in {time.time() - t0:.1f} s')
  ctx.results['meta']['complete'] = True
  log(f'wrote {ctx.save()}')
  return ctx.results
