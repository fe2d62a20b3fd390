"""What the language-model comparison experiments share (frozen_llm.py, finetune_tuned.py): train
an arm in its workdir (or find it trained), score it on a split, pair two arms.

    model, variables, seconds = train_or_load(config, run_dir, log)
    scored = score(model, variables, config, split, num_batches)     # token_perplexity's dict
    compare(a, b)          # paired difference a - b, overall and per position bucket (a, b: one
                           # result each, or lists of results of the same seeds, paired by seed)
    theta(params)          # the learned position slopes, {layer: [theta per head]}
    tau_by_position(model, variables, batches, T)   # mean tau_q / tau_v by position bucket

A result dict (an arm's JSON) holds at least 'arm', 'buckets', 'sequence_bucket_nll' and
'sequence_bucket_tokens' for `compare`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from ssa import measure
from ssa import train_lib
from ssa.checkpoint import Checkpointer
from ssa.data import make_eval_iterator
from ssa.evaluation import loading
from ssa.evaluation.perplexity import token_perplexity
from ssa.evaluation.scoring import LM


def base_model(config) -> tuple:
  """(model, variables) of config's initial state (model.init_from's weights), untrained."""
  s = train_lib.setup(config)
  state, _ = train_lib.fresh_state(s)
  return s.model, {'params': state.params, **state.constants}


class Stopped(SystemExit):
  """Training stopped by SIGTERM / SIGINT before train.num_steps (its checkpoint is saved): the
  experiment ends there (the message on stderr, exit status 1, as ssa/experiments/passkey.py), so
  no result is computed from an unfinished run; rerunning the same command resumes it."""


def train_or_load(config, run_dir: str, log=print) -> tuple:
  """(model, variables, seconds): trains config in run_dir (resuming its checkpoint) unless its
  latest checkpoint is already at train.num_steps, then restores the final parameters.
  Raises Stopped when a signal ends the training early."""
  t0 = time.time()
  ckpt_dir = os.path.join(run_dir, 'checkpoints')
  done = False
  if os.path.isdir(ckpt_dir):
    ck = Checkpointer(ckpt_dir, config.checkpoint, writer=False)
    try:
      done = ck.latest_step() == config.train.num_steps
    finally:
      ck.close()
  if not done:
    log(f'training {config.train.num_steps} steps of {config.data.batch_size} x '
        f'{config.data.seq_len} tokens in {run_dir}')
    out = train_lib.train_and_evaluate(config, run_dir)
    if out['stopped_by']:
      raise Stopped(f'{run_dir}: training stopped by {out["stopped_by"]} at step {out["step"]} of '
                    f'{config.train.num_steps} (checkpoint saved); rerun the same command to '
                    'continue.')
  loaded = loading.load(config, workdir=run_dir)
  return loaded.model, loaded.variables, time.time() - t0


def score(model, variables, config, split: str, num_batches: int) -> tuple[dict, list]:
  """(token_perplexity's dict, the batches) on the first num_batches batches of `split`."""
  lm = LM.from_model(model, variables, max_len=config.data.seq_len)
  it, _ = make_eval_iterator(config, 0, 1, split=split, num_batches=num_batches)
  batches = list(it)
  return token_perplexity(lm, batches), batches


def _stack(results, field: str) -> np.ndarray:
  return np.stack([np.asarray(r[field], np.float64) for r in results])


def compare(a, b) -> dict:
  """Paired difference a - b (nats/token), overall and per position bucket. a and b are result
  dicts, or equally long lists of them paired by seed (seed i of a with seed i of b, all scored on
  the same sequences): the bootstrap then resamples seeds and sequences (measure.paired_difference)."""
  a_list, b_list = (list(x) if isinstance(x, (list, tuple)) else [x] for x in (a, b))
  if not a_list or len(a_list) != len(b_list):
    raise ValueError(f'compare: {len(a_list)} results against {len(b_list)}; expected the same '
                     'number (one per seed) on both sides.')
  names = f'{a_list[0]["arm"]} and {b_list[0]["arm"]}'
  rs = a_list + b_list
  if any(r['buckets'] != rs[0]['buckets'] or
         len(r['sequence_bucket_nll']) != len(rs[0]['sequence_bucket_nll']) for r in rs):
    raise ValueError(f'{names} were not scored on the same sequences.')
  na, nb = _stack(a_list, 'sequence_bucket_nll'), _stack(b_list, 'sequence_bucket_nll')
  w = _stack(rs, 'sequence_bucket_tokens')
  if not all(np.array_equal(w[0], wi) for wi in w[1:]):
    raise ValueError(f'{names} were not scored on the same tokens.')
  w = w[0]                                  # [sequences, buckets]
  out = {'overall': measure.paired_difference(na.sum(-1), nb.sum(-1), w.sum(-1)), 'by_position': {}}
  for j, name in enumerate(a_list[0]['buckets']):
    keep = w[:, j] > 0
    if keep.any():
      out['by_position'][name] = measure.paired_difference(na[:, keep, j], nb[:, keep, j],
                                                           w[keep, j])
  return out


def theta(params) -> dict:
  """{layer: theta per head} of every query position term (tau_q/theta), layers in order."""
  out = {}
  for name, sub in params.items():
    if not name.startswith('layer_'):
      continue
    th = sub.get('attn', {}).get('tau_q', {}).get('theta')
    if th is not None:
      out[name] = np.asarray(th, np.float64).reshape(-1).tolist()
  return dict(sorted(out.items(), key=lambda kv: int(kv[0][6:])))


def tau_by_position(model, variables, batches, T: int) -> dict:
  """{'q'|'v': {bucket: mean tau over layers, heads and the rows' real tokens}}."""
  fn = jax.jit(lambda v, x, p, s: model.apply(v, x, positions=p, segment_ids=s,
                                               mutable=['intermediates'])[1])
  sums, counts = {}, {}
  for b in batches:
    inter = jax.device_get(fn(variables, jnp.asarray(b['inputs']), jnp.asarray(b['positions']),
                              jnp.asarray(b['segment_ids']))).get('intermediates', {})
    pos = np.asarray(b['positions']) + 1
    w = np.asarray(b['weights'])
    for sub in inter.values():
      for name, v in sub.get('attn', {}).items():
        if not name.startswith('temperature_'):
          continue
        e = name[len('temperature_'):]
        tau_BT = np.asarray(v[0], np.float64).mean(-1)
        s, c = measure.bucket_sums(tau_BT, w, pos, T)
        sums[e] = sums.get(e, 0) + s
        counts[e] = counts.get(e, 0) + c
  return {e: {k: v['loss'] for k, v in measure.bucket_losses(sums[e], counts[e], T).items()}
          for e in sums}


def cell(d: dict) -> str:
  """'mean [lo, hi] (MDE)' of a paired_difference result, for tables."""
  return f'{d["mean"]:+.4f} [{d["ci95"][0]:+.4f}, {d["ci95"][1]:+.4f}] ({d["mde"]:.4f})'
