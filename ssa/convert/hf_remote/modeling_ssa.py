"""SSA-JAX's Transformer in PyTorch, for Hugging Face transformers (remote code).

Written by `python export.py --format=hf_remote` (SSA-JAX, ssa/convert/hf_remote_format.py) next
to configuration_ssa.py, config.json and model.safetensors; load with

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(DIR)
    out = model.generate(**tok('To be', return_tensors='pt'), max_new_tokens=20, do_sample=False)

A re-implementation of the project's model (ssa/model.py, ssa/attention.py, ssa/strategies.py;
the math in docs/ssa.md) that imports only torch, transformers and the standard library. It
gives the JAX model's float32 logits (tests/test_export_remote.py), for the families

    family  norm       positions           MLP            residual    bias  head
    gpt2    LayerNorm  learned table       GELU (tanh)    sequential  yes   tied
    neox    LayerNorm  partial rotary      GELU (erf)     parallel    yes   untied
    llama   RMSNorm    rotary              SwiGLU         sequential  no    tied or untied; GQA

(config.json "model" says which switches are set) and every temperature strategy of config.json
"ssa": vanilla; ssa (q / k / v terms 'pos', 'tok', 'pos+tok', slope exp_exp | sigmoid | linear
with its linear_min_tau clamp, combine add | mul, granularity head | layer, weight sharing or the
layer's own matrix tau_w, phi gelu | identity); constant; yarn; frequency (its token table is the
buffer constants.token_log_freq); pts. Per head h, with the causal mask M:

    out = softmax( (tau_q * q)(tau_k * k)^T / sqrt(d_h) + M ) (tau_v * v)

tau_e is one float32 number per token and head, computed from the raw projections (before
rotary), and q, k, v are scaled by it before attention (the cache holds scaled keys / values).

Weights: model.safetensors keeps the project's own parameter names and layouts, its Flax paths
with '/' replaced by '.', and this module names its parameters the same way, so transformers
loads the file as it is: 'embed.embedding' [V_pad, D], 'pos_embed' [max_len, D],
'layer_0.attn.q_proj.kernel' [D, H, d_h] (bias [H, d_h]), 'layer_0.attn.o_proj.kernel'
[H, d_h, D], 'layer_0.mlp.up.kernel' [D, F], 'layer_0.ln1.scale', 'layer_0.attn.tau_q.theta',
'layer_0.attn.tau_w' [D, H, d_h], 'lm_head.kernel' [D, V_pad], 'constants.token_log_freq'
[V_pad]. The embedding has model.vocab_pad_multiple padding rows; logits are sliced to
vocab_size.

Positions: each token's position is its 0-based index among the real (unpadded) tokens of its
row: position_ids when given (generate() makes them from attention_mask), else from
attention_mask, else past length + offset. It feeds the position embedding (learned table or
rotary) and the SSA position terms, n = position + 1, so decoding with the kv-cache uses the
tokens' absolute positions and equals recomputing the whole sequence, and a left-padded row equals
the same row unpadded. attention_mask must be 2-D [batch, past + new tokens] (1 = real token).
Not supported: ssa.position_reset_at_eos (it needs packed-document segment ids, which a
transformers model does not get; n stays the absolute position, as in the project's own kv-cache
decoding); a bfloat16 compute dtype (model.dtype) is not reproduced: this module computes in the
dtype the weights are loaded in (float32 by default), the temperatures always in float32 (their
parameters and the token table stay float32 under from_pretrained(..., dtype=torch.bfloat16)).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_ssa import SSAConfig

STRATEGIES = ('vanilla', 'ssa', 'constant', 'yarn', 'frequency', 'pts')


def temperature_specs(ssa: dict) -> dict:
  """{embedding ('q' / 'k' / 'v'): terms} the strategy scales (ssa/strategies.py specs)."""
  s = ssa['strategy']
  if s == 'vanilla':
    return {}
  if s == 'ssa':
    return {e: ssa[e] for e in ('q', 'k', 'v') if ssa[e] != 'none'}
  if s == 'pts':
    return {'q': 'pos'}
  if s in ('constant', 'yarn', 'frequency'):
    return {'q': 'none'}
  raise ValueError(f'ssa.strategy={s!r} is not implemented by this modeling_ssa.py; expected '
                   f'one of {list(STRATEGIES)}.')


def _own_features(ssa: dict, terms: str) -> bool:
  """Whether a token term reads the layer's new matrix tau_w (no weight sharing)."""
  return 'tok' in terms and not ssa['weight_sharing']


def _slope(theta, kind: str):
  if kind == 'exp_exp':
    return torch.exp(-torch.exp(theta))
  if kind == 'sigmoid':
    return torch.sigmoid(theta)
  if kind == 'linear':
    return theta
  raise ValueError(f'ssa.slope={kind!r} is not valid; expected exp_exp, sigmoid or linear.')


def initial_theta(theta_init, slope_kind: str) -> float:
  """theta at init (ssa/strategies.py initial_theta): None = slope exp(-exp(1.5))."""
  if theta_init is not None:
    return float(theta_init)
  s0 = math.exp(-math.exp(1.5))
  if slope_kind == 'exp_exp':
    return 1.5
  if slope_kind == 'sigmoid':
    return math.log(s0 / (1.0 - s0))
  return s0


def yarn_factor(ssa: dict) -> float:
  return 0.1 * math.log(max(ssa['yarn_context_len'] / ssa['yarn_train_len'], 1.0)) + 1.0


class SSATemperature(nn.Module):
  """tau [B, T, heads] (float32) of one embedding of one layer (the project's Temperature
  module): its parameters are those of the strategy's temperature function."""

  def __init__(self, ssa: dict, terms: str, n_heads: int, n_features: int, head_dim: int):
    super().__init__()
    self.ssa, self.terms, self.n_heads = ssa, terms, n_heads
    self.strategy = ssa['strategy']
    per = n_heads if ssa['granularity'] == 'head' else 1
    if self.strategy == 'ssa':
      if 'pos' in terms:
        self.theta = nn.Parameter(torch.empty(per))
      if 'tok' in terms:
        self.u = nn.Parameter(torch.empty(n_features if ssa['granularity'] == 'head' else 1,
                                          head_dim))
    elif self.strategy == 'pts':
      self.theta = nn.Parameter(torch.empty(1))
    elif self.strategy == 'constant':
      self.c = nn.Parameter(torch.empty(per))
    elif self.strategy == 'frequency':
      self.a = nn.Parameter(torch.empty(per))
      self.b = nn.Parameter(torch.empty(per))

  def reset_parameters(self):
    """The project's init: theta at its initial value, u / a / b zero, c one."""
    if hasattr(self, 'theta'):
      slope = self.ssa['slope'] if self.strategy == 'ssa' else 'exp_exp'
      init.constant_(self.theta, initial_theta(self.ssa['theta_init'], slope))
    for name in ('u', 'a', 'b'):
      if hasattr(self, name):
        init.zeros_(getattr(self, name))
    if hasattr(self, 'c'):
      init.ones_(self.c)

  def _position(self, n_BT, slope_kind):
    theta = self.theta.float().expand(self.n_heads)
    return 1.0 + _slope(theta, slope_kind) * torch.log(n_BT)[..., None]

  def forward(self, feat_BTFD, n_BT, table_BT):
    """feat: float32 token features [B, T, F, d_h] (F = heads * G: a head sums over its G);
    n: 1-based positions [B, T] (float32); table: the token table's values [B, T] or None."""
    B, T = n_BT.shape
    H = self.n_heads
    if self.strategy == 'pts':
      return self._position(n_BT, 'exp_exp')
    if self.strategy == 'constant':
      return self.c.float().expand(H).expand(B, T, H)
    if self.strategy == 'yarn':
      return torch.full((B, T, H), yarn_factor(self.ssa), dtype=torch.float32,
                        device=n_BT.device)
    if self.strategy == 'frequency':
      if table_BT is None:
        raise ValueError("The 'frequency' strategy needs the token ids (input_ids) for its token "
                         'table; inputs_embeds alone are not enough.')
      a, b = self.a.float().expand(H), self.b.float().expand(H)
      return 1.0 + torch.tanh(a * table_BT.float()[..., None] + b)
    s = self.ssa
    tau_BTH = torch.ones((B, T, H), dtype=torch.float32, device=n_BT.device)
    if 'pos' in self.terms:
      tau_BTH = self._position(n_BT, s['slope'])
    if 'tok' in self.terms:
      Fh = feat_BTFD.shape[2]
      h_BTFD = F.gelu(feat_BTFD) if s['phi'] == 'gelu' else feat_BTFD  # exact (erf) GELU
      u_FD = self.u.float().expand(Fh, -1)
      f_BTF = (h_BTFD * u_FD).sum(-1)
      tok_BTH = torch.tanh(f_BTF.reshape(B, T, H, Fh // H).sum(-1))
      tau_BTH = tau_BTH + tok_BTH if s['combine'] == 'add' else tau_BTH * (1.0 + tok_BTH)
    if s['slope'] == 'linear' and s['linear_min_tau'] is not None:
      tau_BTH = torch.clamp(tau_BTH, min=float(s['linear_min_tau']))
    return tau_BTH


class SSADense(nn.Module):
  """A Flax Dense / DenseGeneral: kernel [*in_shape, *out_shape], optional bias [*out_shape]."""

  def __init__(self, in_shape, out_shape, bias: bool):
    super().__init__()
    self.n_in = len(in_shape)
    self.kernel = nn.Parameter(torch.empty(*in_shape, *out_shape))
    self.bias = nn.Parameter(torch.empty(*out_shape)) if bias else None

  def forward(self, x):
    y = torch.tensordot(x, self.kernel.to(x.dtype), dims=self.n_in)
    return y if self.bias is None else y + self.bias.to(x.dtype)


class SSALayerNorm(nn.Module):
  def __init__(self, d: int, eps: float):
    super().__init__()
    self.eps = eps
    self.scale = nn.Parameter(torch.empty(d))
    self.bias = nn.Parameter(torch.empty(d))

  def forward(self, x):
    return F.layer_norm(x, x.shape[-1:], self.scale.to(x.dtype), self.bias.to(x.dtype), self.eps)


class SSARMSNorm(nn.Module):
  def __init__(self, d: int, eps: float):
    super().__init__()
    self.eps = eps
    self.scale = nn.Parameter(torch.empty(d))

  def forward(self, x):
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return (y * self.scale.float()).to(x.dtype)


class SSAEmbedding(nn.Module):
  """The token table [V_pad, D] (Flax nn.Embed: parameter 'embedding')."""

  def __init__(self, rows: int, d: int):
    super().__init__()
    self.embedding = nn.Parameter(torch.empty(rows, d))

  def forward(self, ids):
    return F.embedding(ids, self.embedding)


class SSAConstants(nn.Module):
  """Non-trainable per-token table of the 'frequency' strategy (variables['constants'])."""

  def __init__(self, rows: int):
    super().__init__()
    self.register_buffer('token_log_freq', torch.zeros(rows), persistent=True)


def apply_rope(x_BTHD, pos_BT, rotary_dim: int, base: float):
  """Rotary embedding on the first rotary_dim dims of each head, rotate_half layout."""
  half = rotary_dim // 2
  inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32,
                                          device=x_BTHD.device) / rotary_dim))
  ang_BTF = pos_BT.float()[..., None] * inv_freq
  cos, sin = torch.cos(ang_BTF)[:, :, None, :], torch.sin(ang_BTF)[:, :, None, :]
  x = x_BTHD.float()
  x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
  out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)
  return out.to(x_BTHD.dtype)


class SSAAttention(nn.Module):
  """Causal (grouped-query) self-attention with the SSA temperatures and a kv-cache."""

  def __init__(self, config: SSAConfig, layer_idx: int):
    super().__init__()
    m, s = config.model, config.ssa
    self.m, self.layer_idx = m, layer_idx
    self.rotary_dim = config.rotary_dim
    D, H, K, Dh = m['d_model'], m['n_heads'], m['n_kv_heads'], m['head_dim']
    self.q_proj = SSADense((D,), (H, Dh), m['use_bias'])
    self.k_proj = SSADense((D,), (K, Dh), m['use_bias'])
    self.v_proj = SSADense((D,), (K, Dh), m['use_bias'])
    self.o_proj = SSADense((H, Dh), (D,), m['use_bias'])
    self.specs = temperature_specs(s)
    self.own = any(_own_features(s, t) for t in self.specs.values())
    if self.own:  # ONE new D x H x d_h matrix per layer, read by every token term
      self.tau_w = nn.Parameter(torch.empty(D, H, Dh))
    for e, terms in self.specs.items():
      heads = H if e == 'q' else K
      n_features = H if self.own else heads
      self.add_module(f'tau_{e}', SSATemperature(s, terms, heads, n_features, Dh))

  def temperatures(self, x_BTD, raw, n_BT, table_BT):
    """{e: tau [B, T, heads]} (float32) from the raw (pre-rotary) projections or tau_w."""
    shared = None
    if self.own:
      shared = torch.einsum('btd,dhk->bthk', x_BTD.float(), self.tau_w.float())
    return {e: getattr(self, f'tau_{e}')(raw[e].float() if shared is None else shared, n_BT,
                                         table_BT)
            for e in self.specs}

  def forward(self, x_BTD, pos_BT, n_BT, table_BT, mask_BTS, cache: Optional[Cache]):
    raw = {'q': self.q_proj(x_BTD), 'k': self.k_proj(x_BTD), 'v': self.v_proj(x_BTD)}
    taus = self.temperatures(x_BTD, raw, n_BT, table_BT)
    q, k, v = raw['q'], raw['k'], raw['v']
    if self.m['pos_emb'] == 'rope':
      q = apply_rope(q, pos_BT, self.rotary_dim, self.m['rope_theta'])
      k = apply_rope(k, pos_BT, self.rotary_dim, self.m['rope_theta'])
    q, k, v = (t if e not in taus else (t.float() * taus[e][..., None]).to(t.dtype)
               for e, t in (('q', q), ('k', k), ('v', v)))
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, T, d_h]
    if cache is not None:
      k, v = cache.update(k, v, self.layer_idx)
    G = q.shape[1] // k.shape[1]
    if G > 1:  # query head h reads key/value head h // G
      k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask_BTS[:, None], torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v.float()).to(x_BTD.dtype).transpose(1, 2)  # [B, T, H, d_h]
    return self.o_proj(out)


class SSAMlp(nn.Module):
  def __init__(self, config: SSAConfig):
    super().__init__()
    m = config.model
    self.m = m
    if m['mlp'] == 'swiglu':
      self.gate = SSADense((m['d_model'],), (m['d_ff'],), m['use_bias'])
    self.up = SSADense((m['d_model'],), (m['d_ff'],), m['use_bias'])
    self.down = SSADense((m['d_ff'],), (m['d_model'],), m['use_bias'])

  def forward(self, x):
    if self.m['mlp'] == 'swiglu':
      h = F.silu(self.gate(x)) * self.up(x)
    else:
      h = F.gelu(self.up(x), approximate='tanh' if self.m['gelu_approximate'] else 'none')
    return self.down(h)


def _norm(config: SSAConfig):
  m = config.model
  if m['norm'] == 'rmsnorm':
    return SSARMSNorm(m['d_model'], m['norm_eps'])
  return SSALayerNorm(m['d_model'], m['norm_eps'])


class SSABlock(nn.Module):
  def __init__(self, config: SSAConfig, layer_idx: int):
    super().__init__()
    self.parallel = config.model['parallel_residual']
    self.ln1 = _norm(config)
    self.attn = SSAAttention(config, layer_idx)
    self.ln2 = _norm(config)
    self.mlp = SSAMlp(config)

  def forward(self, x, pos_BT, n_BT, table_BT, mask_BTS, cache):
    a = self.attn(self.ln1(x), pos_BT, n_BT, table_BT, mask_BTS, cache)
    if self.parallel:
      return x + a + self.mlp(self.ln2(x))
    x = x + a
    return x + self.mlp(self.ln2(x))


class SSAPreTrainedModel(PreTrainedModel):
  config_class = SSAConfig
  base_model_prefix = 'ssa_transformer'
  _no_split_modules = ['SSABlock']
  # The temperature parameters and the token table stay float32 when loaded as fp16 / bf16.
  _keep_in_fp32_modules_strict = ['tau_q', 'tau_k', 'tau_v', 'tau_w', 'constants']
  supports_gradient_checkpointing = False

  def _init_weights(self, module):
    """The project's init (ssa/model.py): normal(init_std) kernels and embedding, normal(
    init_std / 2) position table, zero biases, unit norm scales, temperatures at identity."""
    std = self.config.model['init_std']
    if isinstance(module, SSADense):
      init.normal_(module.kernel, mean=0.0, std=std)
      if module.bias is not None:
        init.zeros_(module.bias)
    elif isinstance(module, SSAEmbedding):
      init.normal_(module.embedding, mean=0.0, std=std)
    elif isinstance(module, (SSALayerNorm, SSARMSNorm)):
      init.ones_(module.scale)
      if getattr(module, 'bias', None) is not None:
        init.zeros_(module.bias)
    elif isinstance(module, SSATemperature):
      module.reset_parameters()
    elif isinstance(module, SSAAttention) and module.own:
      init.normal_(module.tau_w, mean=0.0, std=std)
    elif isinstance(module, SSAConstants):
      init.zeros_(module.token_log_freq)
    elif isinstance(module, SSAForCausalLM) and module.pos_embed is not None:
      init.normal_(module.pos_embed, mean=0.0, std=std / 2)


class SSAForCausalLM(SSAPreTrainedModel, GenerationMixin):
  """Decoder-only language model; logits [B, T, vocab_size] (see the module docstring)."""

  def __init__(self, config: SSAConfig):
    super().__init__(config)
    m = config.model
    temperature_specs(config.ssa)  # an unknown strategy fails here, naming it
    rows = config.padded_vocab_size
    self.embed = SSAEmbedding(rows, m['d_model'])
    self.pos_embed = (nn.Parameter(torch.empty(m['max_len'], m['d_model']))
                      if m['pos_emb'] == 'learned' else None)
    for i in range(m['n_layers']):
      self.add_module(f'layer_{i}', SSABlock(config, i))
    self.ln_f = _norm(config)
    self.lm_head = None if m['tie_embeddings'] else SSADense((m['d_model'],), (rows,), False)
    self.constants = SSAConstants(rows) if config.ssa['strategy'] == 'frequency' else None
    self.post_init()

  def get_input_embeddings(self):
    return self.embed

  def get_output_embeddings(self):
    return None  # the head is the embedding transposed, or lm_head.kernel [D, V_pad]

  def _positions(self, B, T, past, attention_mask, position_ids, device):
    """0-based positions [B, T] of the new tokens (see the module docstring)."""
    if position_ids is not None:
      return position_ids.to(device).long().expand(B, T)
    if attention_mask is not None:
      pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
      return pos[:, -T:].to(device)
    return (past + torch.arange(T, device=device)).expand(B, T)

  def forward(self, input_ids: Optional[torch.LongTensor] = None,
              attention_mask: Optional[torch.Tensor] = None,
              position_ids: Optional[torch.LongTensor] = None,
              cache: Optional[Cache] = None,
              inputs_embeds: Optional[torch.Tensor] = None,
              labels: Optional[torch.LongTensor] = None,
              use_cache: Optional[bool] = None,
              logits_to_keep: int = 0,
              return_dict: Optional[bool] = None,
              past_key_values: Optional[Cache] = None,
              **kwargs) -> CausalLMOutputWithPast:
    """Logits of the new tokens; `cache` (a transformers Cache) holds the scaled keys / values
    of earlier tokens (`past_key_values` is accepted as its older name)."""
    m = self.config.model
    if cache is None:
      cache = past_key_values
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError('Pass exactly one of input_ids and inputs_embeds.')
    use_cache = self.config.use_cache if use_cache is None else use_cache
    if use_cache and cache is None:
      cache = DynamicCache(config=self.config)
    if not use_cache:
      cache = None
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
    B, T = x.shape[:2]
    past = cache.get_seq_length() if cache is not None else 0
    if attention_mask is not None and attention_mask.dim() != 2:
      raise ValueError(f'attention_mask must be 2-D [batch, past + new tokens] (1 = real token); '
                       f'got shape {tuple(attention_mask.shape)}.')
    pos_BT = self._positions(B, T, past, attention_mask, position_ids, x.device)
    n_BT = (pos_BT + 1).float()
    if self.pos_embed is not None:
      if int(pos_BT.max()) >= m['max_len']:
        raise ValueError(f'Position {int(pos_BT.max())} exceeds the learned position table '
                         f"(model.max_len={m['max_len']}).")
      x = x + F.embedding(pos_BT, self.pos_embed).to(x.dtype)
    table_BT = None
    if self.constants is not None and input_ids is not None:
      table_BT = self.constants.token_log_freq[input_ids]
    # Key slot j is visible to new token i iff j <= past + i and attention_mask[:, j] == 1.
    S = past + T
    slots = torch.arange(S, device=x.device)
    mask_BTS = (slots[None, :] <= (past + torch.arange(T, device=x.device))[:, None])[None]
    mask_BTS = mask_BTS.expand(B, T, S)
    if attention_mask is not None:
      if attention_mask.shape != (B, S):
        raise ValueError(f'attention_mask has shape {tuple(attention_mask.shape)}; expected '
                         f'{(B, S)} (batch, past + new tokens).')
      mask_BTS = mask_BTS & attention_mask.to(x.device).bool()[:, None, :]
    for i in range(m['n_layers']):
      x = getattr(self, f'layer_{i}')(x, pos_BT, n_BT, table_BT, mask_BTS, cache)
    x = self.ln_f(x)
    if logits_to_keep:
      x = x[:, -logits_to_keep:]
    w_DV = self.embed.embedding.t() if self.lm_head is None else self.lm_head.kernel
    logits = torch.matmul(x, w_DV.to(x.dtype))[..., :m['vocab_size']].float()
    loss = None
    if labels is not None:
      loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                             labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
    return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache)
