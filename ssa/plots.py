"""Figures (matplotlib, Agg backend, PNG) drawn from the JSON numbers of ssa/evaluation.

Every function takes plain numbers (lists / arrays, the same that eval_results.json and
attention_stats.json hold) and a path, and returns the path written:

  dilution_figure       sorted attention rows per query position, one panel per layer, one column
                        per run (vanilla vs SSA side by side)
  entropy_figure        attention entropy vs query position, one curve per layer (and run)
  temperature_figure    learned temperature vs position, one curve per layer and embedding
  passkey_heatmap       accuracy over context length x key depth
  token_temperature_png / token_temperature_html   Figure 1: text coloured by its query temperature
"""

from __future__ import annotations

import html
import os
from typing import Sequence

import numpy as np


def _plt():
  # heavy import (~1 s) that only drawing needs; the Agg backend must be chosen before pyplot
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  _plt().close(fig)
  return path


def dilution_figure(runs: dict[str, dict[str, Sequence]], path: str, max_rank: int = 32,
                    num_positions: int = 6, caption: str = '') -> str:
  """runs: {run name: {layer: curves [T][S]}}. Rows = layers, columns = runs. caption: a line
  under the figure saying what is averaged and which runs it shows."""
  plt = _plt()
  names = list(runs)
  layers = list(next(iter(runs.values())))
  fig, axes = plt.subplots(len(layers), len(names), figsize=(4.2 * len(names), 3 * len(layers)),
                           squeeze=False, sharey='row')
  for c, name in enumerate(names):
    for r, layer in enumerate(layers):
      ax = axes[r][c]
      curves = np.asarray(runs[name].get(layer, []))
      if curves.size == 0:
        ax.set_visible(False)
        continue
      T = curves.shape[0]
      ts = np.unique(np.linspace(0, T - 1, num_positions).round().astype(int))
      cmap = plt.get_cmap('viridis')
      for i, t in enumerate(ts):
        k = min(t + 1, max_rank)
        ax.plot(np.arange(1, k + 1), curves[t, :k], color=cmap(i / max(len(ts) - 1, 1)),
                label=f't={t + 1}')
      ax.set_yscale('log')
      ax.set_title(f'{name} — {layer}')
      ax.set_xlabel('rank (sorted)')
      if c == 0:
        ax.set_ylabel('attention prob.')
      ax.legend(fontsize=7)
  if caption:
    fig.tight_layout(rect=(0, 0.06 / len(layers), 1, 1))
    fig.text(0.5, 0.005, caption, ha='center', va='bottom', fontsize=8, wrap=True)
  return _save(fig, path)


def entropy_figure(runs: dict[str, dict[str, Sequence]], path: str) -> str:
  """runs: {run: {layer: entropy [T]}}; also draws log(t) (uniform attention)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  T = 1
  styles = ['-', '--', ':', '-.']
  for i, (name, layers) in enumerate(runs.items()):
    for layer, ent in layers.items():
      ent = np.asarray(ent)
      T = max(T, len(ent))
      ax.plot(np.arange(1, len(ent) + 1), ent, styles[i % 4], label=f'{name} {layer}')
  ax.plot(np.arange(1, T + 1), np.log(np.arange(1, T + 1)), 'k', alpha=0.3, label='uniform')
  ax.set_xlabel('query position t')
  ax.set_ylabel('attention entropy (nats)')
  ax.legend(fontsize=7)
  return _save(fig, path)


def temperature_figure(temps: dict[str, dict[str, Sequence]], path: str) -> str:
  """temps: {layer: {'q'|'k'|'v': tau [T]}}."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for layer, d in temps.items():
    for e, tau in d.items():
      ax.plot(np.arange(1, len(tau) + 1), tau, label=f'{layer} tau_{e}')
  ax.set_xlabel('position n')
  ax.set_ylabel('mean learned temperature')
  ax.legend(fontsize=7)
  return _save(fig, path)


# Colour-blind-safe sequential map for accuracies (perceptually uniform, readable in greyscale).
ACCURACY_CMAP = 'cividis'


def accuracy_grid(ax, acc_LD, lengths: Sequence[int], depths: Sequence[float], fontsize: int = 8):
  """Draws accuracies [lengths][depths] in [0, 1] on `ax` (cividis, each cell labelled in a
  colour that contrasts with it); returns the image for a colour bar."""
  acc = np.asarray(acc_LD, dtype=float)
  im = ax.imshow(acc.T, vmin=0, vmax=1, cmap=ACCURACY_CMAP, aspect='auto', origin='lower')
  ax.set_xticks(range(len(lengths)), [str(t) for t in lengths])
  ax.set_yticks(range(len(depths)), [f'{d:.2f}' for d in depths])
  for i in range(acc.shape[0]):
    for j in range(acc.shape[1]):
      ax.text(i, j, f'{acc[i, j]:.2f}', ha='center', va='center', fontsize=fontsize,
              color='black' if acc[i, j] >= 0.5 else 'white')
  return im


def passkey_heatmap(result: dict, path: str, title: str = 'passkey retrieval') -> str:
  plt = _plt()
  acc = np.asarray(result['accuracy'])
  fig, ax = plt.subplots(figsize=(1.1 * len(result['lengths']) + 2, 0.5 * len(result['depths']) + 2))
  im = accuracy_grid(ax, acc, result['lengths'], result['depths'])
  ax.set_xlabel('context length (tokens)')
  ax.set_ylabel('key depth')
  ax.set_title(f'{title} (mean {acc.mean():.3f})')
  fig.colorbar(im, ax=ax, label='accuracy')
  return _save(fig, path)


def _colour(v: float, lo: float, hi: float) -> tuple[float, float, float]:
  x = 0.5 if hi <= lo else (v - lo) / (hi - lo)
  return (1.0, 1.0 - 0.75 * x, 1.0 - 0.9 * x)  # white -> orange-red


def token_temperature_html(pieces: Sequence[str], values: Sequence[float], path: str,
                           title: str = 'query temperature') -> str:
  """Figure 1 as HTML: each token on a background coloured by its temperature (tooltip = value)."""
  lo, hi = float(np.min(values)), float(np.max(values))
  spans = []
  for p, v in zip(pieces, values):
    r, g, b = (int(255 * c) for c in _colour(v, lo, hi))
    spans.append(f'<span style="background: rgb({r},{g},{b})" title="{v:.4f}">'
                 f'{html.escape(p)}</span>')
  doc = (f'<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>'
         f'<p>{html.escape(title)}: {lo:.4f} (white) … {hi:.4f} (red)</p>'
         f'<pre style="white-space: pre-wrap; font-size: 14px">{"".join(spans)}</pre>')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(doc)
  return path


def token_temperature_png(pieces: Sequence[str], values: Sequence[float], path: str,
                          title: str = 'query temperature', width: int = 60) -> str:
  """Figure 1 as PNG: the text wrapped at `width` characters, token backgrounds by temperature."""
  plt = _plt()
  lo, hi = float(np.min(values)), float(np.max(values))
  lines, line, col = [], [], 0
  for p, v in zip(pieces, values):
    for j, part in enumerate(p.split('\n')):
      if j > 0 or col + len(part) > width:
        lines.append(line)
        line, col = [], 0
      if part:
        line.append((part, v, col))
        col += len(part)
  lines.append(line)
  fig, ax = plt.subplots(figsize=(width * 0.13 + 1, 0.32 * len(lines) + 1))
  ax.set_xlim(0, width)
  ax.set_ylim(len(lines), -1)
  ax.axis('off')
  for i, ln in enumerate(lines):
    for part, v, c in ln:
      ax.text(c, i, part, family='monospace', fontsize=9, va='center', parse_math=False,
              bbox=dict(boxstyle='square,pad=0.05', fc=_colour(v, lo, hi), ec='none'))
  ax.set_title(title, fontsize=9)
  from matplotlib.cm import ScalarMappable  # pylint: disable=g-import-not-at-top
  from matplotlib.colors import ListedColormap, Normalize  # pylint: disable=g-import-not-at-top
  cmap = ListedColormap([_colour(x, 0.0, 1.0) for x in np.linspace(0.0, 1.0, 256)])
  fig.colorbar(ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1e-6), cmap), ax=ax,
               orientation='horizontal', fraction=0.3, shrink=0.6, pad=0.02, aspect=60,
               label='temperature (token background)')
  return _save(fig, path)
