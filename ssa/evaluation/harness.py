"""lm-evaluation-harness adapter: lets the harness drive our model directly (optional).

    import lm_eval
    from ssa.evaluation import harness, loading
    loaded = loading.load(None, workdir='/runs/ssa')
    lm = harness.make_harness_lm(loaded)           # an lm_eval.api.model.LM
    lm_eval.simple_evaluate(model=lm, tasks=['lambada_standard', 'piqa'], batch_size=8)

The adapter implements loglikelihood (Scorer.loglikelihood with the harness's _encode_pair),
loglikelihood_rolling (Scorer.loglikelihood_rolling, prefix EOT, stride = eval.rolling_stride) and
generate_until (greedy kv-cache decoding of min(max_gen_toks, max_len) tokens after the last
context tokens that fit, cut at the stop strings: `generation_context`). lm-evaluation-harness is
not a dependency of this project: `make_harness_lm` raises ImportError with the pip command if it
is missing. The adapter is tested only where lm_eval is importable (`generation_context` always).
"""

from __future__ import annotations

from typing import Optional

from ssa.data import get_tokenizer
from ssa.evaluation import generation, zero_shot
from ssa.evaluation.scoring import LM, Scorer


def generation_context(ids, max_len: int, max_gen_toks: int, eos_id: int):
  """(context ids, new tokens) for greedy decoding within max_len: n = min(max_gen_toks, max_len)
  new tokens after the last max_len + 1 - n context tokens (so context + n - 1 <= max_len; the last
  new token is never read); an empty context becomes [eos_id]."""
  n = min(int(max_gen_toks), int(max_len))
  if n < 1:
    raise ValueError(f'generate_until: max_gen_toks={max_gen_toks}; expected >= 1.')
  ids = list(ids)[-(max_len + 1 - n):] or [eos_id]
  return ids, n


def make_harness_lm(loaded=None, *, lm=None, tokenizer=None, batch_size: int = 8,
                    stride: Optional[int] = None, max_gen_toks: int = 64):
  """An lm_eval.api.model.LM over `loaded` (ssa.evaluation.loading.Loaded) or (lm, tokenizer)."""
  try:
    # lm_eval is optional (not a dependency): imported only when the adapter is built.
    from lm_eval.api.model import LM as HarnessLM  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('The harness adapter needs lm-evaluation-harness: pip install lm-eval') from e
  if loaded is not None:
    lm = LM.from_model(loaded.model, loaded.variables)
    tokenizer = tokenizer or get_tokenizer(loaded.config.data.tokenizer,
                                           loaded.config.data.eos_token)
  if lm is None or tokenizer is None:
    raise ValueError('make_harness_lm: give `loaded`, or both `lm` and `tokenizer`.')
  scorer = Scorer(lm, batch_size=batch_size, pad_id=tokenizer.pad_id)
  greedy = generation.generate_fn(lm, pad_id=tokenizer.pad_id)

  class SSAHarnessLM(HarnessLM):
    """Our model behind the harness's LM interface."""

    def loglikelihood(self, requests, disable_tqdm: bool = False):
      pairs = [zero_shot.encode_pair(tokenizer, *r.args[:2]) for r in requests]
      return scorer.loglikelihood(pairs, prefix_token=tokenizer.eos_id)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
      docs = [tokenizer.encode(r.args[0]) for r in requests]
      return scorer.loglikelihood_rolling(docs, tokenizer.eos_id, stride)

    def generate_until(self, requests, disable_tqdm: bool = False):
      out = []
      for r in requests:
        context, kwargs = r.args[0], (r.args[1] if len(r.args) > 1 else {}) or {}
        until = kwargs.get('until') or []
        until = [until] if isinstance(until, str) else list(until)
        ids, n = generation_context(tokenizer.encode(context), lm.max_len,
                                    int(kwargs.get('max_gen_toks', max_gen_toks)),
                                    tokenizer.eos_id)
        text = tokenizer.decode(greedy([ids], n)[0])
        for stop in until:
          if stop and stop in text:
            text = text[:text.index(stop)]
        out.append(text)
      return out

  return SSAHarnessLM()
