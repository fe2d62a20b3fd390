"""Attention statistics from the reference backend's probabilities (only for the batches plotted).

    probs, taus = capture(model, variables, tokens_BT)      # per layer [B, H, T, S], tau [B, T, H]

dilution_curves(probs_BHTS)       each query row sorted in descending order, averaged over batch and
                                  heads: [T, S]; row t has t+1 valid (causal) entries, which sum to
                                  1, the rest are 0. Later rows flatter = diluted attention.
entropy_by_position(probs_BHTS)   -sum_s p log p of each row, averaged over batch and heads: [T]
                                  (bounded by log(t+1)).
temperature_by_position(tau_BTH)  learned temperature averaged over batch and heads: [T].
token_temperatures(tau_BTH)       per token of sequence 0, averaged over heads: [T] (Figure 1).
                                  Figure 1 shows layer_<eval.fig1_layer>'s tau_q (the layer must
                                  have one) or, for -1, the mean over the layers that have tau_q.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def capture(model, variables, tokens_BT, positions=None, segment_ids=None):
  """({layer: probs [B,H,T,S]}, {layer: {'q'|'k'|'v': tau [B,T,H]}}) as numpy, layers 'layer_i'."""
  fn = jax.jit(lambda v, t, p, s: model.apply(v, t, p, s, capture=True,
                                               mutable=['intermediates'])[1])
  inter = jax.device_get(fn(variables, jnp.asarray(tokens_BT), positions, segment_ids))
  inter = inter['intermediates']
  probs, taus = {}, {}
  for layer in sorted((k for k in inter if k.startswith('layer_')), key=lambda k: int(k[6:])):
    attn = inter[layer].get('attn', {})
    if 'attention_probs' in attn:
      probs[layer] = np.asarray(attn['attention_probs'][0], np.float32)
    taus[layer] = {name[len('temperature_'):]: np.asarray(v[0], np.float32)
                   for name, v in attn.items() if name.startswith('temperature_')}
  return probs, taus


def dilution_curves(probs_BHTS: np.ndarray) -> np.ndarray:
  """[T, S]: each row sorted descending, averaged over batch and heads."""
  sorted_BHTS = -np.sort(-np.asarray(probs_BHTS, np.float64), axis=-1)
  return sorted_BHTS.mean(axis=(0, 1))


def entropy_by_position(probs_BHTS: np.ndarray) -> np.ndarray:
  p = np.asarray(probs_BHTS, np.float64)
  ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
  return ent.mean(axis=(0, 1))


def temperature_by_position(tau_BTH: np.ndarray) -> np.ndarray:
  return np.asarray(tau_BTH, np.float64).mean(axis=(0, 2))


def token_temperatures(tau_BTH: np.ndarray, row: int = 0) -> np.ndarray:
  return np.asarray(tau_BTH, np.float64)[row].mean(axis=-1)


def top_mass(curves_TS: np.ndarray, k: int = 1) -> np.ndarray:
  """[T]: attention mass of the k largest entries of each (sorted, averaged) row."""
  return curves_TS[:, :k].sum(-1)


def attention_statistics(model, variables, tokens_BT, tokenizer=None, fig1_layer: int = -1) -> dict:
  """All numbers behind the attention figures, JSON-ready (lists)."""
  if np.ndim(tokens_BT) != 2 or 0 in np.shape(tokens_BT):
    raise ValueError(f'attention_statistics: tokens of shape {np.shape(tokens_BT)}; expected '
                     '[batch >= 1, length >= 1] (an empty eval.attention_text?).')
  probs, taus = capture(model, variables, tokens_BT)
  out: dict[str, Any] = {'layers': list(probs), 'seq_len': int(np.shape(tokens_BT)[1]),
                         'batch': int(np.shape(tokens_BT)[0]),
                         'dilution': {}, 'entropy': {}, 'top1_mass': {}, 'temperature': {}}
  for layer, p in probs.items():
    curves = dilution_curves(p)
    out['dilution'][layer] = curves.tolist()
    out['entropy'][layer] = entropy_by_position(p).tolist()
    out['top1_mass'][layer] = top_mass(curves).tolist()
  for layer, tt in taus.items():
    out['temperature'][layer] = {e: temperature_by_position(t).tolist() for e, t in tt.items()}
  # Figure 1: per-token query temperature of sequence 0 (one layer, or the mean over layers).
  q = {layer: tt['q'] for layer, tt in taus.items() if 'q' in tt}
  layer_name = fig1_layer_name(fig1_layer, list(taus), list(q))
  if q:
    vals = (np.mean([token_temperatures(t) for t in q.values()], axis=0) if layer_name == 'mean'
            else token_temperatures(q[layer_name]))
    toks = [int(t) for t in np.asarray(tokens_BT)[0]]
    out['token_temperature'] = {
        'layer': layer_name,
        'tokens': toks, 'pieces': [tokenizer.decode([t]) for t in toks] if tokenizer else None,
        'tau_q': vals.tolist()}
  return out


def fig1_layer_name(fig1_layer: int, layers, q_layers) -> str:
  """'mean' (fig1_layer = -1) or 'layer_<fig1_layer>'; the layer must exist and have tau_q (when
  any layer has one). Errors name eval.fig1_layer."""
  if fig1_layer == -1:
    return 'mean'
  n = len(layers)
  if isinstance(fig1_layer, bool) or not isinstance(fig1_layer, (int, np.integer)) or not (
      0 <= fig1_layer < n):
    raise ValueError(f'eval.fig1_layer={fig1_layer!r} is out of range: the model has {n} layers '
                     f'(0..{n - 1}); -1 = the mean over layers.')
  name = f'layer_{int(fig1_layer)}'
  if q_layers and name not in q_layers:
    raise ValueError(f'eval.fig1_layer={fig1_layer}: {name} has no query temperature (tau_q); '
                     f'layers with tau_q: {list(q_layers)} (or -1 = their mean).')
  return name
