"""The embedded default: a small SSA GPT on the Shakespeare corpus, byte-level, ~10 min on 2 CPU cores.

    python train.py --config=configs/shakespeare.py --workdir=/tmp/ssa_shakespeare

Model: GPT-2 layout, 4 layers, D=128, 4 heads of 32, T=128, byte tokenizer (258 ids), final SSA
(ssa.strategy='ssa': q pos+tok, v tok). AdamW 2e-3, warmup 100, cosine to 2e-4 over 2400 steps,
batch 16 x 128 tokens. Validation every 400 steps on 8 batches of the validation split.
"""

from configs import base


def get_config():
  c = base.get_config('gpt2-tiny')
  c.model.preset = 'shakespeare-ssa'
  c.model.vocab_size = 258       # byte tokenizer: 256 bytes + EOS + PAD
  c.model.d_model = 128
  c.model.n_layers = 4
  c.model.n_heads = 4
  c.model.n_kv_heads = 4
  c.model.head_dim = 32
  c.model.d_ff = 512
  c.model.max_len = 128
  c.data.dataset = 'shakespeare'
  c.data.tokenizer = 'byte'
  c.data.seq_len = 128
  c.data.batch_size = 16
  c.data.eval_batches = 8
  c.data.num_threads = 1
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.1
  c.train.num_steps = 2400
  c.train.log_every = 25
  c.train.eval_every = 400
  c.checkpoint.every = 400
  return c
