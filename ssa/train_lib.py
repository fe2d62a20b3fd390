"""Training: TrainState, the pure train_step / eval_step, sharded init, and the loop.

    config -> mesh -> data iterator -> model init (shapes by jax.eval_shape, then a jitted init with
    out_shardings) -> restore if a checkpoint exists, else random init or model.init_from
    (pretrained weights, ssa/pretrained.py) and the strategy's data statistics
    (ssa/statistics.py) -> loop { train_step -> metrics -> periodic eval / checkpoint }
    -> final eval + checkpoint          (train_and_evaluate; the loop's parts are Run's methods)

train_step(state, batch) -> (state, metrics) is a module-level pure function; `setup` jits it ONCE
with explicit in/out shardings and the state donated. Inside it:

  1. the global batch [B, T] is split into train.micro_batches micro-batches (rows m, m+M, ... so
     each device keeps its rows) and scanned: sums of token losses and of gradients of the SUM of
     weighted token losses; at the end both are divided by the total weight. This is exactly the
     gradient of the weighted mean loss over the whole batch (what one large batch gives).
  2. optax update (ssa/optim.py), new params.
  3. NaN/Inf guard (train.nan_guard): if the loss or the global gradient norm is not finite, the
     update is skipped (it runs under a lax.cond on that flag, so a finite step costs nothing
     extra) and state.finite becomes False; from then on every step is a no-op (sticky), so the
     state stays the last good one until the host sees the flag at its next sync point, saves that
     state (after checking it is finite) and stops with NonFiniteError naming the step and what to
     change. The norm is non-finite iff some gradient is (or their squares overflow), and the
     project's optimizers (AdamW / Adam with eps > 0, SGD; config_lib refuses eps <= 0 and
     non-finite rates) map finite gradients and a finite state to a finite state, so checking the
     gradients is enough for them. train.nan_guard_state=True also checks every value of the
     updated params and optimizer state (one more pass over them and a select: ~0.1-0.4 s per
     step at 124M parameters on CPU), for optimizers without that property.

Loss: sum(cross_entropy * weights) / sum(weights) over the batch (float32 logits).
Mixed precision: model.dtype='bfloat16' computes in bf16 with model.param_dtype='float32' params
(and float32 optimizer state); model.remat rematerialises each block.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax

from ssa import checkpoint as ckpt_lib
from ssa import config_lib
from ssa import metrics as metrics_lib
from ssa import optim
from ssa import pretrained
from ssa import sharding as shard_lib
from ssa import statistics
from ssa import workdir as workdir_lib
from ssa.data import DataError
from ssa.data.per_process import make_eval_data, make_train_data
from ssa.model import Transformer, is_temperature_path, param_counts
from ssa.model import head_logits as model_head
from ssa.signals import StopFlag


class NonFiniteError(FloatingPointError):
  """The loss or gradient became NaN/Inf; the last good state was saved before raising."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar: optimizer updates applied
  params: Any              # 'params' collection (unboxed arrays)
  opt_state: Any           # optax state (no entries for frozen weights)
  rng: jax.Array           # uint32[2] raw PRNG key (the run's RNG; training itself is dropout-free)
  constants: Any           # non-trainable collections, e.g. {'constants': {'token_log_freq': ...}}
  finite: jax.Array        # bool scalar: False once a non-finite loss/gradient was seen (sticky)


# ----------------------------------------------------------------------------- pure functions

def _variables(params, constants):
  return {'params': params, **constants}


# Above this many logits (B * T * padded vocab) the loss is computed in row chunks whose logits
# are recomputed in the backward pass: a [B, T, 50k] float32 array is 1.6 GB at T=8192.
LOSS_CHUNK_LOGITS = 2**26


def _chunked_token_losses(hidden_BTD, params, targets_BT, cfg):
  """Cross-entropy of every token [B, T] from the hidden states, LOSS_CHUNK_LOGITS logits at a
  time (jax.checkpoint per chunk: only the hidden states are kept for the backward pass)."""
  B, T, D = hidden_BTD.shape
  rows = max(1, LOSS_CHUNK_LOGITS // cfg.padded_vocab_size)
  n = B * T
  nc = -(-n // rows)
  h = jnp.pad(hidden_BTD.reshape(n, D), ((0, nc * rows - n), (0, 0))).reshape(nc, rows, D)
  t = jnp.pad(targets_BT.reshape(n), (0, nc * rows - n)).reshape(nc, rows)

  @jax.checkpoint
  def chunk(h_RD, t_R):
    logits = model_head(params, h_RD, cfg)
    return optax.softmax_cross_entropy_with_integer_labels(logits, t_R)

  ce = jax.lax.map(lambda a: chunk(*a), (h, t))
  return ce.reshape(-1)[:n].reshape(B, T)


def loss_terms(params, constants, batch, *, model: Transformer, loss_scale=1.0,
               log_temperatures: bool = False):
  """(sum of weighted token losses, (sum of weights, {tau name: weighted sum of tau}))."""
  kwargs = dict(positions=batch['positions'], segment_ids=batch['segment_ids'])
  B, T = batch['inputs'].shape
  chunked = B * T * model.cfg.padded_vocab_size > LOSS_CHUNK_LOGITS
  if chunked:
    kwargs['return_hidden'] = True
  if log_temperatures:
    out, inter = model.apply(_variables(params, constants), batch['inputs'], **kwargs,
                             mutable=['intermediates'])
  else:
    out, inter = model.apply(_variables(params, constants), batch['inputs'], **kwargs), {}
  if chunked:
    ce = _chunked_token_losses(out, params, batch['targets'], model.cfg)
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(out, batch['targets'])
  w = batch['weights'].astype(jnp.float32)
  loss_sum = jnp.sum(ce * w) * loss_scale
  taus = {}
  for path, t in jax.tree_util.tree_flatten_with_path(inter.get('intermediates', {}))[0]:
    keys = [str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path]
    name = next((k for k in keys if k.startswith('temperature_')), None)
    layer = next((k for k in keys if k.startswith('layer_')), None)
    if name is None or layer is None:
      continue
    taus[f'tau_{name[len("temperature_"):]}/{layer}'] = jnp.sum(
        jax.lax.stop_gradient(t).astype(jnp.float32).mean(-1) * w)
  return loss_sum, (jnp.sum(w), taus)


def all_finite(tree) -> jax.Array:
  """True iff every floating-point value of `tree` is finite (one fused reduction)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def apply_update(tx: optax.GradientTransformation, params, opt_state, grads):
  """(new params, new optimizer state) of one optax step."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def update_if(good, tx: optax.GradientTransformation, params, opt_state, grads):
  """apply_update under lax.cond(good): the NaN guard's skipped step returns params and
  opt_state unchanged, and a good step costs no pass beyond the update itself."""
  return jax.lax.cond(good, lambda o: apply_update(tx, *o), lambda o: o[:2],
                      (params, opt_state, grads))


def _micro_split(x, m: int, sharding):
  """[B, ...] -> [M, B/M, ...] with micro-batch i = rows i, i+M, i+2M, ... (device-local)."""
  y = x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(y, sharding) if sharding is not None else y


def train_step(state: TrainState, batch, *, model: Transformer, tx: optax.GradientTransformation,
               schedules: dict[str, Callable], trainable, micro_batches: int = 1,
               micro_sharding=None, nan_guard: bool = True, nan_guard_state: bool = False,
               inject_nan_at_step: int = -1, log_temperatures: bool = False):
  """One optimizer step on the global batch; returns (new state, metrics). Pure."""
  step = state.step + 1  # 1-based number of this update
  scale = jnp.where(step == inject_nan_at_step, jnp.nan, 1.0) if inject_nan_at_step > 0 else 1.0
  grad_fn = jax.value_and_grad(
      functools.partial(loss_terms, model=model, loss_scale=scale,
                        log_temperatures=log_temperatures), has_aux=True)

  if micro_batches == 1:
    (loss_sum, (wsum, taus)), grads = grad_fn(state.params, state.constants, batch)
  else:
    micro = jax.tree.map(lambda x: _micro_split(x, micro_batches, micro_sharding), batch)

    def body(carry, mb):
      (l, (w, t)), g = grad_fn(state.params, state.constants, mb)
      return jax.tree.map(jnp.add, carry, (l, w, t, g)), None
    (l0, (w0, t0)), g0 = jax.eval_shape(grad_fn, state.params, state.constants,
                                        jax.tree.map(lambda x: x[0], micro))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l0, w0, t0, g0))
    (loss_sum, wsum, taus, grads), _ = jax.lax.scan(body, zeros, micro)

  denom = jnp.maximum(wsum, 1.0)
  loss = loss_sum / denom
  # The one place frozen gradients are zeroed (static mask: XLA never computes them).
  grads = jax.tree.map(lambda g, t: g / denom if t else jnp.zeros_like(g), grads, trainable)
  grad_norm = optax.tree.norm(grads)
  finite_loss = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  if not nan_guard:
    ok = finite_loss
    params, opt_state = apply_update(tx, state.params, state.opt_state, grads)
    new = state.replace(step=step, params=params, opt_state=opt_state)
  elif not nan_guard_state:  # skip the update itself: no extra pass over the state
    ok = finite_loss
    good = state.finite & ok
    params, opt_state = update_if(good, tx, state.params, state.opt_state, grads)
    new = state.replace(step=jnp.where(good, step, state.step), params=params,
                        opt_state=opt_state, finite=good)
  else:  # also check the updated state, keep the old one by a select
    params, opt_state = apply_update(tx, state.params, state.opt_state, grads)
    ok = finite_loss & all_finite((params, opt_state))
    good = state.finite & ok
    new = state.replace(step=step, params=params, opt_state=opt_state)
    new = jax.tree.map(lambda n, o: jnp.where(good, n, o), new, state).replace(finite=good)
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'tokens': wsum, 'finite': ok,
             'finite_loss': finite_loss}  # param_norm: computed on the host's log steps only
  metrics.update({name: fn(state.step) for name, fn in schedules.items()})  # lr (, tau_lr)
  metrics.update({k: v / denom for k, v in taus.items()})
  return new, metrics


def eval_step(params, constants, batch, *, model: Transformer):
  """{'loss_sum', 'weights'} of one eval batch (sums, so batches and hosts add up exactly)."""
  loss_sum, (wsum, _) = loss_terms(params, constants, batch, model=model)
  return {'loss_sum': loss_sum, 'weights': wsum}


def init_state(rng, *, model: Transformer, tx, seq_len: int) -> TrainState:
  init_rng, run_rng = jax.random.split(rng)
  variables = nn.unbox(model.init(init_rng, jnp.zeros((1, seq_len), jnp.int32)))
  params = variables.pop('params')
  constants = {k: v for k, v in variables.items() if k not in ('intermediates', 'cache')}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=run_rng, constants=constants, finite=jnp.ones((), bool))


def init_state_from_params(params, rng, *, model: Transformer, tx, seq_len: int) -> TrainState:
  """init_state with the given params (e.g. imported pretrained weights) and their fresh optimizer
  state (tx.init: frozen weights of temperature-only mode get none). Under jit the random init of
  the params is dead code; only the constants and the run rng of init_state are kept."""
  state = init_state(rng, model=model, tx=tx, seq_len=seq_len)
  return state.replace(params=params, opt_state=tx.init(params))


# ----------------------------------------------------------------------------- setup

@dataclasses.dataclass
class Setup:
  """Everything the loop (or a test) needs; built once by `setup`."""
  config: Any
  model: Transformer
  mesh: jax.sharding.Mesh
  state_shardings: TrainState
  abstract_state: TrainState       # ShapeDtypeStructs carrying the target shardings (for restore)
  batch_sharding: NamedSharding
  init_fn: Callable                # rng -> sharded TrainState
  step_fn: Callable                # jitted train_step (state donated), no temperature metrics
  eval_fn: Callable                # jitted eval_step
  param_count: dict
  flops_per_token: float
  from_params_fn: Optional[Callable] = None  # (params on param shardings, rng) -> sharded TrainState
  log_step_fn: Optional[Callable] = None     # step_fn that also returns the mean temperatures


def setup(config, mesh: Optional[jax.sharding.Mesh] = None) -> Setup:
  """Validated config -> model, mesh, shardings, and the jitted init / train / eval functions."""
  mesh = mesh if mesh is not None else shard_lib.make_mesh(config.mesh)
  mcfg, scfg = config_lib.validate(config, mesh)
  model = Transformer(mcfg, scfg)
  rules = shard_lib.logical_rules(config.mesh)
  T = config.data.seq_len
  repl = shard_lib.replicated(mesh)

  boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, T), jnp.int32)),
                         jax.random.PRNGKey(0))
  param_sh = shard_lib.param_shardings(boxed['params'], mesh, rules)
  abstract_params = nn.unbox(boxed['params'])
  tx, schedules = optim.make_optimizer(config, abstract_params)
  abstract = jax.eval_shape(functools.partial(init_state, model=model, tx=tx, seq_len=T),
                            jax.random.PRNGKey(0))
  masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731  (frozen: no state)
  opt_sh = optax.tree_map_params(tx, lambda v, sh: v if masked(v) else sh, abstract.opt_state,
                                 param_sh, transform_non_params=lambda _: repl, is_leaf=masked)
  state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl,
                        constants=jax.tree.map(lambda _: repl, abstract.constants), finite=repl)
  abstract_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                abstract, state_sh)
  init_fn = jax.jit(functools.partial(init_state, model=model, tx=tx, seq_len=T),
                    out_shardings=state_sh)
  from_params_fn = jax.jit(
      functools.partial(init_state_from_params, model=model, tx=tx, seq_len=T),
      in_shardings=(param_sh, repl), out_shardings=state_sh, donate_argnums=0)

  batch_sh = shard_lib.batch_sharding(mesh, rules)
  micro_sh = NamedSharding(mesh, P(None, *shard_lib.batch_spec(rules)))
  trainable = optim.trainable_mask(abstract_params, config.optim)
  has_tau = any(is_temperature_path(p) for p, _ in
                jax.tree_util.tree_flatten_with_path(abstract_params)[0])
  if 'tau' not in set(jax.tree.leaves(optim.param_labels(abstract_params, config.optim))):
    schedules = {'lr': schedules['lr']}  # no temperature group: do not log an unused tau_lr
  step = functools.partial(
      train_step, model=model, tx=tx, schedules=schedules, trainable=trainable,
      micro_batches=config.train.micro_batches, micro_sharding=micro_sh,
      nan_guard=config.train.nan_guard, nan_guard_state=config.train.nan_guard_state,
      inject_nan_at_step=config.train.inject_nan_at_step)
  jit_step = functools.partial(jax.jit, in_shardings=(state_sh, batch_sh),
                               out_shardings=(state_sh, repl), donate_argnums=0)
  step_fn = jit_step(step)
  # Temperatures are read out of the model ('intermediates') only on log steps: the outputs cost
  # fusions (8% of a smollm2-135m step on CPU), so log steps use their own compiled step.
  log_step_fn = (jit_step(functools.partial(step, log_temperatures=True))
                 if config.train.log_temperatures and has_tau else step_fn)
  eval_fn = jax.jit(functools.partial(eval_step, model=model),
                    in_shardings=(param_sh, state_sh.constants, batch_sh), out_shardings=repl)
  counts = param_counts(abstract_params)
  fpt = metrics_lib.flops_per_token(mcfg, counts['total'], T,
                                    weight_grads=config.optim.mode != 'temperature_only')
  return Setup(config, model, mesh, state_sh, abstract_state, batch_sh, init_fn, step_fn,
               eval_fn, counts, fpt, from_params_fn, log_step_fn)


# ----------------------------------------------------------------------------- fresh state

def fresh_state(s: Setup) -> tuple[TrainState, Optional[str]]:
  """The state of a run that starts without a checkpoint: random init, or model.init_from's
  weights placed on the param shardings with a fresh optimizer state. Also fills the
  strategy's data statistics (ssa/statistics.py, e.g. the 'frequency' table). Returns (state,
  message describing what was loaded or None)."""
  cfg = s.config
  rng = jax.random.PRNGKey(cfg.seed)
  msg = None
  if cfg.model.get('init_from', ''):
    init_rng, _ = jax.random.split(rng)  # the key init_state gives model.init
    params, _ = pretrained.load_init_params(cfg, init_rng)
    params = pretrained.place_params(params, s.abstract_state.params, s.state_shardings.params,
                                     cfg.model.init_from)
    state = s.from_params_fn(params, rng)
    del params
    counts = param_counts(state.params)
    where = ('loaded too' if cfg.model.init_from.startswith('ssa:') else 'at their init')
    msg = (f'Initialised from model.init_from={cfg.model.init_from!r}: {counts["total"]:,} '
           f'parameters loaded ({counts["temperature"]:,} temperature {where}).')
    logging.info(msg)
  else:
    state = s.init_fn(rng)
  tables = statistics.strategy_constants(cfg, s.model.cfg.padded_vocab_size)
  if tables is not None:  # the strategy's data statistics (e.g. 'frequency')
    sh = s.state_shardings.constants['constants']
    state = state.replace(constants={**state.constants, 'constants': {
        k: jax.device_put(v, sh[k]) for k, v in tables.items()}})
  return state, msg


# ----------------------------------------------------------------------------- evaluation

def evaluate(s: Setup, state: TrainState) -> dict[str, float]:
  """Validation loss and perplexity over config.data.eval_batches batches (or one pass)."""
  it, _ = make_eval_data(s.config)
  total = np.zeros(2)
  B = s.config.data.batch_size
  n = 0
  for local in it:
    out = s.eval_fn(state.params, state.constants, shard_lib.global_batch(local, s.batch_sharding, B))
    out = jax.device_get(out)
    total += [out['loss_sum'], out['weights']]
    n += 1
  if total[1] <= 0:  # a loss of 0 and a perplexity of 1.0 would be reported
    raise DataError(f'data.eval_split={s.config.data.eval_split!r} of data.dataset='
                    f'{s.config.data.dataset!r} gave no tokens to evaluate in {n} batch(es).')
  loss = total[0] / total[1]
  return {'loss': float(loss), 'perplexity': float(math.exp(min(loss, 80.0))),
          'tokens': float(total[1]), 'batches': n}


_param_norm = jax.jit(optax.tree.norm)


def check_eval_data(config) -> None:
  """DataError now, before any training step, if the eval split cannot be opened or holds no
  token (else the run would fail, or report perplexity 1.0, at its first eval)."""
  it, _ = make_eval_data(config)
  try:
    first = next(iter(it))
  except StopIteration:
    first = None
  if first is None or float(np.sum(first['weights'])) <= 0:
    raise DataError(f'data.eval_split={config.data.eval_split!r} of data.dataset='
                    f'{config.data.dataset!r} holds no tokens to evaluate (train.eval_every='
                    f'{config.train.eval_every} asks for evaluation); give the dataset that '
                    'split, or set train.eval_every=-1.')


# ----------------------------------------------------------------------------- loop

def train_and_evaluate(config, workdir: str, mesh=None) -> dict[str, Any]:
  """Trains config.train.num_steps steps in `workdir` (resuming from its latest checkpoint).

  Returns {'step': last step, 'history': [train metric records], 'eval': last eval metrics,
  'eval_start': eval metrics before the first step (train.eval_at_start) or None,
  'stopped_by': None or the signal name, 'state': the final TrainState, 'model': the
  Transformer, 'tokens_seen': steps x global batch x seq_len}. Raises NonFiniteError
  after saving the last good state.
  """
  run = Run(config, workdir, mesh)  # setup, data, restore-or-init, metric writer
  with StopFlag() as stop:
    try:
      run.evaluate_at_start()
      while run.step < run.num_steps:
        run.train_step()
        if run.at_sync_point(stop):
          run.sync_metrics()  # NaN rollback: saves the last good state, raises NonFiniteError
          if run.evaluate_save_or_stop(stop):
            break
      else:
        run.finish()  # final eval (unless just done) and checkpoint
    except BaseException:
      run.close(raise_errors=False)  # the first error is the one reported
      raise
    run.close()
  return run.result()


class Run:
  """One training run in a workdir and the loop's state between its sync points.

  Steps are dispatched asynchronously; the host waits for their metrics only at a sync point
  (a log, eval or checkpoint step, a stop request, or the last step), where it checks them for
  non-finite values, logs, evaluates and saves.
  """

  def __init__(self, config, workdir: str, mesh=None):
    t0 = time.time()
    self.cfg = cfg = config
    self.s = setup(config, mesh)  # every config check, before the workdir is touched
    self.lease = workdir_lib.claim(workdir, cfg)  # lock, run identity (ssa/workdir.py)
    self.ckpt = None
    self.writer = None
    try:
      self._open(workdir, t0)
    except BaseException:
      self.close(raise_errors=False)
      raise

  def _open(self, workdir: str, t0: float):
    cfg = self.cfg
    ev = cfg.train.eval_every
    self.eval_every = None if ev is not None and ev < 0 else ev  # None = never
    self.it, tokenizer = make_train_data(cfg)
    if tokenizer.vocab_size > self.s.model.cfg.vocab_size:
      raise config_lib.ConfigError(
          f'model.vocab_size={self.s.model.cfg.vocab_size} is smaller than the tokenizer '
          f'{cfg.data.tokenizer!r} vocabulary ({tokenizer.vocab_size}); set model.vocab_size.')
    if self.eval_every is not None:  # every split the run needs opens before step 1
      check_eval_data(cfg)
    self.lease.clear()  # checkpoint.overwrite: the previous run goes now, not before the checks
    self.ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), cfg.checkpoint)
    self.state, self.restored, init_msg = self._restore_or_init()
    self.lease.commit()  # run_config.json: this run's identity (or its accepted changes)
    if self.lease.message:
      init_msg = '\n'.join(m for m in (self.lease.message, init_msg) if m)
    self.step = int(jax.device_get(self.state.step))
    self.num_steps = cfg.train.num_steps
    self.peak, peak_src = metrics_lib.peak_flops(cfg.train.peak_flops_per_device)
    self.writer = metrics_lib.MetricWriter(workdir, tensorboard=cfg.train.tensorboard,
                                           progress_bar=cfg.train.progress_bar,
                                           total=self.num_steps, initial=self.step)
    self.writer.log_config(cfg)
    self._announce(peak_src, time.time() - t0, init_msg)
    self.history, self.first_eval, self.last_eval, self.stopped_by = [], None, None, None
    self.data_states = {self.step: self.it.get_state()}  # data state after each pending step
    self.pending = []                                     # (step, metrics on device)
    self.last_saved = self.step if self.restored else None
    self.t_last = None
    self._due = (False, False, False)

  def _restore_or_init(self):
    """(state, restored?, message): the latest checkpoint of the workdir, else a fresh state."""
    s, cfg = self.s, self.cfg
    restored = None
    if cfg.checkpoint.restore:
      restored = self.ckpt.restore_latest(s.abstract_state, cfg, fallback=cfg.checkpoint.fallback)
    if restored is None:
      state, msg = fresh_state(s)
      return state, False, msg
    state, data_state, _, start = restored
    self.it.set_state(data_state)
    logging.info('Resumed from %s', self.ckpt.step_dir(start))
    msg = None
    if cfg.model.get('init_from', ''):
      msg = (f'Resumed from {self.ckpt.step_dir(start)}: model.init_from='
             f'{cfg.model.init_from!r} is ignored (it only initialises fresh runs).')
      logging.info(msg)
    return state, True, msg

  def _announce(self, peak_src: str, setup_s: float, init_msg: Optional[str]):
    s, cfg = self.s, self.cfg
    B, T = cfg.data.batch_size, cfg.data.seq_len
    self.writer.message(
        f'{cfg.model.preset} ssa.strategy={cfg.ssa.strategy}: {s.param_count["total"]:,} params '
        f'({s.param_count["temperature"]:,} temperature), mesh {dict(s.mesh.shape)}, '
        f'{jax.process_count()} process(es), batch {B}x{T}, steps {self.step}->{self.num_steps}, '
        f'{s.flops_per_token / 1e6:.2f} MFLOP/token, peak {self.peak:.3g} FLOP/s ({peak_src}); '
        f'setup {setup_s:.1f}s')
    if init_msg:
      self.writer.message(init_msg)

  def save(self, step: int, state):
    if self.last_saved == step:
      return
    self.ckpt.save(step, state, self.data_states[step], self.cfg)
    self.last_saved = step

  def evaluate_at_start(self):
    if self.cfg.train.eval_at_start and not self.restored and self.eval_every is not None:
      self.first_eval = evaluate(self.s, self.state)
      self.writer.write(0, self.first_eval, kind='eval')

  def train_step(self):
    """Dispatches one step (no wait for its result)."""
    batch = shard_lib.global_batch(next(self.it), self.s.batch_sharding, self.cfg.data.batch_size)
    nxt = self.step + 1  # a step whose record is logged also reports the temperatures
    logged = (nxt % self.cfg.train.log_every == 0 or nxt == self.num_steps or self.t_last is None)
    fn = self.s.log_step_fn if logged and self.s.log_step_fn is not None else self.s.step_fn
    self.state, m = fn(self.state, batch)
    self.step += 1
    self.data_states[self.step] = self.it.get_state()
    self.pending.append((self.step, m))

  def at_sync_point(self, stop) -> bool:
    step, every = self.step, self.cfg.checkpoint.every
    due_log = step % self.cfg.train.log_every == 0 or step == self.num_steps or self.t_last is None
    due_eval = bool(self.eval_every) and step % self.eval_every == 0
    due_save = bool(every) and step % every == 0
    local_stop = stop.requested is not None and jax.process_count() == 1
    self._due = (due_log, due_eval, due_save)
    return due_log or due_eval or due_save or local_stop or step == self.num_steps

  def sync_metrics(self):
    """Fetches the pending steps' metrics; on a non-finite one saves the last good state and
    raises NonFiniteError; logs the last step's record (with throughput) when a log is due."""
    fetched = jax.device_get([m for _, m in self.pending])
    dt = time.perf_counter() - self.t_last if self.t_last is not None else None
    bad = next(((st, m) for (st, _), m in zip(self.pending, fetched) if not m['finite']), None)
    if bad is not None and self.cfg.train.nan_guard:
      self._stop_non_finite(*bad)
    B, T = self.cfg.data.batch_size, self.cfg.data.seq_len
    rec = {k: float(np.asarray(v)) for k, v in fetched[-1].items()
           if k not in ('finite', 'finite_loss')}
    if dt:
      rec['tokens_per_s'] = len(self.pending) * B * T / dt
      rec['step_time_s'] = dt / len(self.pending)
      rec['mfu'] = rec['tokens_per_s'] * self.s.flops_per_token / self.peak
    rec['loss_mean'] = float(np.mean([f['loss'] for f in fetched]))
    rec['tokens_seen'] = self.step * B * T  # cumulative positions trained on ('tokens': this step's targets)
    if self._due[0]:
      rec['param_norm'] = float(_param_norm(self.state.params))  # the logged step's params
      self.writer.write(self.step, rec)
      self.history.append({'step': self.step, **rec})
    self.data_states = {self.step: self.data_states[self.step]}
    self.pending = []

  def _stop_non_finite(self, bad_step: int, m):
    """The state kept by the guard is the one before `bad_step` (updates after it are no-ops);
    it is saved only after checking on the host that every value of it is finite."""
    good = bad_step - 1
    o = self.cfg.optim
    if bool(m['finite_loss']):
      what = (f'the loss ({float(m["loss"]):.4g}) and gradient norm ({float(m["grad_norm"]):.4g}) '
              'were finite but the optimizer update made parameters or optimizer state '
              f'non-finite (optim.optimizer={o.optimizer!r}, optim.lr={o.lr:g}, '
              f'optim.eps={o.eps:g})')
      change = 'raise optim.eps or lower optim.lr'
    else:
      what = f'loss={float(m["loss"])}, grad_norm={float(m["grad_norm"])}'
      change = ('lower optim.lr, lengthen optim.warmup_steps or set optim.clip_norm; or inspect '
                'the data')
    kept = self.state.replace(finite=jnp.ones((), bool))
    if bool(jax.device_get(all_finite((kept.params, kept.opt_state)))):
      self.save(good, kept)
      self.ckpt.wait()
      saved = (f'The last good state (step {good}) is saved in {self.ckpt.step_dir(good)}; '
               'earlier checkpoints are untouched.')
    else:  # never keep a non-finite state as "good"
      saved = ('The state in memory is not finite (an earlier update with finite gradients made it '
               'so; train.nan_guard_state=True stops at that step), so nothing was saved; the '
               'checkpoints on disk are untouched.')
    raise NonFiniteError(
        f'Non-finite values at step {bad_step}: {what}; training stopped. {saved} Resuming with '
        f'the same config replays the same batch: {change}, then resume with the changed fields '
        f'named in --config.checkpoint.allow_changes (e.g. --config.optim.lr={o.lr / 3:g} '
        '--config.checkpoint.allow_changes=optim.lr).')

  def evaluate_save_or_stop(self, stop) -> bool:
    """Periodic eval and checkpoint; True when a stop was requested (checkpoint saved)."""
    _, due_eval, due_save = self._due
    if due_eval:
      self.last_eval = evaluate(self.s, self.state)
      self.writer.write(self.step, self.last_eval, kind='eval')
    want_stop = stop.requested is not None
    if jax.process_count() > 1:  # every process stops at the same step
      want_stop = bool(np.any(multihost_utils.process_allgather(np.array(want_stop))))
    if due_save or want_stop:
      self.save(self.step, self.state)
    if want_stop:
      self.stopped_by = stop.requested or 'signal on another process'
      self.writer.message(f'Stop requested ({self.stopped_by}) at step {self.step}: checkpoint '
                          f'saved in {self.ckpt.step_dir(self.step)}.')
      return True
    self.t_last = time.perf_counter()  # timing excludes compilation, eval and checkpointing
    return False

  def finish(self):
    ev = self.eval_every
    if ev is not None and (self.last_eval is None or not (ev and self.step % ev == 0)):
      self.last_eval = evaluate(self.s, self.state)
      self.writer.write(self.step, self.last_eval, kind='eval')
    self.save(self.step, self.state)

  def close(self, raise_errors: bool = True):
    """Waits for the last save (its error raised unless raise_errors=False) and frees the
    workdir; safe to call on a half-opened run."""
    try:
      if self.ckpt is not None:
        self.ckpt.close(raise_errors=raise_errors)
    finally:
      if self.writer is not None:
        last = self.history[-1] if getattr(self, 'history', None) else {}
        ev = getattr(self, 'last_eval', None) or {}
        self.writer.close({'hparam/train_loss': last.get('loss'),
                           'hparam/eval_loss': ev.get('loss')}, step=getattr(self, 'step', None))
      self.lease.release()

  def result(self) -> dict[str, Any]:
    return {'step': self.step, 'history': self.history, 'eval': self.last_eval,
            'eval_start': self.first_eval, 'stopped_by': self.stopped_by, 'state': self.state,
            'model': self.s.model, 'tokens_seen': self.step * self.cfg.data.batch_size *
            self.cfg.data.seq_len}
