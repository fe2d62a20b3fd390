"""Generation: sampling with temperature / top-k / top-p on the kv-cache path, and greedy decoding.

    gen = Generator(model, variables)                  # jitted once per (shape, sampling setting)
    outs = gen.sample(prompts, max_new_tokens=32, rng=jax.random.PRNGKey(0),
                      temperature=0.8, top_k=40, top_p=0.95, eos_id=tok.eos_id)

Prompts may have different lengths: the cache is prefilled with the first min(len) tokens of every
prompt, then one token per step is fed; a row whose prompt is not finished is fed its own next
prompt token (teacher forcing) instead of the sample. So every token sits at its absolute position
(the SSA position term sees the true n) and all rows share the cache index. The whole loop is one
jitted lax.scan. temperature=0 is greedy (argmax).

`greedy_decode(lm, prompts, n)` is the reference without a cache (one full forward per new token,
any `LM`, e.g. a numpy-table model in tests).

`complete(config, loaded, prompts)` is the generation evaluation (eval.py --prompt):
eval.num_samples completions of each prompt, sampled with the config.eval sampling fields, logged
and returned.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssa import model as model_lib
from ssa.evaluation.common import make_lm, make_tokenizer
from ssa.evaluation.scoring import LM, bucket


def filter_logits(logits_BV, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Logits of the sampling distribution: / temperature, then top-k, then nucleus (top-p)."""
  logits_BV = logits_BV.astype(jnp.float32) / temperature
  neg = jnp.finfo(jnp.float32).min
  if top_k and top_k < logits_BV.shape[-1]:
    kth = jax.lax.top_k(logits_BV, top_k)[0][..., -1:]
    logits_BV = jnp.where(logits_BV < kth, neg, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_BV, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs      # mass strictly above each sorted entry
    keep = before < top_p                             # always keeps the top entry
    cutoff = jnp.min(jnp.where(keep, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV < cutoff, neg, logits_BV)
  return logits_BV


def sample_logits(rng, logits_BV, temperature: float, top_k: int = 0, top_p: float = 1.0):
  if temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  return jax.random.categorical(rng, filter_logits(logits_BV, temperature, top_k, top_p),
                                axis=-1).astype(jnp.int32)


def _generate(variables, cache, prompt_BP, plen_B, rng, *, model, start, steps, temperature,
              top_k, top_p):
  P = prompt_BP.shape[1]
  logits, mut = model.apply({**variables, 'cache': cache}, prompt_BP[:, :start], decode=True,
                            mutable=['cache'])

  def body(carry, i):
    cache, last_BV, rng = carry
    rng, key = jax.random.split(rng)
    sampled_B = sample_logits(key, last_BV, temperature, top_k, top_p)
    pos = start + i
    forced_B = jax.lax.dynamic_index_in_dim(prompt_BP, jnp.minimum(pos, P - 1), 1, False)
    tok_B = jnp.where(pos < plen_B, forced_B, sampled_B)
    out, mut = model.apply({**variables, 'cache': cache}, tok_B[:, None], decode=True,
                           mutable=['cache'])
    return (mut['cache'], out[:, -1], rng), (tok_B, last_BV)

  # steps - 1 tokens are fed back; the last one is only sampled (so T = max_len + 1 fits).
  (_, last_BV, rng), (toks_SB, logits_SBV) = jax.lax.scan(
      body, (mut['cache'], logits[:, -1], rng), jnp.arange(steps - 1))
  pos = start + steps - 1
  last_tok_B = jnp.where(pos < plen_B, prompt_BP[:, min(pos, P - 1)],
                         sample_logits(jax.random.split(rng)[1], last_BV, temperature, top_k,
                                       top_p))
  toks_SB = jnp.concatenate([toks_SB, last_tok_B[None]], 0)
  logits_SBV = jnp.concatenate([logits_SBV, last_BV[None]], 0)
  return toks_SB.T, jnp.swapaxes(logits_SBV, 0, 1)


class Generator:
  """kv-cache sampling for a Transformer (see the module docstring)."""

  def __init__(self, model, variables, max_len: Optional[int] = None, pad_id: int = 0):
    self.model, self.variables, self.pad_id = model, variables, pad_id
    self.max_len = int(max_len or model.cfg.max_len)
    self._jit = {}

  def _fn(self, key):
    if key not in self._jit:
      start, steps, temperature, top_k, top_p = key
      self._jit[key] = jax.jit(functools.partial(
          _generate, model=self.model, start=start, steps=steps, temperature=temperature,
          top_k=top_k, top_p=top_p))
    return self._jit[key]

  def sample(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, rng=None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: Optional[int] = None, return_logits: bool = False):
    """New tokens of each prompt (cut after the first eos_id, which is kept)."""
    if not prompts or any(len(p) == 0 for p in prompts):
      raise ValueError('sample: every prompt needs at least one token.')
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
      raise ValueError(f'sample: temperature={temperature} (>= 0), top_k={top_k} (>= 0), '
                       f'top_p={top_p} (in (0, 1]) out of range.')
    rng = jax.random.PRNGKey(0) if rng is None else rng
    lens = np.array([len(p) for p in prompts], np.int32)
    total = int(lens.max()) + max_new_tokens
    if total - 1 > self.max_len:
      raise ValueError(f'sample: longest prompt ({lens.max()}) + max_new_tokens '
                       f'({max_new_tokens}) - 1 = {total - 1} exceeds max_len={self.max_len} '
                       '(the model reads all but the last token).')
    if max_new_tokens < 1:
      raise ValueError(f'sample: max_new_tokens={max_new_tokens}; expected >= 1.')
    B = len(prompts)
    P = bucket(int(lens.max()), self.max_len + 1)
    prompt = np.full([B, P], self.pad_id, np.int32)
    for i, p in enumerate(prompts):
      prompt[i, :len(p)] = p
    start = int(lens.min())
    steps = total - start
    cache = model_lib.init_cache(self.model, self.variables, B, max(total - 1, start))
    fn = self._fn((start, steps, float(temperature), int(top_k), float(top_p)))
    toks, logits = jax.device_get(fn(self.variables, cache, prompt, lens, rng))
    outs, outs_logits = [], []
    for i, n in enumerate(lens):
      row = [int(t) for t in toks[i, n - start:n - start + max_new_tokens]]
      if eos_id is not None and eos_id in row:
        row = row[:row.index(eos_id) + 1]
      outs.append(row)
      outs_logits.append(logits[i, n - start:n - start + len(row)])
    return (outs, outs_logits) if return_logits else outs


def greedy_decode(lm: LM, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                  eos_id: Optional[int] = None, return_logits: bool = False):
  """Greedy continuation by full forwards (no cache): the reference for Generator and any LM."""
  fn = jax.jit(lambda v, x: lm.apply_fn(v, x))
  outs, outs_logits = [], []
  for p in prompts:
    seq, row, lg = list(p), [], []
    for _ in range(max_new_tokens):
      n = len(seq)
      L = bucket(n, lm.max_len)
      if n > lm.max_len:
        raise ValueError(f'greedy_decode: sequence of {n} tokens exceeds max_len={lm.max_len}.')
      x = np.zeros([1, L], np.int32)
      x[0, :n] = seq
      logits = np.asarray(jax.device_get(fn(lm.variables, x)))[0, n - 1]
      t = int(np.argmax(logits))
      seq.append(t)
      row.append(t)
      lg.append(logits)
      if eos_id is not None and t == eos_id:
        break
    outs.append(row)
    outs_logits.append(np.stack(lg))
  return (outs, outs_logits) if return_logits else outs


def generate_fn(lm: LM, pad_id: int = 0):
  """(prompts, max_new_tokens) -> greedy continuations: kv-cache if lm has a model, else full."""
  if lm.model is not None:
    gen = Generator(lm.model, lm.variables, lm.max_len, pad_id)
    return lambda prompts, n: gen.sample(prompts, n, temperature=0.0)
  return lambda prompts, n: greedy_decode(lm, prompts, n)


def complete(config, loaded, prompts, log=print) -> list[list[str]]:
  """Completions of each prompt (config.eval sampling fields); logged and returned."""
  e = config.eval
  tok = make_tokenizer(config, loaded.model.cfg)
  lm = make_lm(config, loaded)
  gen = Generator(loaded.model, loaded.variables, lm.max_len, tok.pad_id)
  out = []
  for p in prompts:
    ids = tok.encode(p) or [tok.eos_id]
    n = min(e.max_new_tokens, lm.max_len + 1 - len(ids))
    if n < 1:
      raise ValueError(f'prompt of {len(ids)} tokens leaves no room in max_len={lm.max_len}.')
    news = gen.sample([ids] * e.num_samples, n, rng=jax.random.PRNGKey(e.sample_seed),
                      temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, eos_id=tok.eos_id)
    texts = [tok.decode(x) for x in news]
    for t in texts:
      log(f'--- {p!r} ->\n{p}{t}')
    out.append(texts)
  return out
