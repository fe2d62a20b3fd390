"""Configuration of an SSA-JAX model exported for Hugging Face transformers (remote code).

Written by `python export.py --format=hf_remote` (SSA-JAX, ssa/convert/hf_remote_format.py) as
config.json next to this file and modeling_ssa.py; load with

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

config.json holds the project's full configuration, the one source of truth:

    "model":      every field of the project's ModelConfig (family, d_model, n_heads, ...)
    "ssa":        every field of the project's SSAConfig (strategy, q, k, v, slope, ...)
    "ssa_export": {"format": "ssa-hf-remote", "version": 1, "extra": {step, tokenizer, source}}

The usual Hugging Face attributes (vocab_size, hidden_size, num_hidden_layers,
num_attention_heads, num_key_value_heads, head_dim, intermediate_size, max_position_embeddings,
tie_word_embeddings) are derived from "model" and cannot be set separately.

This file imports only transformers and the standard library.
"""

from transformers import PretrainedConfig

# The defaults of the project's ModelConfig and SSAConfig (ssa/config_lib.py; the tests check
# that they are equal), used for fields a config.json does not give.
MODEL_DEFAULTS = {
    'preset': '', 'family': 'gpt2', 'vocab_size': 50257, 'vocab_pad_multiple': 128,
    'd_model': 64, 'n_layers': 2, 'n_heads': 4, 'n_kv_heads': 4, 'head_dim': 16, 'd_ff': 256,
    'max_len': 256, 'norm': 'layernorm', 'norm_eps': 1e-5, 'pos_emb': 'learned',
    'rotary_pct': 1.0, 'rope_theta': 10000.0, 'mlp': 'gelu', 'gelu_approximate': True,
    'parallel_residual': False, 'use_bias': True, 'tie_embeddings': True, 'init_std': 0.02,
    'dtype': 'float32', 'param_dtype': 'float32', 'remat': False,
}
SSA_DEFAULTS = {
    'strategy': 'ssa', 'q': 'pos+tok', 'k': 'none', 'v': 'tok', 'combine': 'add',
    'slope': 'exp_exp', 'theta_init': None, 'linear_min_tau': None, 'granularity': 'head',
    'weight_sharing': True, 'phi': 'gelu', 'position_reset_at_eos': False,
    'yarn_train_len': 1024, 'yarn_context_len': 1024, 'backend': 'auto',
}
# Hugging Face attribute -> the "model" field it is derived from.
DERIVED = {
    'vocab_size': 'vocab_size', 'hidden_size': 'd_model', 'num_hidden_layers': 'n_layers',
    'num_attention_heads': 'n_heads', 'num_key_value_heads': 'n_kv_heads',
    'head_dim': 'head_dim', 'intermediate_size': 'd_ff', 'max_position_embeddings': 'max_len',
    'tie_word_embeddings': 'tie_embeddings',
}


class SSAConfig(PretrainedConfig):
  """The project's model and SSA configuration as a transformers config (see the module
  docstring); `model` and `ssa` are plain dicts of the project's field names."""
  model_type = 'ssa_transformer'

  def __init__(self, model=None, ssa=None, ssa_export=None, **kwargs):
    unknown = sorted(set(model or {}) - set(MODEL_DEFAULTS)) + sorted(
        set(ssa or {}) - set(SSA_DEFAULTS))
    if unknown:
      raise ValueError(f'SSAConfig: unknown model/ssa field(s) {unknown}; this '
                       'configuration_ssa.py knows the fields of MODEL_DEFAULTS / SSA_DEFAULTS.')
    self.model = dict(MODEL_DEFAULTS, **(model or {}))
    self.ssa = dict(SSA_DEFAULTS, **(ssa or {}))
    self.ssa_export = dict(ssa_export or {})
    for attr, field in DERIVED.items():
      kwargs.pop(attr, None)
      setattr(self, attr, self.model[field])
    # transformers 5 drops generation parameters (use_cache among them) from config kwargs
    self.use_cache = kwargs.pop('use_cache', True)
    super().__init__(**kwargs)

  @property
  def padded_vocab_size(self) -> int:
    """Rows of the embedding table (vocab_size rounded up to model.vocab_pad_multiple)."""
    m = self.model['vocab_pad_multiple']
    return -(-self.model['vocab_size'] // m) * m

  @property
  def rotary_dim(self) -> int:
    """Rotated dims per head (even), 0 unless model.pos_emb == 'rope'."""
    if self.model['pos_emb'] != 'rope':
      return 0
    return int(self.model['head_dim'] * self.model['rotary_pct']) // 2 * 2
