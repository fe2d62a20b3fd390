"""Training: TrainState, the pure train_step / eval_step, sharded init, and the loop.

    config -> mesh -> data iterator -> model init (shapes by jax.eval_shape, then a jitted init with
    out_shardings) -> restore if a checkpoint exists, else random init or model.init_from
    (pretrained weights via ssa.convert) -> loop { train_step -> metrics ->
    periodic eval / checkpoint } -> final eval + checkpoint

train_step(state, batch) -> (state, metrics) is a module-level pure function; `setup` jits it ONCE
with explicit in/out shardings and the state donated. Inside it:

  1. the global batch [B, T] is split into train.micro_batches micro-batches (rows m, m+M, ... so
     each device keeps its rows) and scanned: sums of token losses and of gradients of the SUM of
     weighted token losses; at the end both are divided by the total weight. This is exactly the
     gradient of the weighted mean loss over the whole batch (what one large batch gives).
  2. optax update (ssa/optim.py), new params.
  3. NaN/Inf guard (train.nan_guard): if the loss or the gradient norm is not finite, the update is
     discarded and state.finite becomes False; from then on every step is a no-op (sticky), so the
     state stays the last good one until the host sees the flag at its next sync point, saves that
     state and stops with NonFiniteError naming the step.

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
import signal
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
from ssa import sharding as shard_lib
from ssa.model import Transformer, is_temperature_path, param_counts

DATA_SPLITS = ('process', 'global')
INIT_FROM_PREFIXES = ('hf:', 'gguf:', 'ssa:')


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


def loss_terms(params, constants, batch, *, model: Transformer, loss_scale=1.0,
               log_temperatures: bool = False):
  """(sum of weighted token losses, (sum of weights, {tau name: weighted sum of tau}))."""
  kwargs = dict(positions=batch['positions'], segment_ids=batch['segment_ids'])
  if log_temperatures:
    logits, inter = model.apply(_variables(params, constants), batch['inputs'], **kwargs,
                                mutable=['intermediates'])
  else:
    logits, inter = model.apply(_variables(params, constants), batch['inputs'], **kwargs), {}
  w = batch['weights'].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
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


def _micro_split(x, m: int, sharding):
  """[B, ...] -> [M, B/M, ...] with micro-batch i = rows i, i+M, i+2M, ... (device-local)."""
  y = x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)
  return jax.lax.with_sharding_constraint(y, sharding) if sharding is not None else y


def train_step(state: TrainState, batch, *, model: Transformer, tx: optax.GradientTransformation,
               schedules: dict[str, Callable], trainable, micro_batches: int = 1,
               micro_sharding=None, nan_guard: bool = True, inject_nan_at_step: int = -1,
               log_temperatures: bool = False):
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
  grads = jax.tree.map(lambda g, t: g / denom if t else jnp.zeros_like(g), grads, trainable)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=step, params=params, opt_state=opt_state)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  if nan_guard:
    good = state.finite & ok
    new = jax.tree.map(lambda n, o: jnp.where(good, n, o), new, state)
    new = new.replace(finite=good)
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'tokens': wsum, 'finite': ok,
             'param_norm': optax.tree.norm(params)}
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
  rules: tuple
  tx: optax.GradientTransformation
  schedules: dict
  state_shardings: TrainState
  abstract_state: TrainState       # ShapeDtypeStructs carrying the target shardings (for restore)
  batch_sharding: NamedSharding
  init_fn: Callable                # rng -> sharded TrainState
  step_fn: Callable                # jitted train_step (state donated)
  eval_fn: Callable                # jitted eval_step
  param_count: dict
  flops_per_token: float
  from_params_fn: Optional[Callable] = None  # (params on param shardings, rng) -> sharded TrainState


def validate(config) -> None:
  """Config checks that must fail at start, naming the field."""
  config_lib.model_config(config.model)
  config_lib.ssa_config(config.ssa)
  t = config.train
  if t.data_split not in DATA_SPLITS:
    raise config_lib.ConfigError(f'train.data_split={t.data_split!r} is not valid; expected one '
                                 f'of {list(DATA_SPLITS)}.')
  for f in ('num_steps', 'log_every'):
    v = t[f]
    if not isinstance(v, int) or v < 1:
      raise config_lib.ConfigError(f'train.{f}={v!r}; expected a positive integer.')
  if config.data.seq_len > config.model.max_len and config.model.pos_emb == 'learned':
    raise config_lib.ConfigError(f'data.seq_len={config.data.seq_len} exceeds model.max_len='
                                 f'{config.model.max_len} (learned position table).')
  init_from = config.model.get('init_from', '') or ''
  if not isinstance(init_from, str) or (init_from and not any(
      init_from.startswith(p) and len(init_from) > len(p) for p in INIT_FROM_PREFIXES)):
    raise config_lib.ConfigError(f'model.init_from={init_from!r} is not valid; expected \'\' '
                                 "(random init), 'hf:PATH_OR_REPO', 'gguf:PATH' or 'ssa:DIR'.")
  if (jax.process_count() > 1 and config.data.eval_batches is None and
      t.eval_every is not None and t.eval_every >= 0):
    raise config_lib.ConfigError('data.eval_batches=None with several processes: hosts could run '
                                 'different numbers of eval steps and hang; set data.eval_batches.')


def setup(config, mesh: Optional[jax.sharding.Mesh] = None) -> Setup:
  validate(config)
  mcfg, scfg = config_lib.model_config(config.model), config_lib.ssa_config(config.ssa)
  model = Transformer(mcfg, scfg)
  mesh = mesh if mesh is not None else shard_lib.make_mesh(config.mesh)
  rules = shard_lib.logical_rules(config.mesh)
  shard_lib.check_batch(config, mesh, rules)
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
      nan_guard=config.train.nan_guard, inject_nan_at_step=config.train.inject_nan_at_step,
      log_temperatures=bool(config.train.log_temperatures and has_tau))
  step_fn = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                    donate_argnums=0)
  eval_fn = jax.jit(functools.partial(eval_step, model=model),
                    in_shardings=(param_sh, state_sh.constants, batch_sh), out_shardings=repl)
  counts = param_counts(abstract_params)
  fpt = metrics_lib.flops_per_token(mcfg, counts['total'], T)
  return Setup(config, model, mesh, rules, tx, schedules, state_sh, abstract_state, batch_sh,
               init_fn, step_fn, eval_fn, counts, fpt, from_params_fn)


# ----------------------------------------------------------------------------- pretrained init

# ModelConfig fields taken from config.model as they are (they do not change what the weights are).
_IMPORT_OVERRIDES = ('vocab_pad_multiple', 'init_std', 'dtype', 'param_dtype', 'remat', 'preset')


def _matching_presets(imported) -> list[str]:
  try:
    from configs import presets  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  return [name for name, fields in presets.PRESETS.items()
          if all(getattr(imported, k) == v for k, v in fields.items()
                 if k != 'max_len' or imported.pos_emb == 'learned')]


def check_imported_model(imported, config_model, source: str) -> None:
  """ConfigError naming every field where the imported ModelConfig differs from config.model."""
  current = config_lib.model_config(config_model)
  diffs = []
  for f in dataclasses.fields(imported):
    if f.name in _IMPORT_OVERRIDES:
      continue
    if f.name == 'max_len' and imported.pos_emb != 'learned':
      continue  # no position table: max_len is only the kv-cache length
    a, b = getattr(current, f.name), getattr(imported, f.name)
    if a != b:
      diffs.append((f.name, a, b))
  if not diffs:
    return
  presets = _matching_presets(imported)
  hint = (f'use the preset --config=configs/<file>.py:{presets[0]} (matches the checkpoint) or '
          if presets else 'use a preset with these shapes or ')
  raise config_lib.ConfigError(
      f'model.init_from={source!r}: the checkpoint describes a different model than config.model: '
      + '; '.join(f'model.{k}: config {a!r}, checkpoint {b!r}' for k, a, b in diffs)
      + f'. To train from it, {hint}set the overrides '
      + ' '.join(f'--config.model.{k}={b}' for k, _, b in diffs) + '.')


# SSA fields that may differ between an ssa: checkpoint and the run that starts from it.
_SSA_FREE_FIELDS = ('backend', 'theta_init')


def check_imported_ssa(saved, current, source: str) -> None:
  """An ssa: checkpoint's temperatures mean what the run's ssa config says, or ConfigError."""
  diffs = [(f.name, getattr(current, f.name), getattr(saved, f.name))
           for f in dataclasses.fields(current)
           if f.name not in _SSA_FREE_FIELDS and getattr(current, f.name) != getattr(saved, f.name)]
  if diffs:
    raise config_lib.ConfigError(
        f'model.init_from={source!r}: the checkpoint was trained with another SSA config: '
        + '; '.join(f'ssa.{k}: config {a!r}, checkpoint {b!r}' for k, a, b in diffs)
        + '. Set ' + ' '.join(f'--config.ssa.{k}={b}' for k, _, b in diffs) + ' to train from it.')


def load_init_params(config, rng=None):
  """(params, ModelConfig) of config.model.init_from, checked against config.model.

  hf:/gguf: temperature params (tau_*) are the importer's, at their init (identity at start);
  `rng` is the key of those that are random (train_and_evaluate passes the init key of
  config.seed). ssa: (an SSA checkpoint, ssa/convert/ssa_format.py) loads them too."""
  from ssa import convert  # pylint: disable=g-import-not-at-top
  src = config.model.init_from
  overrides = {k: config.model[k] for k in _IMPORT_OVERRIDES}
  try:
    if src.startswith('hf:'):
      imported, params = convert.load_hf(src[len('hf:'):], config.ssa, rng=rng, **overrides)
    elif src.startswith('gguf:'):
      imported, params, _ = convert.load_gguf(os.path.expanduser(src[len('gguf:'):]), config.ssa,
                                              tokenizer=False, rng=rng, **overrides)
    elif src.startswith('ssa:'):
      imported, saved_ssa, variables, _ = convert.load_ssa(src[len('ssa:'):])
      check_imported_ssa(saved_ssa, config_lib.ssa_config(config.ssa), src)
      imported = dataclasses.replace(  # stored shapes: the padded vocab is not overridden
          imported, **{k: v for k, v in overrides.items() if k != 'vocab_pad_multiple'})
      params = variables['params']
    else:
      raise config_lib.ConfigError(f'model.init_from={src!r} is not valid; expected '
                                   "'hf:PATH_OR_REPO', 'gguf:PATH' or 'ssa:DIR'.")
  except convert.ConversionError as e:
    raise convert.ConversionError(f'model.init_from={src!r}: {e}') from e
  check_imported_model(imported, config.model, src)
  return params, imported


def fresh_state(s: Setup) -> tuple[TrainState, Optional[str]]:
  """The state of a run that starts without a checkpoint: random init, or model.init_from's
  weights placed on the param shardings with a fresh optimizer state. Also fills the
  ssa.strategy='frequency' table. Returns (state, message describing what was loaded or None)."""
  cfg = s.config
  rng = jax.random.PRNGKey(cfg.seed)
  msg = None
  if cfg.model.get('init_from', ''):
    init_rng, _ = jax.random.split(rng)  # the key init_state gives model.init
    params, _ = load_init_params(cfg, init_rng)
    if jax.tree.structure(params) != jax.tree.structure(s.abstract_state.params):
      raise config_lib.ConfigError(f'model.init_from={cfg.model.init_from!r}: imported parameter '
                                   'tree does not match the model (check the ssa config).')
    bad = [f'{jax.tree_util.keystr(p)}: {tuple(np.shape(x))} vs {tuple(a.shape)}'
           for (p, x), a in zip(jax.tree_util.tree_leaves_with_path(params),
                                jax.tree.leaves(s.abstract_state.params))
           if tuple(np.shape(x)) != tuple(a.shape)]
    if bad:
      raise config_lib.ConfigError(f'model.init_from={cfg.model.init_from!r}: imported shapes '
                                   f'differ from the model (imported vs model): {bad[:6]}.')
    params = jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), params, s.abstract_state.params)
    params = jax.device_put(params, s.state_shardings.params)
    state = s.from_params_fn(params, rng)
    del params
    counts = param_counts(state.params)
    where = ('loaded too' if cfg.model.init_from.startswith('ssa:') else 'at their init')
    msg = (f'Initialised from model.init_from={cfg.model.init_from!r}: {counts["total"]:,} '
           f'parameters loaded ({counts["temperature"]:,} temperature {where}).')
    logging.info(msg)
  else:
    state = s.init_fn(rng)
  if cfg.ssa.strategy == 'frequency':
    table = token_log_freq_table(cfg, s.model.cfg.padded_vocab_size)
    consts = dict(state.constants)
    consts['constants'] = {'token_log_freq': jax.device_put(
        table, s.state_shardings.constants['constants']['token_log_freq'])}
    state = state.replace(constants=consts)
  return state, msg


# ----------------------------------------------------------------------------- data

class _RowSlice:
  """data_split='global': every process reads the global batch and keeps its own rows."""

  def __init__(self, it, pi: int, pc: int):
    self._it, self._pi, self._pc = it, pi, pc

  def __iter__(self):
    return self

  def __next__(self):
    b = next(self._it)
    n = next(iter(b.values())).shape[0] // self._pc
    return {k: v[self._pi * n:(self._pi + 1) * n] for k, v in b.items()}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, s):
    self._it.set_state(s)


def _make_data(config, make_iterator):
  """make_iterator(config, process_index, process_count) under train.data_split."""
  pi, pc = jax.process_index(), jax.process_count()
  if config.train.data_split == 'global':
    it, tok = make_iterator(config, 0, 1)
    return _RowSlice(it, pi, pc), tok
  return make_iterator(config, pi, pc)


def make_train_data(config):
  from ssa import data as data_lib  # pylint: disable=g-import-not-at-top
  return _make_data(config, data_lib.make_train_iterator)


def make_eval_data(config):
  from ssa import data as data_lib  # pylint: disable=g-import-not-at-top
  return _make_data(config, data_lib.make_eval_iterator)


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
  loss = total[0] / max(total[1], 1.0)
  return {'loss': float(loss), 'perplexity': float(math.exp(min(loss, 80.0))),
          'tokens': float(total[1]), 'batches': n}


def token_log_freq_table(config, vocab_size: int) -> np.ndarray:
  """ssa.strategy='frequency': standardised unigram log-frequencies of the train data."""
  from ssa.attention import log_frequency_table  # pylint: disable=g-import-not-at-top
  it, _ = make_train_data(config)
  counts = np.zeros(vocab_size, np.int64)
  for _ in range(config.train.frequency_batches):
    b = next(it)
    ids = b['targets'][b['weights'] > 0]
    counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
  if jax.process_count() > 1:
    counts = np.asarray(multihost_utils.process_allgather(counts)).sum(0)
  return log_frequency_table(counts, vocab_size)


# ----------------------------------------------------------------------------- loop

class _StopFlag:
  """SIGTERM / SIGINT -> request a clean stop (checkpoint, then return)."""

  def __init__(self):
    self.requested = None
    self._old = {}

  def __enter__(self):
    import threading  # pylint: disable=g-import-not-at-top
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # second Ctrl-C: stop now
    self.requested = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def train_and_evaluate(config, workdir: str, mesh=None) -> dict[str, Any]:
  """Trains config.train.num_steps steps in `workdir` (resuming from its latest checkpoint).

  Returns {'step': last step, 'history': [train metric records], 'eval': last eval metrics,
  'eval_start': eval metrics before the first step (train.eval_at_start) or None,
  'stopped_by': None or the signal name}. Raises NonFiniteError after saving the last good state.
  """
  t0_setup = time.time()
  s = setup(config, mesh)
  cfg = config
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
  B, T = cfg.data.batch_size, cfg.data.seq_len
  it, tokenizer = make_train_data(cfg)
  if tokenizer.vocab_size > s.model.cfg.vocab_size:
    raise config_lib.ConfigError(
        f'model.vocab_size={s.model.cfg.vocab_size} is smaller than the tokenizer '
        f'{cfg.data.tokenizer!r} vocabulary ({tokenizer.vocab_size}); set model.vocab_size.')

  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), cfg.checkpoint)
  restored = None
  if cfg.checkpoint.restore:
    restored = ckpt.restore_latest(s.abstract_state, cfg, fallback=cfg.checkpoint.fallback)
  init_msg = None
  if restored is not None:
    state, data_state, _, start = restored
    it.set_state(data_state)
    logging.info('Resumed from %s', ckpt.step_dir(start))
    if cfg.model.get('init_from', ''):
      init_msg = (f'Resumed from {ckpt.step_dir(start)}: model.init_from='
                  f'{cfg.model.init_from!r} is ignored (it only initialises fresh runs).')
      logging.info(init_msg)
  else:
    state, init_msg = fresh_state(s)
    start = 0
  start = int(jax.device_get(state.step))

  peak, peak_src = metrics_lib.peak_flops(cfg.train.peak_flops_per_device)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=cfg.train.tensorboard,
                                    progress_bar=cfg.train.progress_bar,
                                    total=cfg.train.num_steps, initial=start)
  writer.message(
      f'{cfg.model.preset} ssa.strategy={cfg.ssa.strategy}: {s.param_count["total"]:,} params '
      f'({s.param_count["temperature"]:,} temperature), mesh {dict(s.mesh.shape)}, '
      f'{jax.process_count()} process(es), batch {B}x{T}, steps {start}->{cfg.train.num_steps}, '
      f'{s.flops_per_token / 1e6:.2f} MFLOP/token, peak {peak:.3g} FLOP/s ({peak_src}); '
      f'setup {time.time() - t0_setup:.1f}s')
  if init_msg:
    writer.message(init_msg)

  num_steps, log_every = cfg.train.num_steps, cfg.train.log_every
  ev, every = cfg.train.eval_every, cfg.checkpoint.every
  if ev is not None and ev < 0:
    ev = None  # never
  history, first_eval, last_eval, stopped_by = [], None, None, None
  data_states = {start: it.get_state()}
  pending = []
  last_saved = start if restored is not None else None
  t_last = None
  multi = jax.process_count() > 1

  def save(step, st):
    nonlocal last_saved
    if last_saved == step:
      return
    ckpt.save(step, st, data_states[step], cfg)
    last_saved = step

  step = start
  with _StopFlag() as stop:
    try:
      if cfg.train.eval_at_start and restored is None and ev is not None:
        first_eval = evaluate(s, state)
        writer.write(0, first_eval, kind='eval')
      while step < num_steps:
        batch = shard_lib.global_batch(next(it), s.batch_sharding, B)
        state, m = s.step_fn(state, batch)
        step += 1
        data_states[step] = it.get_state()
        pending.append((step, m))
        due_log = step % log_every == 0 or step == num_steps or t_last is None
        due_eval = bool(ev) and step % ev == 0
        due_save = bool(every) and step % every == 0
        local_stop = stop.requested is not None and not multi
        if not (due_log or due_eval or due_save or local_stop or step == num_steps):
          continue
        # ---- sync point: fetch metrics, NaN check, stop agreement, log, eval, save.
        fetched = jax.device_get([mm for _, mm in pending])
        dt = time.perf_counter() - t_last if t_last is not None else None
        bad = next(((st, mm) for (st, _), mm in zip(pending, fetched) if not mm['finite']), None)
        if bad is not None and cfg.train.nan_guard:
          bad_step, mm = bad
          good = bad_step - 1
          save(good, state.replace(finite=jnp.ones((), bool)))
          ckpt.wait()
          raise NonFiniteError(
              f'Non-finite loss or gradient at step {bad_step} (loss={float(mm["loss"])}, '
              f'grad_norm={float(mm["grad_norm"])}); training stopped. The last good state '
              f'(step {good}) is saved in {ckpt.step_dir(good)}; earlier checkpoints are '
              'untouched. Lower the learning rate or inspect the data, then resume.')
        rec = {k: float(np.asarray(v)) for k, v in fetched[-1].items() if k != 'finite'}
        if dt:
          rec['tokens_per_s'] = len(pending) * B * T / dt
          rec['step_time_s'] = dt / len(pending)
          rec['mfu'] = rec['tokens_per_s'] * s.flops_per_token / peak
        rec['loss_mean'] = float(np.mean([f['loss'] for f in fetched]))
        if due_log:
          writer.write(step, rec)
          history.append({'step': step, **rec})
        data_states = {step: data_states[step]}
        pending = []
        if due_eval:
          last_eval = evaluate(s, state)
          writer.write(step, last_eval, kind='eval')
        want_stop = stop.requested is not None
        if multi:
          want_stop = bool(np.any(multihost_utils.process_allgather(np.array(want_stop))))
        if due_save or want_stop:
          save(step, state)
        if want_stop:
          stopped_by = stop.requested or 'signal on another process'
          writer.message(f'Stop requested ({stopped_by}) at step {step}: checkpoint saved in '
                         f'{ckpt.step_dir(step)}.')
          break
        t_last = time.perf_counter()  # timing excludes compilation, eval and checkpointing
      if stopped_by is None:
        if ev is not None and (last_eval is None or not (ev and step % ev == 0)):
          last_eval = evaluate(s, state)
          writer.write(step, last_eval, kind='eval')
        save(step, state)
    finally:
      ckpt.close()
      writer.close()
  return {'step': step, 'history': history, 'eval': last_eval, 'eval_start': first_eval,
          'stopped_by': stopped_by,
          'state': state}
