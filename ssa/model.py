"""Decoder-only Transformer families with SSA attention: GPT-2, GPT-NeoX/Pythia, Llama.

One module, switched by ModelConfig (presets in configs/presets.py):

    family  norm       positions           MLP            residual    bias  head
    gpt2    LayerNorm  learned table       GELU (tanh)    sequential  yes   tied
    neox    LayerNorm  partial rotary      GELU (erf)     parallel    yes   untied
    llama   RMSNorm    rotary              SwiGLU         sequential  no    tied or untied; GQA

    logits_BTV = Transformer(model_cfg, ssa_cfg).apply(variables, tokens_BT,
                                                       positions=None, segment_ids=None)

Positions: `index` is the token's absolute 0-based slot in its sequence (arange(T), or the kv-cache
position when decoding); `positions` (default: index) feed the positional embedding; the SSA
position terms use n = index + 1, or the 1-based position inside the packed document (derived from
segment_ids) when ssa.position_reset_at_eos.

Variables: 'params' (logically partitioned: axes 'vocab', 'embed', 'heads', 'kv_heads',
'head_dim', 'mlp'); 'constants' (only for strategies with a token table, ssa/strategies.py: e.g.
'frequency''s token log-frequencies); 'cache' (kv-cache, decode=True); 'intermediates' (sown temperatures / probabilities).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssa import strategies
from ssa.attention import TEMPERATURE_PREFIX, Attention, Partitioned
from ssa.config_lib import ModelConfig, SSAConfig


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD):
    cfg = self.cfg
    init = nn.initializers.normal(cfg.init_std)
    dense = lambda feats, axes, name, bias: nn.Dense(  # noqa: E731
        feats, use_bias=bias, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=Partitioned(init, axes), bias_init=Partitioned(nn.initializers.zeros,
                                                                   axes[1:]), name=name)
    if cfg.mlp == 'swiglu':
      h_BTF = (nn.silu(dense(cfg.d_ff, ('embed', 'mlp'), 'gate', cfg.use_bias)(x_BTD)) *
               dense(cfg.d_ff, ('embed', 'mlp'), 'up', cfg.use_bias)(x_BTD))
    else:
      h_BTF = nn.gelu(dense(cfg.d_ff, ('embed', 'mlp'), 'up', cfg.use_bias)(x_BTD),
                      approximate=cfg.gelu_approximate)
    return dense(cfg.d_model, ('mlp', 'embed'), 'down', cfg.use_bias)(h_BTF)


def _norm(cfg: ModelConfig, name: str):
  kw = dict(epsilon=cfg.norm_eps, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
            scale_init=Partitioned(nn.initializers.ones, ('embed',)), name=name)
  if cfg.norm == 'rmsnorm':
    return nn.RMSNorm(**kw)
  return nn.LayerNorm(bias_init=Partitioned(nn.initializers.zeros, ('embed',)), **kw)


class Block(nn.Module):
  """One Transformer block; `decode` / `capture` are static per model call (see Attention), so
  every call argument is an array (or None) and nn.remat needs no static_argnums."""
  cfg: ModelConfig
  ssa: SSAConfig
  decode: bool = False
  capture: bool = False

  @nn.compact
  def __call__(self, x_BTD, index_BT, n_BT, pos_BT, segment_ids_BT=None, token_table_BT=None):
    attn = Attention(self.cfg, self.ssa, decode=self.decode, capture=self.capture, name='attn')
    a_BTD = attn(_norm(self.cfg, 'ln1')(x_BTD), index_BT, n_BT, pos_BT, segment_ids_BT,
                 token_table_BT)
    if self.cfg.parallel_residual:
      return x_BTD + a_BTD + Mlp(self.cfg, name='mlp')(_norm(self.cfg, 'ln2')(x_BTD))
    x_BTD = x_BTD + a_BTD
    return x_BTD + Mlp(self.cfg, name='mlp')(_norm(self.cfg, 'ln2')(x_BTD))


def document_positions(segment_ids_BT):
  """0-based position of each token inside its packed document (segments are contiguous)."""
  T = segment_ids_BT.shape[1]
  idx_BT = jnp.broadcast_to(jnp.arange(T), segment_ids_BT.shape)
  starts = jnp.concatenate([jnp.ones_like(segment_ids_BT[:, :1], bool),
                            segment_ids_BT[:, 1:] != segment_ids_BT[:, :-1]], axis=1)
  start_BT = jax.lax.cummax(jnp.where(starts, idx_BT, 0), axis=1)
  return idx_BT - start_BT


class Transformer(nn.Module):
  """Decoder-only language model; returns float32 logits [B, T, vocab_size]."""
  cfg: ModelConfig
  ssa: SSAConfig

  @nn.compact
  def __call__(self, tokens_BT, positions=None, segment_ids=None, *, decode=False,
               capture=False, return_hidden=False):
    """Logits [B, T, vocab_size] (float32); return_hidden: the final-norm hidden states
    [B, T, D] instead (head_logits(params, hidden, cfg) gives the same logits, e.g. in chunks)."""
    cfg = self.cfg
    B, T = tokens_BT.shape
    dtype = jnp.dtype(cfg.dtype)
    if decode:
      if segment_ids is not None:
        raise ValueError('segment_ids are not supported in kv-cache decoding.')
      index_var = self.variable('cache', 'index', lambda: jnp.zeros((), jnp.int32))
      start = index_var.value
      if not self.is_initializing():
        index_var.value = start + T
      index_BT = jnp.broadcast_to(start + jnp.arange(T, dtype=jnp.int32), (B, T))
    else:
      if cfg.pos_emb == 'learned' and T > cfg.max_len:
        raise ValueError(f'Sequence length {T} exceeds model.max_len={cfg.max_len} (the learned '
                         'position table).')
      index_BT = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    pos_BT = index_BT if positions is None else positions
    if self.ssa.position_reset_at_eos and segment_ids is not None:
      n_BT = document_positions(segment_ids) + 1
    else:
      n_BT = index_BT + 1

    embed = nn.Embed(cfg.padded_vocab_size, cfg.d_model, dtype=dtype,
                     param_dtype=jnp.dtype(cfg.param_dtype), name='embed',
                     embedding_init=Partitioned(nn.initializers.normal(cfg.init_std),
                                                ('vocab', 'embed')))
    x_BTD = embed(tokens_BT)
    if cfg.pos_emb == 'learned':
      wpe = self.param('pos_embed', Partitioned(nn.initializers.normal(cfg.init_std / 2),
                                                (None, 'embed')),
                       (cfg.max_len, cfg.d_model), jnp.dtype(cfg.param_dtype))
      x_BTD = x_BTD + jnp.take(wpe, pos_BT, axis=0).astype(dtype)

    token_table_BT = None
    if strategies.token_table(self.ssa) is not None:  # e.g. 'frequency': filled by training
      table = self.variable('constants', strategies.TOKEN_TABLE, jnp.zeros,
                            (cfg.padded_vocab_size,), jnp.float32)
      token_table_BT = jnp.take(table.value, tokens_BT, axis=0)

    block_cls = nn.remat(Block) if cfg.remat else Block
    for i in range(cfg.n_layers):
      x_BTD = block_cls(cfg, self.ssa, decode=decode, capture=capture, name=f'layer_{i}')(
          x_BTD, index_BT, n_BT, pos_BT, segment_ids, token_table_BT)
    x_BTD = _norm(cfg, 'ln_f')(x_BTD)
    if return_hidden:
      if not cfg.tie_embeddings and self.is_initializing():
        nn.Dense(cfg.padded_vocab_size, use_bias=False, name='lm_head')(x_BTD)
      return x_BTD
    if cfg.tie_embeddings:
      logits_BTV = embed.attend(x_BTD)
    else:
      logits_BTV = nn.Dense(cfg.padded_vocab_size, use_bias=False, dtype=dtype,
                            param_dtype=jnp.dtype(cfg.param_dtype), name='lm_head',
                            kernel_init=Partitioned(nn.initializers.normal(cfg.init_std),
                                                    ('embed', 'vocab')))(x_BTD)
    return logits_BTV[..., :cfg.vocab_size].astype(jnp.float32)


def head_logits(params, x_BTD, cfg: ModelConfig):
  """The output head on hidden states: what Transformer returns after its final norm (the tied
  embedding transposed, or lm_head), float32 logits [..., vocab_size]."""
  dtype = jnp.dtype(cfg.dtype)
  w_DV = (params['embed']['embedding'].T if cfg.tie_embeddings else params['lm_head']['kernel'])
  logits = jnp.dot(x_BTD.astype(dtype), w_DV.astype(dtype))
  return logits[..., :cfg.vocab_size].astype(jnp.float32)


def init_params(model: Transformer, rng, batch_size: int = 1, seq_len: int = 8):
  """Initialised variables (unboxed: plain arrays) for a [batch_size, seq_len] token input;
  compiled once (eager init runs op by op, several times slower even for a tiny model)."""
  tokens = jnp.zeros((batch_size, seq_len), jnp.int32)
  return nn.unbox(jax.jit(model.init)(rng, tokens))


def abstract_variables(model: Transformer, seq_len: int = 8):
  """The model's variables as shapes (jax.eval_shape, no memory), still boxed with their logical
  axes ('params' and non-trainable collections such as 'constants'; no 'intermediates')."""
  tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
  shapes = jax.eval_shape(lambda t: model.init(jax.random.PRNGKey(0), t), tokens)
  return {k: v for k, v in shapes.items() if k not in ('intermediates', 'cache')}


def init_cache(model: Transformer, variables, batch_size: int, max_len: int):
  """Zero kv-cache for decoding up to `max_len` tokens per sequence (default model.max_len)."""
  tokens = jnp.zeros((batch_size, max_len), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, decode=True))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nn.unbox(shapes['cache']))


def is_temperature_path(path) -> bool:
  """True for a parameter path (tuple of keys / jax key entries) inside a temperature module."""
  return any(str(getattr(k, 'key', k)).startswith(TEMPERATURE_PREFIX) for k in path)


def param_counts(params) -> dict[str, Any]:
  """{'total', 'temperature', 'base', 'added_ratio'}: counts of parameters (leaves of `params`).

  'temperature' counts what SSA adds (everything under tau_q / tau_k / tau_v); 'added_ratio' is
  temperature / base, base = total - temperature (the model without SSA).
  """
  total = temp = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]:
    size = int(np.prod(leaf.shape))
    total += size
    if is_temperature_path(path):
      temp += size
  base = total - temp
  return {'total': total, 'temperature': temp, 'base': base,
          'added_ratio': temp / base if base else 0.0}


def abstract_param_counts(model: Transformer, seq_len: int = 8) -> dict[str, Any]:
  """param_counts from shapes only (jax.eval_shape): no memory, works for any model size."""
  return param_counts(abstract_variables(model, seq_len)['params'])
