"""Paper recipe: temperature-only fine-tuning (docs/ssa.md §2, row 3): the LLM is frozen, only the
tau_* parameters train (Adam, lr 1e-2, constant); frozen weights keep no optimizer state.

    python train.py --config=configs/temperature_only.py:gpt2-124m --workdir=DIR
    python train.py --config=configs/temperature_only.py:pythia-160m --workdir=DIR \
        --config.optim.tau_optimizer=sgd

Same data as configs/finetune_ssa.py. Start from pretrained weights with model.init_from (fresh
runs only; the temperatures start at their init values, frozen weights get no optimizer state):

    python train.py --config=configs/temperature_only.py:gpt2-124m --workdir=DIR \
        --config.model.init_from=hf:/path/to/gpt2
"""

from configs import finetune_ssa


def get_config(preset: str = 'gpt2-124m'):
  c = finetune_ssa.get_config(preset)
  c.optim.mode = 'temperature_only'
  c.optim.tau_optimizer = 'adam'
  c.optim.tau_lr = 1e-2
  c.optim.tau_schedule = 'constant'
  c.optim.clip_norm = 1.0
  return c
