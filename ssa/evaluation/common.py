"""What several evaluations share: the run context, record files, results file, tokenizer and LM.

    ctx = EvalContext.create(config, loaded, output_dir, log)   # tokenizer, LM, Scorer, results
    ctx.texts(split)          # documents of a split (cached; None for a synthetic dataset)
    ctx.save()                # eval_results.json now (meta.seconds updated), atomically
    ctx.bar(desc, total)      # a progress bar for a unit's long loop (terminal only)

Every evaluation unit (perplexity.py, zero_shot.py, passkey.py, attention_stats.py) has the
interface `Unit`: `name`, `enabled(config)` (from its config.eval fields) and `run(ctx)`, which adds
its numbers to ctx.metrics (flat '<name>:<metric>' keys) and its other sections to ctx.results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from ssa.config_lib import ConfigError
from ssa.data import get_tokenizer, sources
from ssa.data.pipeline import SYNTHETIC_DATASETS, record_text
from ssa.evaluation.scoring import LM, Scorer
from ssa.model import param_counts


class Unit(Protocol):
  """One evaluation, chosen by config (see the module docstring)."""
  name: str

  def enabled(self, config) -> bool:
    ...

  def run(self, ctx: 'EvalContext') -> None:
    ...


def is_synthetic(config) -> bool:
  return config.data.dataset in SYNTHETIC_DATASETS


def eval_splits(config) -> list[str]:
  """The splits scored: eval.splits, or [data.eval_split] when it is empty (the default)."""
  splits = config.eval.splits
  if isinstance(splits, str):  # --set=eval.splits=test
    splits = [s.strip() for s in splits.split(',') if s.strip()]
  return list(splits or [config.data.eval_split])


def make_tokenizer(config, model_cfg):
  """config.data's tokenizer; ConfigError when its vocabulary exceeds model.vocab_size."""
  tok = get_tokenizer(config.data.tokenizer, config.data.eos_token)
  if tok.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f'model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer '
                      f'{config.data.tokenizer!r} vocabulary ({tok.vocab_size}).')
  return tok


def make_lm(config, loaded) -> LM:
  """The LM of `loaded` with context eval.max_len (None = model.max_len)."""
  max_len = config.eval.max_len or loaded.model.cfg.max_len
  if config.model.pos_emb == 'learned' and max_len > loaded.model.cfg.max_len:
    raise ConfigError(f'eval.max_len={max_len} exceeds model.max_len={loaded.model.cfg.max_len} '
                      '(learned position table).')
  return LM.from_model(loaded.model, loaded.variables, max_len)


def write_results(results: dict, output_dir: str) -> str:
  """eval_results.json, written atomically (a temporary file renamed over the old one)."""
  path = os.path.join(output_dir, 'eval_results.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(tmp, path)
  return path


def check_limit(limit: Optional[int], name: str) -> None:
  """A record limit is None (all records) or an integer >= 1; anything else raises naming it."""
  if limit is None:
    return
  if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
    raise ValueError(f'{name}={limit!r}: expected a number of records >= 1, or None for all '
                     '(0 would score nothing and give NaN metrics).')


def _record(line: str, where: str, fields: Sequence[str], task: str) -> dict:
  try:
    rec = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f'{where}: not valid JSON ({e}).') from e
  if not isinstance(rec, dict):
    raise ValueError(f'{where}: expected a JSON object {{"field": value, ...}} per line, '
                     f'got {type(rec).__name__} {line.strip()[:60]!r} '
                     f'({task or "this file"} expects fields {list(fields)}).')
  missing = [k for k in fields if k not in rec]
  if missing:
    raise ValueError(f'{where}: record lacks field(s) {missing} '
                     f'({task or "this file"} expects fields {list(fields)}; found '
                     f'{sorted(rec)}).')
  return rec


def read_jsonl(path: str, fields: Sequence[str], task: str = '') -> list[dict]:
  """Records of a JSONL file; a missing file, bad JSON or a missing field raises naming it."""
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{task + ": " if task else ""}JSONL file {path} does not exist.')
  with open(path, encoding='utf-8') as f:
    out = [_record(line, f'{path}:{i}', fields, task)
           for i, line in enumerate(f, 1) if line.strip()]
  if not out:
    raise ValueError(f'{path}: no records.')
  return out


def dataset_texts(config, split: str, limit: Optional[int] = None) -> list[str]:
  """Document texts of split `split` of config.data.dataset (the training data code)."""
  src = sources.get_text_source(config.data, split)
  n = len(src.source) if limit is None else min(limit, len(src.source))
  return [record_text(src.source[i], src.text_key) for i in range(n)]


def _meta(config, loaded, lm: LM) -> dict:
  return {'step': loaded.step, 'checkpoint_dir': loaded.directory,
          'preset': config.model.preset, 'strategy': config.ssa.strategy,
          'dataset': config.data.dataset, 'tokenizer': config.data.tokenizer,
          'max_len': lm.max_len, 'params': param_counts(loaded.variables['params']),
          'complete': False}


@dataclasses.dataclass
class EvalContext:
  """Everything an evaluation unit reads, and the results it adds to."""
  config: Any                  # the eval run's config (config.eval: the evaluations' fields)
  loaded: Any                  # ssa.evaluation.loading.Loaded: model, variables, step, directory
  tok: Any                     # the tokenizer of config.data
  lm: LM                       # the model at the scoring context length
  scorer: Scorer
  output_dir: str
  log: Callable[[str], Any] = print
  results: dict = dataclasses.field(default_factory=dict)  # what eval_results.json holds
  splits: list = dataclasses.field(default_factory=list)   # eval_splits(config)
  t0: float = dataclasses.field(default_factory=time.time)
  _docs: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def create(cls, config, loaded, output_dir: str, log=print) -> 'EvalContext':
    t0 = time.time()
    tok = make_tokenizer(config, loaded.model.cfg)
    lm = make_lm(config, loaded)
    scorer = Scorer(lm, batch_size=config.eval.batch_size, pad_id=tok.pad_id)
    results = {'meta': _meta(config, loaded, lm), 'metrics': {}, 'figures': []}
    return cls(config, loaded, tok, lm, scorer, output_dir, log, results, eval_splits(config),
               t0)

  def bar(self, desc: str, total: Optional[int] = None):
    """A tqdm progress bar on stderr for one long loop of a unit (shown on a terminal only;
    the runner's per-unit lines are the progress in logs)."""
    return tqdm(total=total, desc=desc, unit='batch', leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty(), dynamic_ncols=True)

  @property
  def metrics(self) -> dict:
    return self.results['metrics']

  @property
  def fig_dir(self) -> str:
    return os.path.join(self.output_dir, 'figures')

  @property
  def synthetic(self) -> bool:
    return is_synthetic(self.config)

  def texts(self, split: str) -> Optional[list[str]]:
    """The first eval.word_ppl_max_docs documents of `split` (read once); None when synthetic."""
    if self.synthetic:
      return None
    if split not in self._docs:
      self._docs[split] = dataset_texts(self.config, split, self.config.eval.word_ppl_max_docs)
    return self._docs[split]

  def save(self) -> str:
    """eval_results.json as it stands (earlier metrics survive a later failure)."""
    self.results['meta']['seconds'] = time.time() - self.t0
    return write_results(self.results, self.output_dir)
