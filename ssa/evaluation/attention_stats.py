"""Attention statistics from the reference backend's probabilities (only for the batches plotted).

    probs, taus = capture(model, variables, tokens_BT)      # per layer [B, H, T, S], tau [B, T, H]

dilution_curves(probs_BHTS)       each query row sorted in descending order, averaged over batch and
                                  heads: [T, S]; row t has t+1 valid (causal) entries, which sum to
                                  1, the rest are 0. Later rows flatter = diluted attention.
entropy_by_position(probs_BHTS)   -sum_s p log p of each row, averaged over batch and heads: [T]
                                  (bounded by log(t+1)).
temperature_by_position(tau_BTH)  learned temperature averaged over batch and heads: [T].
mixing_weights(probs, tau_v_BSH)  the effective mixing weights p_j * tau_v,j renormalised over j
                                  (what a value-temperature model actually averages): [B,H,T,S].
entropy_slope(entropy_T)          least-squares slope of entropy against log n over n = 2..T
                                  (uniform attention: 1; attention that ignores length: 0).
token_temperatures(tau_BTH)       per token of sequence 0, averaged over heads: [T] (Figure 1).
                                  Figure 1 shows layer_<eval.fig1_layer>'s tau_q (the layer must
                                  have one) or, for -1, the mean over the layers that have tau_q.

attention_figures(config, loaded, tok, texts, max_len, output_dir) writes attention_stats.json
(the numbers of eval.attention_num_seqs rows of `texts`, or of the first eval batch of a synthetic
dataset; Figure 1 from eval.attention_text when given) and, with eval.figures, the dilution /
entropy / temperature / Figure-1 figures (eval.compare_workdir's run drawn beside ours).
Evaluation unit (common.Unit): UNIT [eval.attention_stats], on the documents of the first split.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ssa import data as data_lib  # called as data_lib.make_eval_iterator (tests patch ssa.data)
from ssa import plots
from ssa.config_lib import ConfigError
from ssa.evaluation.common import EvalContext


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


def mixing_weights(probs_BHTS: np.ndarray, tau_v_BSH: np.ndarray) -> np.ndarray:
  """[B,H,T,S]: p_ts * tau_v,s renormalised over s (rows with no mass stay 0)."""
  p = np.asarray(probs_BHTS, np.float64)
  w = p * np.transpose(np.asarray(tau_v_BSH, np.float64), (0, 2, 1))[:, :, None, :]
  total = w.sum(-1, keepdims=True)
  return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def entropy_slope(entropy_T, first: int = 2) -> float:
  """Least-squares slope of entropy[n-1] against log n over positions n = first..T."""
  e = np.asarray(entropy_T, np.float64)
  n = np.arange(1, len(e) + 1)
  keep = n >= first
  if keep.sum() < 2:
    raise ValueError(f'entropy_slope: {len(e)} positions; expected at least {first + 1}.')
  x = np.log(n[keep])
  return float(np.polyfit(x, e[keep], 1)[0])


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


# ----------------------------------------------------------------------------- evaluation unit


def _attention_rows(tok, texts, n_rows, T):
  ids: list[int] = []
  for t in texts:
    ids += tok.encode(t) + [tok.eos_id]
    if len(ids) >= n_rows * T:
      break
  n = min(n_rows, len(ids) // T)
  if n == 0:
    raise ValueError(f'attention statistics: the documents hold fewer than {T} tokens.')
  return np.asarray(ids[:n * T], np.int32).reshape(n, T)


def _fig1_ids(e, tok, max_len):
  """Tokens of eval.attention_text (None: Figure 1 shows the first attention row)."""
  if e.attention_text is None:
    return None
  ids = tok.encode(e.attention_text)[:max_len]
  if not ids:
    raise ConfigError(f'eval.attention_text={e.attention_text!r} encodes to no tokens; give a '
                      'non-empty text, or None for the first attention row.')
  return ids


def _input_rows(config, tok, texts, max_len):
  e = config.eval
  if texts is None:  # synthetic task: the first eval batch
    it, _ = data_lib.make_eval_iterator(config, 0, 1, split=config.data.eval_split, num_batches=1)
    return np.asarray(next(iter(it))['inputs'][:e.attention_num_seqs], np.int32)
  return _attention_rows(tok, texts, e.attention_num_seqs, max_len)


def run_statistics(config, loaded, tok, texts, max_len) -> dict:
  """The numbers of attention_stats.json (see the module docstring); 'run' = ssa.strategy."""
  e = config.eval
  fig1_ids = _fig1_ids(e, tok, max_len)
  rows = _input_rows(config, tok, texts, max_len)
  fig1 = None
  if fig1_ids is not None:
    fig1 = attention_statistics(loaded.model, loaded.variables, np.asarray([fig1_ids], np.int32),
                                tok, e.fig1_layer)
  stats = attention_statistics(loaded.model, loaded.variables, rows, tok, e.fig1_layer)
  if fig1 is not None and 'token_temperature' in fig1:
    stats['token_temperature'] = fig1['token_temperature']
  stats['run'] = config.ssa.strategy
  stats['source'] = f'{loaded.directory} (step {loaded.step})'
  stats['num_rows'] = int(len(rows))
  return stats


def _with_compared(e, stats) -> tuple[dict, dict]:
  """({run: dilution}, {run: entropy}), eval.compare_workdir's run first when given."""
  name = stats['run']
  dil, ent = {name: stats['dilution']}, {name: stats['entropy']}
  if not e.compare_workdir:
    return dil, ent
  other = os.path.join(os.path.expanduser(e.compare_workdir), 'attention_stats.json')
  if not os.path.isfile(other):
    raise FileNotFoundError(f'eval.compare_workdir: {other} does not exist (run eval.py on that '
                            'run first; compare_workdir is its output_dir).')
  with open(other) as f:
    o = json.load(f)
  oname = o.get('run', 'other')
  oname = oname if oname != name else f'{oname} (compare)'
  return {oname: o['dilution'], **dil}, {oname: o['entropy'], **ent}


def _figures(config, stats, fig_dir) -> list[str]:
  dil, ent = _with_compared(config.eval, stats)
  caption = (f"Sorted attention rows averaged over {stats['num_rows']} sequence(s) and the heads; "
             f"{stats['run']}: {stats['source']}"
             + (f'; compared with {config.eval.compare_workdir}' if config.eval.compare_workdir
                else '') + '.')
  paths = [plots.dilution_figure(dil, os.path.join(fig_dir, 'dilution.png'), caption=caption),
           plots.entropy_figure(ent, os.path.join(fig_dir, 'entropy.png'))]
  if any(stats['temperature'].values()):
    paths.append(plots.temperature_figure(stats['temperature'],
                                          os.path.join(fig_dir, 'temperature.png')))
  tt = stats.get('token_temperature')
  if tt:
    title = f'tau_q ({tt["layer"]}), {config.model.preset} {stats["run"]}'
    paths.append(plots.token_temperature_html(tt['pieces'], tt['tau_q'],
                                              os.path.join(fig_dir, 'token_temperature.html'),
                                              title))
    paths.append(plots.token_temperature_png(tt['pieces'], tt['tau_q'],
                                             os.path.join(fig_dir, 'token_temperature.png'),
                                             title))
  return paths


def attention_figures(config, loaded, tok, texts, max_len, output_dir) -> list[str]:
  """attention_stats.json + dilution / entropy / temperature / Figure-1 figures (their paths)."""
  stats = run_statistics(config, loaded, tok, texts, max_len)
  with open(os.path.join(output_dir, 'attention_stats.json'), 'w') as f:
    json.dump(stats, f)
  if not config.eval.figures:
    return []
  return _figures(config, stats, os.path.join(output_dir, 'figures'))


class AttentionStats:
  """eval.attention_stats: attention_stats.json and the attention figures (results['figures'])."""
  name = 'attention_stats'

  def enabled(self, config) -> bool:
    return bool(config.eval.attention_stats)

  def run(self, ctx: EvalContext) -> None:
    ctx.results['figures'] += attention_figures(ctx.config, ctx.loaded, ctx.tok,
                                                ctx.texts(ctx.splits[0]), ctx.lm.max_len,
                                                ctx.output_dir)


UNIT = AttentionStats()
