"""Paper recipe: fine-tune an existing LLM with SSA, temperatures in their own group (docs/ssa.md §2).

    python train.py --config=configs/finetune_ssa.py:gpt2-124m --workdir=DIR
    python train.py --config=configs/finetune_ssa.py:pythia-160m --workdir=DIR

GPT-2 (T=1024): AdamW 3e-5, wd 0.01; temperature group Adam 1e-4.
Pythia / Llama families (T=2048): AdamW 1e-5, wd 0.01; temperature group Adam 1e-2.
64 sequences per step (as 4 micro-batches of 16: accumulation equals one large batch here).
Fine-tuning corpus for the ablations: WikiText-103.

Pretrained weights: set model.init_from to the checkpoint to fine-tune (its shapes must equal the
preset's; a mismatch raises ConfigError naming each field). It is read only when the workdir holds
no checkpoint (a run that resumes ignores it), the SSA temperature parameters start at their
init values (ssa.theta_init), and the optimizer state starts fresh:

    python train.py --config=configs/finetune_ssa.py:gpt2-124m --workdir=DIR \
        --config.model.init_from=hf:/path/to/gpt2            # or hf:openai-community/gpt2
    python train.py --config=configs/finetune_ssa.py:smollm2-135m --workdir=DIR \
        --config.model.init_from=gguf:/path/to/smollm2.gguf

Without model.init_from the run starts from a random initialisation.
"""

from configs import base

_RECIPES = {
    # preset: (T, lr, tau_lr, theta_init) -- theta 1.5 for GPT-2, 2.0 (slope 6.2e-4, the identity
    # at start) for the larger LLMs, as in the authors' release (docs/ssa.md §1.1)
    'gpt2-124m': (1024, 3e-5, 1e-4, 1.5),
    'gpt2-355m': (1024, 3e-5, 1e-4, 1.5),
    'pythia-160m': (2048, 1e-5, 1e-2, 2.0),
    'pythia-410m': (2048, 1e-5, 1e-2, 2.0),
    'smollm2-135m': (2048, 1e-5, 1e-2, 2.0),
    'tinyllama-1.1b': (2048, 1e-5, 1e-2, 2.0),
}


def get_config(preset: str = 'gpt2-124m'):
  if preset not in _RECIPES:
    raise ValueError(f'configs/finetune_ssa.py: no fine-tuning recipe for preset {preset!r}; '
                     f'expected one of {sorted(_RECIPES)}.')
  seq_len, lr, tau_lr, theta_init = _RECIPES[preset]
  c = base.get_config(preset)
  c.data.dataset = 'huggingface:wikitext/wikitext-103-raw-v1'
  c.data.tokenizer = 'gpt2' if preset.startswith('gpt2') else 'hf:tokenizer.json'
  c.data.seq_len = seq_len
  c.data.batch_size = 64
  c.data.eval_batches = 20
  c.model.max_len = max(c.model.max_len, seq_len)
  c.model.dtype = 'bfloat16'
  c.ssa.theta_init = theta_init
  c.optim.optimizer = 'adamw'
  c.optim.lr = lr
  c.optim.weight_decay = 0.01
  c.optim.schedule = 'cosine'
  c.optim.warmup_steps = 100
  c.optim.temperature_group = True
  c.optim.tau_optimizer = 'adam'
  c.optim.tau_lr = tau_lr
  c.optim.tau_schedule = 'constant'
  c.train.micro_batches = 4
  c.train.num_steps = 2000
  c.train.log_every = 10
  c.train.eval_every = 200
  c.checkpoint.every = 200
  return c
