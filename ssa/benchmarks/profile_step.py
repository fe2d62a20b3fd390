r"""Where a GPT-2 train step's time goes, ours against the authors' PyTorch release, per component.

    python -m ssa.benchmarks.profile_step --preset=gpt2-124m --seq_len=1024 --batch=1 \
        --peers=../shared/reference_bench/peers [--strategy=ssa] [--reps=5]

Each component is timed on its own, forward + backward (a fixed random cotangent; gradients for
its parameters and its input), at the train step's shapes, median of --reps calls after a warm-up:

    embed       token + position embedding lookup                          x 1
    layernorm   one LayerNorm                                              x 2L + 1
    attention   one attention sublayer: qkv projection, causal attention   x L
                (ours: the configured backend, SSA temperatures if --strategy=ssa), out projection
    mlp         one MLP sublayer: up projection, GELU (tanh), down projection   x L
    head+loss   tied output head over the 50k vocabulary + cross-entropy   x 1
    optimizer   gradient clipping (norm 1.0) + AdamW update of every parameter   x 1
    nan guard   ours only (train.nan_guard): the optimizer update guarded as train_step does it
                (finite loss and gradient norm, the update under a lax.cond) minus the
                unguarded optimizer row; a difference of two medians, so it can be < 0   x 1
    full step   the real train step (ours: ssa/train_lib.py's jitted step; torch: the release's
                loop as ../shared/reference_bench/torch_bench.py runs it)  x 1

'sum' adds components x count; 'full step - sum' is what the components in isolation do not see
(residual adds, fusion across components, dispatch). Torch runs the release's own modules
(lit_gpt/gpt_2.py under --peers: Block.ln_1 / attn / mlp, transformer.wte / wpe, lm_head, fused
AdamW), 2 threads like the reference bench; without --peers only our side is timed. Prints one
JSON line per (framework, component), then the table.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

COMPONENTS = ('embed', 'layernorm', 'attention', 'mlp', 'head+loss', 'optimizer', 'nan guard',
              'full step')


def _median_s(fn, reps: int, warmup: int = 2) -> float:
  for _ in range(warmup):
    fn()
  ts = []
  for _ in range(reps):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def counts(n_layers: int) -> dict:
  return {'embed': 1, 'layernorm': 2 * n_layers + 1, 'attention': n_layers, 'mlp': n_layers,
          'head+loss': 1, 'optimizer': 1, 'nan guard': 1, 'full step': 1}


# ----------------------------------------------------------------------------------------- ours

def profile_ours(preset: str, strategy: str, seq_len: int, batch: int, reps: int,
                 sets=()) -> dict:
  """{component: median seconds per call} of this project's step (module docstring)."""
  import jax
  import jax.numpy as jnp
  import optax
  from flax.core import meta
  from ssa import model as model_lib
  from ssa import optim
  from ssa import train_lib
  from ssa.attention import Attention
  from ssa.benchmarks import train_step as bench

  from configs import base
  family = base.get_config(preset).model.family
  if family != 'gpt2':
    raise ValueError(f'--preset={preset}: the component profile covers the gpt2 family '
                     f'(the release is GPT-2); got family {family!r}.')
  r = bench.prepare(preset, strategy, seq_len, batch, 'float32', False, list(sets))
  c, s = r['config'], r['setup']
  cfg, scfg = s.model.cfg, s.model.ssa
  params = meta.unbox(jax.device_get(r['state'].params))
  B, T, D = batch, seq_len, cfg.d_model
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((B, T, D)).astype(np.float32))
  g = jnp.asarray(rng.standard_normal((B, T, D)).astype(np.float32))
  idx = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  seg = jnp.ones((B, T), jnp.int32)
  tok = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T)), jnp.int32)
  out: dict = {}

  def vjp_timer(f, p):
    """Median s of one jitted forward + backward of f(p, x) -> [B, T, D] (cotangent g)."""
    step = jax.jit(jax.grad(lambda p, x: jnp.vdot(f(p, x), g), argnums=(0, 1)))
    return _median_s(lambda: jax.block_until_ready(step(p, x)), reps)

  layer = params['layer_0']
  ln = model_lib._norm(cfg, 'ln1')  # pylint: disable=protected-access
  out['layernorm'] = vjp_timer(lambda p, x: ln.apply({'params': p}, x), layer['ln1'])
  attn = Attention(cfg, scfg)
  out['attention'] = vjp_timer(
      lambda p, x: attn.apply({'params': p}, x, idx, idx + 1, idx, seg), layer['attn'])
  mlp = model_lib.Mlp(cfg)
  out['mlp'] = vjp_timer(lambda p, x: mlp.apply({'params': p}, x), layer['mlp'])

  emb = {'e': params['embed']['embedding'], 'p': params['pos_embed']}
  emb_step = jax.jit(jax.grad(lambda e: jnp.vdot(
      jnp.take(e['e'], tok, axis=0) + jnp.take(e['p'], idx, axis=0), g)))
  out['embed'] = _median_s(lambda: jax.block_until_ready(emb_step(emb)), reps)

  targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (B, T)), jnp.int32)
  head = {'embed': {'embedding': params['embed']['embedding']}}
  chunked = B * T * cfg.padded_vocab_size > train_lib.LOSS_CHUNK_LOGITS

  def head_loss(p, x):
    if chunked:
      ce = train_lib._chunked_token_losses(x, p, targets, cfg)  # pylint: disable=protected-access
    else:
      ce = optax.softmax_cross_entropy_with_integer_labels(
          model_lib.head_logits(p, x, cfg), targets)
    return jnp.mean(ce)
  hl_step = jax.jit(jax.grad(head_loss, argnums=(0, 1)))
  out['head+loss'] = _median_s(lambda: jax.block_until_ready(hl_step(head, x)), reps)

  tx, _ = optim.make_optimizer(c, r['state'].params)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), r['state'].params)

  opt_step = jax.jit(functools.partial(train_lib.apply_update, tx), donate_argnums=(0, 1))
  copy = lambda t: jax.tree.map(jnp.copy, t)  # noqa: E731  (the optimizer step donates them)
  state = {'p': copy(r['state'].params), 'o': copy(r['state'].opt_state)}

  def run_opt():
    state['p'], state['o'] = opt_step(state['p'], state['o'], grads)
    jax.block_until_ready(state['p'])
  out['optimizer'] = _median_s(run_opt, reps)

  def guarded_update(params, opt_state, grads, finite):
    ok = finite & jnp.isfinite(optax.tree.norm(grads))  # as train_lib.train_step (the loss aside)
    return train_lib.update_if(ok, tx, params, opt_state, grads)
  guarded_step = jax.jit(guarded_update, donate_argnums=(0, 1))

  def run_guarded():
    state['p'], state['o'] = guarded_step(state['p'], state['o'], grads, jnp.ones((), bool))
    jax.block_until_ready(state['p'])
  out['nan guard'] = _median_s(run_guarded, reps) - out['optimizer']

  out['full step'] = _median_s(lambda: bench.time_step(r), reps, warmup=0)
  return {'components': out, 'n_layers': cfg.n_layers, 'strategy': strategy,
          'backend': c.ssa.backend}


# ---------------------------------------------------------------------------------------- torch

def profile_torch(peers: str, n_layers: int, n_heads: int, d_model: int, vocab: int,
                  seq_len: int, batch: int, reps: int, threads: int = 2) -> dict:
  """{component: median seconds per call} of the release's vanilla GPT-2 (lit_gpt/gpt_2.py)."""
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(threads)
  path = os.path.join(peers, 'sa', 'lit_gpt', 'gpt_2.py')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--peers={peers}: {path} is missing (the release\'s gpt_2.py).')
  spec = importlib.util.spec_from_file_location('release_gpt_2', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  torch.manual_seed(0)
  cfg = mod.GPTConfig(block_size=seq_len, vocab_size=vocab, n_layer=n_layers, n_head=n_heads,
                      n_embd=d_model, dropout=0.0, bias=True)
  stdout, sys.stdout = sys.stdout, sys.stderr  # GPT() prints its parameter count
  try:
    model = mod.GPT(cfg)
  finally:
    sys.stdout = stdout
  model.train()
  B, T, D = batch, seq_len, d_model
  gen = torch.Generator().manual_seed(0)
  x0 = torch.randn(B, T, D, generator=gen)
  g = torch.randn(B, T, D, generator=gen)
  tok = torch.randint(0, min(vocab, 50257), (B, T + 1), generator=gen)
  inp, tgt = tok[:, :-1].contiguous(), tok[:, 1:].contiguous()
  out: dict = {}

  def vjp_timer(module_fn, params):
    def run():
      x = x0.clone().requires_grad_(True)
      for p in params:
        p.grad = None
      module_fn(x).backward(g)
    return _median_s(run, reps)

  blk = model.transformer.h[0]
  out['layernorm'] = vjp_timer(blk.ln_1, list(blk.ln_1.parameters()))
  out['attention'] = vjp_timer(blk.attn, list(blk.attn.parameters()))
  out['mlp'] = vjp_timer(blk.mlp, list(blk.mlp.parameters()))
  wte, wpe = model.transformer.wte, model.transformer.wpe
  pos = torch.arange(T)

  def emb():
    wte.weight.grad = None
    wpe.weight.grad = None
    (wte(inp) + wpe(pos)).backward(g)
  out['embed'] = _median_s(emb, reps)

  def head():
    x = x0.clone().requires_grad_(True)
    model.lm_head.weight.grad = None
    logits = model.lm_head(x)
    F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-1).backward()
  out['head+loss'] = _median_s(head, reps)

  opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, betas=(0.9, 0.95),
                          foreach=False, fused=True)
  for p in model.parameters():
    p.grad = torch.full_like(p, 1e-3)

  def optimizer():
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
  out['optimizer'] = _median_s(optimizer, reps)

  def step():
    logits = model(inp)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
  out['full step'] = _median_s(step, reps)
  return {'components': out, 'n_layers': n_layers, 'torch': torch.__version__,
          'threads': torch.get_num_threads(), 'source_file': path}


# ----------------------------------------------------------------------------------------- table

def table(results: dict, n_layers: int) -> str:
  """Markdown: per component, ms per call and ms x count for each framework, ours / torch."""
  n = counts(n_layers)
  names = list(results)
  head = '| component | x | ' + ' | '.join(f'{k} ms/call | {k} ms total' for k in names)
  if len(names) == 2:
    head += f' | {names[0]} / {names[1]}'
  lines = [head + ' |', '|---' * (2 + 2 * len(names) + (len(names) == 2)) + '|']
  sums = {k: 0.0 for k in names}
  for comp in COMPONENTS:
    row, tot = [f'| {comp} | {n[comp]}'], {}
    for k in names:
      v = results[k]['components'].get(comp)
      if v is None:
        row.append(' | - | -')
        continue
      tot[k] = v * n[comp]
      if comp != 'full step':
        sums[k] += tot[k]
      row.append(f' | {v * 1e3:.1f} | {tot[k] * 1e3:.0f}')
    if len(names) == 2:
      a, b = (tot.get(k) for k in names)
      row.append(f' | {a / b:.2f}' if a is not None and b else ' | -')
    lines.append(''.join(row) + ' |')
  for label, val in (('sum of components', lambda k: sums[k]),
                     ('full step - sum', lambda k: results[k]['components']['full step'] - sums[k])):
    row = [f'| {label} | ']
    vals = {k: val(k) for k in names}
    for k in names:
      row.append(f' | | {vals[k] * 1e3:.0f}')
    if len(names) == 2:
      a, b = (vals[k] for k in names)
      row.append(f' | {a / b:.2f}' if label == 'sum of components' and b else ' | ')
    lines.append(''.join(row) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--preset', default='gpt2-124m')
  p.add_argument('--strategy', default='vanilla', help='ours: vanilla or ssa (any ssa.strategy)')
  p.add_argument('--seq_len', type=int, default=1024)
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--peers', default=None,
                 help="folder holding sa/lit_gpt/gpt_2.py (the release); omit to time ours only")
  p.add_argument('--torch_first', action='store_true', help='time torch before ours')
  p.add_argument('--set', action='append', default=[], help='config override key=value (ours)')
  a = p.parse_args(argv)
  if a.reps < 1 or a.seq_len < 1 or a.batch < 1:
    p.error('--reps, --seq_len and --batch must be >= 1.')
  from configs import base
  c = base.get_config(a.preset)
  L, H, D = c.model.n_layers, c.model.n_heads, c.model.d_model
  m = c.model.vocab_pad_multiple
  vocab = -(-c.model.vocab_size // m) * m  # the table's rows (ModelConfig.padded_vocab_size)
  order = ['torch', 'ours'] if a.torch_first else ['ours', 'torch']
  results = {}
  for who in order:
    if who == 'torch' and a.peers is None:
      continue
    t0 = time.time()
    if who == 'ours':
      r = profile_ours(a.preset, a.strategy, a.seq_len, a.batch, a.reps, a.set)
      name = f'ours ({a.strategy})'
    else:
      r = profile_torch(a.peers, L, H, D, vocab, a.seq_len, a.batch, a.reps)
      name = 'torch (release vanilla)'
    results[name] = r
    for comp, v in r['components'].items():
      print(json.dumps({'framework': name, 'component': comp, 'seconds': v,
                        'count': counts(L)[comp], 'preset': a.preset, 'seq_len': a.seq_len,
                        'batch': a.batch}), flush=True)
    print(f'{name}: profiled in {time.time() - t0:.0f} s', file=sys.stderr, flush=True)
  print(table({k: results[k] for k in sorted(results, key=lambda k: not k.startswith('ours'))},
              L))
  return 0


if __name__ == '__main__':
  from ssa import hostmem
  hostmem.reexec_with_tuned_malloc()  # as train.py and the train-step benchmark (ssa/hostmem.py)
  sys.exit(main())
