"""Model presets: name -> overrides of config.model (configs/base.py documents each field).

Shapes follow the public Hugging Face configs of each model. tinyllama-1.1b is shapes only (too large
for this project's CPU tests); gpt2-tiny and llama-tiny are the test-sized members of their families.
"""

_GPT2 = dict(family='gpt2', vocab_size=50257, norm='layernorm', norm_eps=1e-5, pos_emb='learned',
             mlp='gelu', gelu_approximate=True, parallel_residual=False, use_bias=True,
             tie_embeddings=True, max_len=1024, head_dim=64)
_NEOX = dict(family='neox', vocab_size=50304, norm='layernorm', norm_eps=1e-5, pos_emb='rope',
             rotary_pct=0.25, rope_theta=10000.0, mlp='gelu', gelu_approximate=False,
             parallel_residual=True, use_bias=True, tie_embeddings=False, max_len=2048, head_dim=64)
_LLAMA = dict(family='llama', norm='rmsnorm', norm_eps=1e-5, pos_emb='rope', rotary_pct=1.0,
              mlp='swiglu', parallel_residual=False, use_bias=False, head_dim=64)

PRESETS = {
    'gpt2-tiny': dict(_GPT2, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16,
                      d_ff=256, max_len=256),
    'gpt2-124m': dict(_GPT2, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=3072),
    'gpt2-355m': dict(_GPT2, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=16, d_ff=4096),
    'pythia-160m': dict(_NEOX, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=3072),
    'pythia-410m': dict(_NEOX, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=16, d_ff=4096),
    'llama-tiny': dict(_LLAMA, vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                       head_dim=16, d_ff=172, max_len=256, rope_theta=10000.0,
                       tie_embeddings=False),
    'smollm2-135m': dict(_LLAMA, vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
                         n_kv_heads=3, d_ff=1536, max_len=8192, rope_theta=100000.0,
                         tie_embeddings=True),
    'tinyllama-1.1b': dict(_LLAMA, vocab_size=32000, d_model=2048, n_layers=22, n_heads=32,
                           n_kv_heads=4, d_ff=5632, max_len=2048, rope_theta=10000.0,
                           tie_embeddings=False),
}


def apply(config, name: str) -> None:
  """Overwrite config.model with preset `name`; unknown names raise with the list of presets."""
  if name not in PRESETS:
    raise ValueError(f'Unknown model preset {name!r}; expected one of {sorted(PRESETS)}.')
  for key, value in PRESETS[name].items():
    config.model[key] = value
  config.model.preset = name
