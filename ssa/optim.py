"""Optimizer (config.optim): optax chains, schedules, parameter groups.

    tx, schedules = make_optimizer(config, params)      # params: pytree of arrays or shapes

Every parameter gets one label (param_labels):

    'base'    all weights (the LLM)
    'tau'     temperature parameters (modules named tau_*, ssa.model.is_temperature_path), when
              optim.temperature_group or optim.mode='temperature_only'; otherwise they are 'base'
    'frozen'  everything but the temperatures in optim.mode='temperature_only'

The chain is

    clip_by_global_norm(optim.clip_norm)  ->  multi_transform(
        base:   adamw(lr schedule, b1, b2, eps, weight_decay, mask=decay_mask)   (or adam / sgd)
        tau:    tau_optimizer(tau lr schedule)                                    (own group)
        frozen: set_to_zero()                                                     (no state) )

Frozen gradients are zeroed in ONE place, train_lib.train_step (statically, from trainable_mask,
so XLA never computes them): clipping sees the global norm of the TRAINABLE gradients only, and
frozen weights keep no optimizer state (optax multi_transform stores MaskedNode placeholders).

Weight decay (decay_mask): only weights with >= 2 dimensions that are not biases, norm scales or
temperature parameters (all kernels and the embedding tables decay).

Schedules: 'cosine' = linear warmup 0 -> lr over warmup_steps, cosine decay to min_lr_ratio * lr at
decay_steps (0 = train.num_steps); 'constant' = the same warmup, then flat.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from ssa.config_lib import ConfigError
from ssa.model import is_temperature_path


def make_schedule(kind: str, lr: float, warmup: int, decay_steps: int,
                  min_ratio: float) -> optax.Schedule:
  """'constant' (warmup, then flat) or 'cosine' (warmup, cosine decay to min_ratio * lr)."""
  warmup = int(warmup or 0)
  if kind == 'constant':
    if warmup == 0:
      return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 optax.constant_schedule(lr)], [warmup])
  return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay_steps, end_value=lr * min_ratio)


def param_labels(params, optim_cfg) -> Any:
  """'base' | 'tau' | 'frozen' per leaf (see the module docstring)."""
  mode = optim_cfg.mode
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


def _opt(name: str, sched, b1, b2, eps, wd, mask):
  if name == 'adamw':
    return optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
  if name == 'adam':
    return optax.adam(sched, b1=b1, b2=b2, eps=eps)
  return optax.sgd(sched)  # config_lib.validate admits only OPTIMIZERS


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, dict[str, Callable]]:
  """(tx, {'lr': base schedule, 'tau_lr': temperature schedule}) for `params` (arrays or shapes).
  The fields were checked by ssa.config_lib.validate."""
  o = config.optim
  decay_steps = o.decay_steps or config.train.num_steps
  sched = make_schedule(o.schedule, o.lr, o.warmup_steps, decay_steps, o.min_lr_ratio)
  tau_sched = make_schedule(o.tau_schedule, o.tau_lr, o.warmup_steps, decay_steps,
                            o.min_lr_ratio)
  labels = param_labels(params, o)
  transforms = {
      'base': _opt(o.optimizer, sched, o.b1, o.b2, o.eps, o.weight_decay, decay_mask(params)),
      'tau': _opt(o.tau_optimizer, tau_sched, o.b1, o.b2, o.eps, o.tau_weight_decay, None),
      'frozen': optax.set_to_zero(),  # no update and no optimizer state (MaskedNode)
  }
  used = set(jax.tree.leaves(labels))
  transforms = {k: v for k, v in transforms.items() if k in used}
  # With frozen weights the chain starts with a stateless identity: the optimizer-state layout of
  # checkpoints written when frozen gradients were also zeroed here (before train_step did it).
  chain = [optax.identity()] if 'frozen' in used else []
  if o.clip_norm:
    chain.append(optax.clip_by_global_norm(o.clip_norm))
  chain.append(optax.multi_transform(transforms, labels))
  return optax.chain(*chain), {'lr': sched, 'tau_lr': tau_sched}


def trainable_mask(params, optim_cfg) -> Any:
  """True for leaves that train; train_step passes zero gradients (statically) for the others."""
  return jax.tree.map(lambda l: l != 'frozen', param_labels(params, optim_cfg))
