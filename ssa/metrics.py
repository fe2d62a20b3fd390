"""Training metrics: analytic FLOPs / MFU, and the writers (progress, metrics.jsonl, TensorBoard).

FLOPs per trained token (forward + backward = 3 x forward, PaLM appendix B convention):

    6 * N_matmul  +  12 * L * H * d_h * T

N_matmul counts the weights used in matrix multiplies: all parameters except the embedding and
position tables, plus the output head (vocab x D, tied or not). The second term is attention
(q.k^T and probs.v: 2 * 2 * T * d_h per head per token forward, over the full T x T square as is
customary, causal masking not discounted). SSA adds per-token temperatures: O(D) per token and
head, included in N_matmul through its parameters (u, tau_w); the element-wise scaling is ignored.
With optim.mode='temperature_only' the frozen weights get no gradient: 4 * N_matmul + attention.
Rematerialisation is NOT counted (MFU counts model FLOPs, not hardware FLOPs).

Peak FLOP/s per device comes from config.train.peak_flops_per_device, else a table of device kinds
(bf16 dense), else, on CPU, a measured float32 matmul throughput of this process (labelled as
such: CPU "MFU" is relative to what XLA's matmul reaches on this machine, not a datasheet).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

METRICS_FILE = 'metrics.jsonl'

# bf16 dense peak FLOP/s per chip (public datasheets).
PEAK_FLOPS = {
    'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12, 'TPU v5p': 459e12,
    'TPU v5': 459e12, 'TPU v6 lite': 918e12, 'TPU v6e': 918e12, 'TPU v3': 123e12,
    'NVIDIA H100': 989e12, 'NVIDIA H200': 989e12, 'NVIDIA A100': 312e12, 'NVIDIA L4': 121e12,
}


def flops_per_token(mcfg, param_count: int, seq_len: int, weight_grads: bool = True) -> float:
  """Training FLOPs per token (module docstring). param_count = all parameters of the model.
  weight_grads=False (optim.mode='temperature_only': the frozen weights get no gradient): the
  backward pass computes activation gradients only, 4N instead of 6N."""
  vd = mcfg.padded_vocab_size * mcfg.d_model
  n = param_count - vd  # the input embedding is a lookup, not a matmul
  if mcfg.pos_emb == 'learned':
    n -= mcfg.max_len * mcfg.d_model
  if mcfg.tie_embeddings:
    n += vd  # the tied output head is a matmul with the embedding table (untied: in param_count)
  attn = 12 * mcfg.n_layers * mcfg.n_heads * mcfg.head_dim * seq_len
  return (6.0 if weight_grads else 4.0) * n + attn


_MEASURED: dict[str, float] = {}


def measured_matmul_flops(n: int = 1024, reps: int = 5) -> float:
  """float32 matmul FLOP/s this process reaches on its first device (cached)."""
  if 'cpu' in _MEASURED:
    return _MEASURED['cpu']
  dev = jax.local_devices()[0]
  a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  _MEASURED['cpu'] = 2 * n**3 * reps / (time.perf_counter() - t0)
  return _MEASURED['cpu']


def peak_flops(config_value=None) -> tuple[float, str]:
  """(peak FLOP/s of the whole job, how it was obtained)."""
  n = jax.device_count()
  if config_value:
    return float(config_value) * n, 'config.train.peak_flops_per_device'
  kind = jax.devices()[0].device_kind
  for name, f in PEAK_FLOPS.items():
    if kind.startswith(name):
      return f * n, f'datasheet ({kind})'
  if jax.default_backend() == 'cpu':
    # Simulated CPU devices share the same cores: the process's measured matmul rate is the peak.
    return measured_matmul_flops() * jax.process_count(), 'measured f32 matmul on this CPU'
  return float('nan'), f'unknown device kind {kind!r}: set train.peak_flops_per_device'


class MetricWriter:
  """metrics.jsonl + TensorBoard (tensorboardX) + progress output, on process 0 only."""

  def __init__(self, workdir: str, *, tensorboard: bool, progress_bar: bool, total: int,
               initial: int):
    self.active = jax.process_index() == 0
    self._jsonl = self._tb = self._bar = None
    self._hparams: dict[str, Any] = {}
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), 'a')
    if tensorboard:
      # heavy import (~2 s on top of jax) that only a writer with tensorboard=True needs
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tb'))
    if progress_bar and sys.stderr.isatty():
      self._bar = tqdm(total=total, initial=initial, dynamic_ncols=True, desc='train')
    self._last = initial

  def write(self, step: int, scalars: dict[str, Any], kind: str = 'train'):
    if not self.active:
      return
    rec = {'step': int(step), 'kind': kind}
    rec.update({k: _py(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(rec) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in rec.items():
        if k not in ('step', 'kind') and isinstance(v, (int, float)) and np.isfinite(v):
          self._tb.add_scalar(f'{kind}/{k}', v, step)
      self._tb.flush()
    self._progress(step, rec, kind)

  def _progress(self, step, rec, kind):
    if kind == 'train':
      short = {'loss': f"{rec.get('loss', float('nan')):.4f}",
               'lr': f"{rec.get('lr', float('nan')):.2e}",
               'tok/s': f"{rec.get('tokens_per_s', float('nan')):,.0f}",
               'mfu': f"{100 * rec.get('mfu', float('nan')):.1f}%"}
    else:
      short = {k: f'{v:.4f}' for k, v in rec.items() if isinstance(v, float)}
    if self._bar is not None:
      self._bar.update(step - self._last)
      self._last = step
      if kind == 'train':
        self._bar.set_postfix(short, refresh=True)
      else:
        self._bar.write(f'[{kind} step {step}] ' + ' '.join(f'{k}={v}' for k, v in short.items()))
    else:
      print(f'[{kind} step {step}] ' + ' '.join(f'{k}={v}' for k, v in short.items()),
            file=sys.stderr, flush=True)

  def log_config(self, config) -> None:
    """TensorBoard: the run's config as text (JSON, tag 'config'); its flat fields are kept for
    the hparams record that close() writes with the final metrics."""
    self._hparams = flat_hparams(config)
    if self.active and self._tb is not None:
      text = json.dumps(config.to_dict() if hasattr(config, 'to_dict') else dict(config),
                        indent=1, sort_keys=True, default=str)
      # TensorBoard renders text as markdown: four leading spaces keep the JSON verbatim
      self._tb.add_text('config', '\n'.join('    ' + line for line in text.splitlines()), 0)
      self._tb.flush()

  def message(self, text: str):
    if not self.active:
      return
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, file=sys.stderr, flush=True)

  def close(self, final: dict[str, float] | None = None, step: int | None = None):
    """final: the run's final metrics ({'hparam/train_loss': ...}); with TensorBoard on they are
    written with the config fields as an hparams record (sub-run 'hparams', HPARAMS tab)."""
    if not self.active:
      return
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      finite = {k: float(v) for k, v in (final or {}).items()
                if v is not None and np.isfinite(v)}
      if finite and self._hparams:
        self._tb.add_hparams(self._hparams, finite, name='hparams', global_step=step)
      self._tb.close()
    self._jsonl.close()


def flat_hparams(config) -> dict[str, Any]:
  """The config as {'section.field': bool | int | float | str} (None and sequences as text):
  what TensorBoard's hparams record accepts."""
  tree = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  out: dict[str, Any] = {}

  def walk(prefix, node):
    for k, v in node.items():
      key = f'{prefix}{k}'
      if isinstance(v, dict):
        walk(key + '.', v)
      elif isinstance(v, (bool, int, float, str)):
        out[key] = v
      else:
        out[key] = str(v)
  walk('', tree)
  return out


def _py(v):
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


def read_metrics(workdir: str) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl in file order ([] when it does not exist); blank lines
  and a last line cut by a kill are skipped."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # a line cut by a kill
  return out
