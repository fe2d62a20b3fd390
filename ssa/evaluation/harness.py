r"""lm-evaluation-harness adapter and command line: the harness drives our model directly.

    python -m ssa.evaluation.harness --workdir=runs/tiny --tasks=ssa_local_choice,ssa_local_rolling \
        --include_path=tests/harness_tasks [--limit=N] [--batch_size=8] [--output=results.json]

registers the model under the harness's name `ssa` (model_args workdir=..., checkpoint=...,
step=..., batch_size=..., stride=...), builds it from the checkpoint and calls
lm_eval.simple_evaluate; the harness's task YAML files (its own format, local JSONL data:
tests/harness_tasks/) are found through --include_path. From Python:

    import lm_eval
    from ssa.evaluation import harness, loading
    lm = harness.make_harness_lm(loading.load(None, workdir='runs/ssa'))  # an lm_eval LM
    lm_eval.simple_evaluate(model=lm, tasks=['lambada_standard', 'piqa'])

The adapter follows the harness's HF backend request by request:
- loglikelihood: the harness's _encode_pair split of context and continuation (trailing spaces
  move to the continuation); an empty context is the prefix token; the context is cut from the
  left to the model's max_len.
- loglikelihood_rolling: windows of max_len tokens, every token scored once (stride =
  eval.rolling_stride or --stride for overlapping windows), the first one after the prefix token.
- the prefix token is the tokenizer's BOS where it has one (GGUF bos_token_id, SentencePiece bos,
  tokenizer_config.json's bos_token, GPT-2's <|endoftext|>), else EOS: the HF backend's
  prefix_token_id rule.
- generate_until: greedy kv-cache decoding of min(max_gen_toks, max_len) tokens after the last
  context tokens that fit (`generation_context`), cut at the stop strings.
Progress bars follow the harness's disable_tqdm. Chat templates are not supported (the project's
tokenizers carry none): apply_chat_template raises. lm-eval is a test/eval-time dependency
(requirements-dev.txt), imported only here.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Optional

from ssa.data import get_tokenizer
from ssa.evaluation import generation, zero_shot
from ssa.evaluation.scoring import LM, Scorer

MODEL_NAME = 'ssa'


def generation_context(ids, max_len: int, max_gen_toks: int, eos_id: int):
  """(context ids, new tokens) for greedy decoding within max_len: n = min(max_gen_toks, max_len)
  new tokens after the last max_len + 1 - n context tokens (so context + n - 1 <= max_len; the last
  new token is never read); an empty context becomes [eos_id]."""
  n = min(int(max_gen_toks), int(max_len))
  if n < 1:
    raise ValueError(f'generate_until: max_gen_toks={max_gen_toks}; expected >= 1.')
  ids = list(ids)[-(max_len + 1 - n):] or [eos_id]
  return ids, n


def prefix_token(tokenizer) -> int:
  """The token that starts a document: BOS where the tokenizer has one, else EOS (the harness's
  HF backend: prefix_token_id)."""
  bos = getattr(tokenizer, 'bos_id', None)
  return tokenizer.eos_id if bos is None else int(bos)


def _lm_eval():
  try:
    import lm_eval  # pylint: disable=g-import-not-at-top,unused-import
    from lm_eval.api.model import LM as HarnessLM  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('The harness adapter needs lm-evaluation-harness: '
                      'pip install -r requirements-dev.txt (lm-eval==0.4.13)') from e
  return HarnessLM


@functools.cache
def harness_class():
  """The lm_eval LM subclass (built on first use: lm_eval is imported only then), registered
  under MODEL_NAME so `simple_evaluate(model='ssa', model_args='workdir=...')` finds it."""
  HarnessLM = _lm_eval()  # pylint: disable=invalid-name
  from lm_eval.api import registry  # pylint: disable=g-import-not-at-top
  # The harness fills its registry with its own models ('hf', 'vllm', ...) lazily, only while it
  # is empty: import them first, or registering 'ssa' would hide every built-in model.
  import lm_eval.models  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  class SSAHarnessLM(HarnessLM):
    """Our model behind the harness's LM interface (module docstring)."""

    def __init__(self, loaded=None, *, lm=None, tokenizer=None, workdir=None, checkpoint=None,
                 step=None, batch_size=8, stride=None, max_gen_toks=64, quiet=False):
      super().__init__()
      self.quiet = bool(quiet)  # no progress bars even where the harness asks for them
      if loaded is None and lm is None:
        if (workdir is None) == (checkpoint is None):
          raise ValueError("model 'ssa': give exactly one of model_args workdir=... and "
                           'checkpoint=...')
        from ssa.evaluation import loading  # pylint: disable=g-import-not-at-top
        loaded = loading.load(None, workdir=workdir, checkpoint=checkpoint,
                              step=None if step in (None, '') else int(step))
      if loaded is not None:
        lm = LM.from_model(loaded.model, loaded.variables)
        tokenizer = tokenizer or get_tokenizer(loaded.config.data.tokenizer,
                                               loaded.config.data.eos_token)
        if stride is None:
          stride = loaded.config.eval.get('rolling_stride', None)
      if lm is None or tokenizer is None:
        raise ValueError('make_harness_lm: give `loaded`, or both `lm` and `tokenizer`.')
      bs = 8 if batch_size in (None, 'auto') else int(batch_size)
      self.lm, self.tokenizer = lm, tokenizer
      self.prefix = prefix_token(tokenizer)
      self.stride = None if stride in (None, '', 0) else int(stride)
      self.max_gen_toks = int(max_gen_toks)
      self.scorer = Scorer(lm, batch_size=bs, pad_id=tokenizer.pad_id)
      self.greedy = generation.generate_fn(lm, pad_id=tokenizer.pad_id)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
      from lm_eval import utils  # pylint: disable=g-import-not-at-top
      args = utils.simple_parse_args_string(arg_string)
      extra = {k: v for k, v in (additional_config or {}).items()
               if k == 'batch_size' and v is not None}
      unknown = set(args) - {'workdir', 'checkpoint', 'step', 'batch_size', 'stride',
                             'max_gen_toks'}
      if unknown:
        raise ValueError(f"model 'ssa': unknown model_args {sorted(unknown)}; expected workdir, "
                         'checkpoint, step, batch_size, stride, max_gen_toks.')
      return cls(**{**args, **extra})

    @property
    def tokenizer_name(self) -> str:
      return self.tokenizer.name

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
      raise NotImplementedError(f"model 'ssa': tokenizer {self.tokenizer.name} has no chat "
                                'template; run without --apply_chat_template.')

    def _bar(self, n, disable_tqdm, desc, total=True):
      return tqdm(total=n if total else None, desc=desc, disable=disable_tqdm or self.quiet,
                  unit='rows')

    def loglikelihood(self, requests, disable_tqdm: bool = False):
      pairs = [zero_shot.encode_pair(self.tokenizer, *r.args[:2]) for r in requests]
      with self._bar(len(pairs), disable_tqdm, 'ssa loglikelihood') as bar:
        return self.scorer.loglikelihood(pairs, prefix_token=self.prefix, progress=bar)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
      docs = [self.tokenizer.encode(r.args[0]) for r in requests]
      with self._bar(None, disable_tqdm, 'ssa loglikelihood_rolling', total=False) as bar:
        return self.scorer.loglikelihood_rolling(docs, self.prefix, self.stride, progress=bar)

    def generate_until(self, requests, disable_tqdm: bool = False):
      out = []
      for r in tqdm(requests, desc='ssa generate_until',
                    disable=disable_tqdm or self.quiet):
        context, kwargs = r.args[0], (r.args[1] if len(r.args) > 1 else {}) or {}
        until = kwargs.get('until') or []
        until = [until] if isinstance(until, str) else list(until)
        ids, n = generation_context(self.tokenizer.encode(context), self.lm.max_len,
                                    int(kwargs.get('max_gen_toks', self.max_gen_toks)),
                                    self.prefix)
        text = self.tokenizer.decode(self.greedy([ids], n)[0])
        for stop in until:
          if stop and stop in text:
            text = text[:text.index(stop)]
        out.append(text)
      return out

  if MODEL_NAME not in registry.MODEL_REGISTRY:
    registry.register_model(MODEL_NAME)(SSAHarnessLM)
  return SSAHarnessLM


def make_harness_lm(loaded=None, *, lm=None, tokenizer=None, batch_size: int = 8,
                    stride: Optional[int] = None, max_gen_toks: int = 64):
  """An lm_eval.api.model.LM over `loaded` (ssa.evaluation.loading.Loaded) or (lm, tokenizer)."""
  if loaded is None and (lm is None or tokenizer is None):
    raise ValueError('make_harness_lm: give `loaded`, or both `lm` and `tokenizer`.')
  return harness_class()(loaded, lm=lm, tokenizer=tokenizer, batch_size=batch_size,
                         stride=stride, max_gen_toks=max_gen_toks)


def evaluate(*, tasks, workdir=None, checkpoint=None, step=None, include_path=None, limit=None,
             batch_size: int = 8, num_fewshot=None, log_samples: bool = False,
             disable_tqdm: bool = False, bootstrap_iters: int = 1000):
  """lm_eval.simple_evaluate on the model `ssa` built from a workdir or checkpoint; the
  harness's results dict."""
  harness_class()
  import lm_eval  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top
  if include_path is not None and not os.path.isdir(include_path):
    raise ValueError(f'--include_path={include_path!r}: not a directory of task YAML files.')
  manager = TaskManager(include_path=include_path)
  names = [t for t in tasks if t]
  unknown = [t for t in names if t not in manager.all_tasks]
  if unknown:
    raise ValueError(f'unknown harness task(s) {unknown}' + (
        f' (not in the harness nor in {include_path})' if include_path else
        ' (local tasks need --include_path)'))
  args = {'workdir': workdir, 'checkpoint': checkpoint, 'step': step, 'batch_size': batch_size}
  model = harness_class()(**{k: v for k, v in args.items() if v is not None}, quiet=disable_tqdm)
  return lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, limit=limit,
                                 num_fewshot=num_fewshot, log_samples=log_samples,
                                 batch_size=batch_size, verbosity='WARNING',
                                 bootstrap_iters=bootstrap_iters)


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  from ssa import cli  # pylint: disable=g-import-not-at-top
  from ssa.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from ssa.data import DataError  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog='python -m ssa.evaluation.harness',
                              description='Run lm-evaluation-harness tasks on a trained model.')
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument('--workdir', help='training workdir (latest checkpoint unless --step)')
  src.add_argument('--checkpoint', help='a checkpoint step directory')
  p.add_argument('--step', type=int, default=None)
  p.add_argument('--tasks', required=True, help='comma-separated harness task names')
  p.add_argument('--include_path', default=None, help='folder of extra task YAML files')
  p.add_argument('--limit', type=float, default=None, help='documents per task (or a fraction)')
  p.add_argument('--num_fewshot', type=int, default=None)
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--bootstrap_iters', type=int, default=1000,
                 help='bootstrap resamples for the standard errors (0: none)')
  p.add_argument('--output', default=None, help='write the results JSON here')
  p.add_argument('--no_progress', action='store_true', help='hide the progress bars')
  a = p.parse_args(argv)
  cli.quiet_logging()
  limit = None if a.limit is None else (int(a.limit) if a.limit >= 1 else a.limit)
  try:
    out = evaluate(tasks=a.tasks.split(','), workdir=a.workdir, checkpoint=a.checkpoint,
                   step=a.step, include_path=a.include_path, limit=limit,
                   batch_size=a.batch_size, num_fewshot=a.num_fewshot,
                   disable_tqdm=a.no_progress, bootstrap_iters=a.bootstrap_iters)
  except (ValueError, OSError, ImportError, CheckpointError, DataError) as e:
    print(cli.error_line(e), file=sys.stderr)
    return 2
  results = out['results']
  from lm_eval.utils import make_table  # pylint: disable=g-import-not-at-top
  print(make_table(out))
  if a.output:
    with open(a.output, 'w') as f:
      json.dump({'results': results, 'config': {k: str(v) for k, v in out['config'].items()}},
                f, indent=1, default=str)
    print(f'wrote {a.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
