"""Full fine-tuning of SmolLM2-135M, vanilla vs SSA, with the temperature learning rate chosen on a
tuning split (docs/results.md; ssa/experiments/finetune_tuned.py).

    python -m ssa.experiments.finetune_tuned --workdir=runs/ft_tuned --results=docs/results/ft_tuned

The recipe of configs/finetune_shakespeare.py (40 steps x 8 x 128 tokens, AdamW 1e-4, the same data
order for every arm) with 10% of the plays held out as 'test' (scored once, at the end, for the
chosen arms only) and 10% as 'validation' (the tuning split every arm is scored on). Arms:

  vanilla        full fine-tune, no SSA
  ssa_lr<X>      full fine-tune with SSA (q pos+tok, v tok; the release's theta_init 2.0), the
                 temperatures in their own Adam group at lr X, for X in TAU_LRS
"""

from configs import finetune_shakespeare

TAU_LRS = (1e-2, 3e-3, 1e-3)
ARMS = ('vanilla',) + tuple(f'ssa_lr{lr:g}' for lr in TAU_LRS)


def get_config(arm: str = 'vanilla'):
  if arm not in ARMS:
    raise ValueError(f'configs/finetune_tuned.py: unknown arm {arm!r}; expected one of '
                     f'{list(ARMS)}.')
  c = finetune_shakespeare.get_config('vanilla' if arm == 'vanilla' else 'ssa')
  c.model.preset = f'smollm2-135m-ft-tuned-{arm}'
  if arm != 'vanilla':
    c.optim.tau_lr = float(arm[len('ssa_lr'):])
    c.ssa.k = 'none'            # the final SSA: q pos+tok, v tok
  c.data.test_fraction = 0.1
  c.data.eval_batches = None
  c.train.eval_every = -1       # no evaluation inside training: the experiment scores the splits
  c.train.eval_at_start = False
  c.checkpoint.every = 10
  c.checkpoint.keep = 1
  return c
