"""Optimizer (config.optim): optax chains, schedules, parameter groups.

    tx, schedules = make_optimizer(config, params)      # params: pytree of arrays or shapes

Every parameter gets one label (param_labels):

    'base'    all weights (the LLM)
    'tau'     temperature parameters (modules named tau_*, ssa.model.is_temperature_path), when
              optim.temperature_group or optim.mode='temperature_only'; otherwise they are 'base'
    'frozen'  everything but the temperatures in optim.mode='temperature_only'

The chain is

    zero the frozen gradients  ->  clip_by_global_norm(optim.clip_norm)  ->  multi_transform(
        base:   adamw(lr schedule, b1, b2, eps, weight_decay, mask=decay_mask)   (or adam / sgd)
        tau:    tau_optimizer(tau lr schedule)                                    (own group)
        frozen: set_to_zero()                                                     (no state) )

so clipping sees the global norm of the TRAINABLE gradients only, and frozen weights keep no
optimizer state (optax multi_transform stores MaskedNode placeholders for them).

Weight decay (decay_mask): only weights with >= 2 dimensions that are not biases, norm scales or
temperature parameters (all kernels and the embedding tables decay).

Schedules: 'cosine' = linear warmup 0 -> lr over warmup_steps, cosine decay to min_lr_ratio * lr at
decay_steps (0 = train.num_steps); 'constant' = the same warmup, then flat.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ssa.config_lib import ConfigError
from ssa.model import is_temperature_path

OPTIMIZERS = ('adamw', 'adam', 'sgd')
SCHEDULES = ('cosine', 'constant')
MODES = ('full', 'temperature_only')


def make_schedule(kind: str, lr: float, warmup: int, decay_steps: int, min_ratio: float,
                  field: str) -> optax.Schedule:
  if kind not in SCHEDULES:
    raise ConfigError(f'{field}={kind!r} is not valid; expected one of {list(SCHEDULES)}.')
  if not isinstance(lr, (int, float)) or lr < 0:
    raise ConfigError(f'learning rate {lr!r} for {field}: expected a number >= 0.')
  warmup = int(warmup or 0)
  if kind == 'constant':
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.constant_schedule(lr)], [warmup])
  if decay_steps <= warmup:
    raise ConfigError(f'optim.decay_steps (or train.num_steps)={decay_steps} must exceed '
                      f'optim.warmup_steps={warmup} for the cosine schedule.')
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay_steps, end_value=lr * min_ratio)


def param_labels(params, optim_cfg) -> Any:
  """'base' | 'tau' | 'frozen' per leaf (see the module docstring)."""
  mode = optim_cfg.mode
  if mode not in MODES:
    raise ConfigError(f'optim.mode={mode!r} is not valid; expected one of {list(MODES)}.')
  own_group = optim_cfg.temperature_group or mode == 'temperature_only'

  def label(path, _):
    if is_temperature_path(path):
      return 'tau' if own_group else 'base'
    return 'frozen' if mode == 'temperature_only' else 'base'
  labels = jax.tree_util.tree_map_with_path(label, params)
  if mode == 'temperature_only' and 'tau' not in jax.tree.leaves(labels):
    raise ConfigError("optim.mode='temperature_only' but the model has no temperature parameters "
                      f'(ssa.strategy has none to train); nothing would train.')
  return labels


NO_DECAY_NAMES = ('bias', 'scale')  # biases (also 2-D ones: DenseGeneral [heads, head_dim]), norms


def decay_mask(params) -> Any:
  """True where weight decay applies: >= 2-D weights that are not biases, norm scales or
  temperature parameters (embeddings and all kernels decay)."""
  def decays(path, p):
    last = str(getattr(path[-1], 'key', path[-1])) if path else ''
    return len(p.shape) >= 2 and last not in NO_DECAY_NAMES and not is_temperature_path(path)
  return jax.tree_util.tree_map_with_path(decays, params)


def _opt(name: str, field: str, sched, b1, b2, eps, wd, mask):
  if name == 'adamw':
    return optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
  if name == 'adam':
    return optax.adam(sched, b1=b1, b2=b2, eps=eps)
  if name == 'sgd':
    return optax.sgd(sched)
  raise ConfigError(f'{field}={name!r} is not valid; expected one of {list(OPTIMIZERS)}.')


def zero_frozen(labels) -> optax.GradientTransformation:
  """Replaces the gradients of 'frozen' leaves by zeros (XLA then skips computing them)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda g, l: jnp.zeros_like(g) if l == 'frozen' else g,
                        updates, labels), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, dict[str, Callable]]:
  """(tx, {'lr': base schedule, 'tau_lr': temperature schedule}) for `params` (arrays or shapes)."""
  o = config.optim
  decay_steps = o.decay_steps or config.train.num_steps
  sched = make_schedule(o.schedule, o.lr, o.warmup_steps, decay_steps, o.min_lr_ratio,
                        'optim.schedule')
  tau_sched = make_schedule(o.tau_schedule, o.tau_lr, o.warmup_steps, decay_steps,
                            o.min_lr_ratio, 'optim.tau_schedule')
  labels = param_labels(params, o)
  transforms = {
      'base': _opt(o.optimizer, 'optim.optimizer', sched, o.b1, o.b2, o.eps, o.weight_decay,
                   decay_mask(params)),
      'tau': _opt(o.tau_optimizer, 'optim.tau_optimizer', tau_sched, o.b1, o.b2, o.eps,
                  o.tau_weight_decay, None),
      'frozen': optax.set_to_zero(),
  }
  used = set(jax.tree.leaves(labels))
  transforms = {k: v for k, v in transforms.items() if k in used}
  chain = []
  if 'frozen' in used:
    chain.append(zero_frozen(labels))
  if o.clip_norm:
    if o.clip_norm < 0:
      raise ConfigError(f'optim.clip_norm={o.clip_norm!r}; expected a positive number, 0 or None.')
    chain.append(optax.clip_by_global_norm(o.clip_norm))
  chain.append(optax.multi_transform(transforms, labels))
  return optax.chain(*chain), {'lr': sched, 'tau_lr': tau_sched}


def trainable_mask(params, optim_cfg) -> Any:
  return jax.tree.map(lambda l: l != 'frozen', param_labels(params, optim_cfg))
