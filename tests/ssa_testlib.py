"""Shared helpers for the model tests: tiny configs of each family and every SSA variant."""

import contextlib
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from ssa import attention
from ssa import config_lib
from ssa import model as model_lib
from ssa.strategies import log_frequency_table

VOCAB = 97  # small vocabulary for speed; padded to 128 in the model

FAMILY_PRESETS = {'gpt2': 'gpt2-tiny', 'neox': 'pythia-160m', 'llama': 'llama-tiny'}
# Test-sized shapes of each family (pythia-160m shrunk; GQA kept in llama-tiny).
TINY = dict(vocab_size=VOCAB, d_model=32, n_layers=2, head_dim=8, d_ff=64, max_len=64)
TINY_HEADS = {'gpt2': (4, 4), 'neox': (4, 4), 'llama': (4, 2)}

# Every switch of docs/ssa.md §1.4, each non-default value at least once, and every registered
# strategy (ssa/strategies.py): adding a strategy adds its row here.
VARIANTS = {
    'vanilla': dict(strategy='vanilla'),
    'ssa': dict(),  # q pos+tok, v tok, add, exp_exp, per head, sharing on, gelu
    'q_only': dict(q='pos+tok', k='none', v='none'),
    'k_only': dict(q='none', k='pos+tok', v='none'),
    'v_only': dict(q='none', k='none', v='pos+tok'),
    'qk': dict(q='pos+tok', k='pos+tok', v='none'),
    'kv': dict(q='none', k='tok', v='tok'),
    'qkv': dict(q='pos+tok', k='pos+tok', v='pos+tok'),
    'q_pos': dict(q='pos', v='none'),
    'q_tok': dict(q='tok', v='none'),
    'v_pos': dict(q='none', v='pos'),
    'mul': dict(combine='mul'),
    'sigmoid': dict(slope='sigmoid'),
    'linear': dict(slope='linear', linear_min_tau=0.05),
    'per_layer': dict(granularity='layer', k='pos+tok'),
    'no_sharing': dict(weight_sharing=False, k='tok'),
    'no_sharing_layer': dict(weight_sharing=False, granularity='layer'),
    'identity_phi': dict(phi='identity'),
    'reset_at_eos': dict(position_reset_at_eos=True, k='pos'),
    'constant': dict(strategy='constant'),
    'constant_layer': dict(strategy='constant', granularity='layer'),
    'yarn': dict(strategy='yarn', yarn_train_len=16, yarn_context_len=64),
    'frequency': dict(strategy='frequency'),
    'pts': dict(strategy='pts', theta_init=1.5),
}


def configs(family='gpt2', tiny=True, **ssa_overrides):
  """(ModelConfig, SSAConfig) for a family preset, shrunk when tiny, with SSA overrides."""
  c = base.get_config(FAMILY_PRESETS[family])
  if tiny:
    for k, v in TINY.items():
      c.model[k] = v
    c.model.n_heads, c.model.n_kv_heads = TINY_HEADS[family]
  for k, v in ssa_overrides.items():
    c.ssa[k] = v
  return config_lib.model_config(c.model), config_lib.ssa_config(c.ssa)


def build(family='gpt2', seed=0, randomize_temperatures=True, seq_len=8, model_overrides=None,
          **ssa_overrides):
  """(model, variables) with temperature params randomised (so that every tau is non-trivial)."""
  mcfg, scfg = configs(family, **ssa_overrides)
  if model_overrides:
    mcfg = dataclasses.replace(mcfg, **model_overrides)
  model = model_lib.Transformer(mcfg, scfg)
  variables = dict(model_lib.init_params(model, jax.random.PRNGKey(seed), 1, seq_len))
  if randomize_temperatures:
    variables['params'] = randomize_temperature_params(variables['params'], seed + 1)
  if 'constants' in variables:  # frequency strategy: a non-trivial log-frequency table
    table = variables['constants']['token_log_freq']
    counts = np.random.RandomState(seed).zipf(1.5, size=table.shape[0]).astype(np.float64)
    variables['constants'] = {
        'token_log_freq': jnp.asarray(log_frequency_table(counts, table.shape[0]))}
  return model, variables


def randomize_temperature_params(params, seed):
  """Replace every temperature parameter by a random value of a safe range."""
  key = jax.random.PRNGKey(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(flat):
    if model_lib.is_temperature_path(path):
      name = str(path[-1].key)
      k = jax.random.fold_in(key, i)
      if name == 'theta':  # keep slopes of every parametrisation in a moderate range
        leaf = leaf + 0.3 * jax.random.normal(k, leaf.shape)
      elif name == 'c':
        leaf = 1.0 + 0.3 * jax.random.normal(k, leaf.shape)
      elif name == 'w':
        leaf = 0.3 * jax.random.normal(k, leaf.shape)
      else:  # u, a, b
        leaf = 0.5 * jax.random.normal(k, leaf.shape)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def tokens(B, T, seed=0):
  return jax.random.randint(jax.random.PRNGKey(seed), (B, T), 0, VOCAB)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@contextlib.contextmanager
def logit_scaling(enabled: bool = True):
  """Within this context, every Attention layer computes SSA by the spec's formula, scaling the
  T x T logits (attention.logit_scaled_attention), instead of pre-scaling q, k, v (Attention.mix):
  the verification path, kept out of the production call signatures."""
  def interceptor(next_fun, args, kwargs, context):
    if enabled and context.method_name == 'mix' and isinstance(context.module,
                                                                attention.Attention):
      if context.module.decode:
        raise ValueError('logit_scaling is a verification path without kv-cache decoding.')
      q, k, v, taus, segment_ids, _ = args
      return attention.logit_scaled_attention(q, k, v, taus, segment_ids)
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(interceptor):
    yield


def apply_with(logit_scaled: bool, apply_fn, *args, **kwargs):
  """apply_fn(*args, **kwargs) on the logit-scaling path (True) or the production path (False)."""
  with logit_scaling(logit_scaled):
    return apply_fn(*args, **kwargs)
