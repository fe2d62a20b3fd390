"""Paper recipe: GPT-2 124M pre-training from scratch at T=1024 (docs/ssa.md §2, row 1).

AdamW lr 6e-4 -> 6e-5 cosine, warmup 2000, weight decay 0.1, betas (0.9, 0.95), clip 1.0;
GPT-2 tokenizer; 512 sequences x 1024 tokens per step (~0.5M tokens, as nanoGPT) via
gradient accumulation, bf16 compute with f32 params. The paper pre-trains on SlimPajama; the
default dataset here is OpenWebText-like text from tfds (set --config.data.dataset). Compare
--config.ssa.strategy=vanilla against the default SSA.

    python train.py --config=configs/gpt2_124m_pretrain.py --workdir=gs://BUCKET/runs/gpt2-ssa \
        --multihost                                   # Cloud TPU pod slice (docs/tpu.md)

On one CPU this config does not train in useful time: use configs/shakespeare.py there.
"""

from configs import base


def get_config():
  c = base.get_config('gpt2-124m')
  c.data.dataset = 'huggingface:openwebtext'  # any tfds text dataset; the paper used SlimPajama
  c.data.tokenizer = 'gpt2'
  c.data.seq_len = 1024
  c.data.batch_size = 512         # global sequences per step (divisible by 4 micro-batches x up to 128 chips)
  c.data.eval_batches = 20
  c.model.dtype = 'bfloat16'      # bf16 compute, float32 params and optimizer state
  c.optim.optimizer = 'adamw'
  c.optim.lr = 6e-4
  c.optim.min_lr_ratio = 0.1      # -> 6e-5
  c.optim.schedule = 'cosine'
  c.optim.warmup_steps = 2000
  c.optim.weight_decay = 0.1
  c.optim.b1, c.optim.b2 = 0.9, 0.95
  c.optim.clip_norm = 1.0
  c.train.num_steps = 100_000
  c.train.micro_batches = 4       # raise (or lower) to fit device memory; same result
  c.train.log_every = 50
  c.train.eval_every = 1000
  c.checkpoint.every = 1000
  c.checkpoint.keep = 3
  return c
