"""Passkey among decoys: SmolLM2-135M fine-tuned briefly with and without SSA
(docs/results.md; ssa/experiments/passkey_decoy.py).

    python -m ssa.experiments.passkey_decoy --workdir=runs/passkey_decoy \
        --results=docs/results/passkey_decoy

The task (ssa/data/synthetic.py, data.passkey_decoys=DECOYS): the pass key sentence among DECOYS
decoy sentences of the same form with other labels and other five-digit numbers ("The door code is
41927. Remember it. 41927 is the door code."), in random filler; only the label tells the key, so
the task cannot be solved by token identity (the only run of digits). Loss on the answer only.

Arms (the same pretrained weights, data order, budget and base learning rate):
  base      SmolLM2-135M-Instruct as shipped, not fine-tuned (strategy vanilla)
  vanilla   full fine-tune, no SSA
  ssa       full fine-tune with SSA (q pos+tok, v tok, theta_init 2.0 as configs/finetune_tuned.py),
            the temperatures in their own Adam group at TAU_LR: the value configs/finetune_tuned.py
            chose on its tuning split (fixed here before this experiment ran)

Training: T=TRAIN_LEN, key depth uniform, STEPS x BATCH examples. Evaluation: greedy kv-cache
decoding of the answer on the same test examples for every arm, lengths LENGTHS (<= TRAIN_LEN:
within; above: beyond the training length, reported separately) x DEPTHS, NUM_EXAMPLES per cell.
"""

from configs import finetune_shakespeare

ARMS = ('base', 'vanilla', 'ssa')
DECOYS = 3
TRAIN_LEN = 256
BATCH = 8
# Sized to ~40 min of the 2-core CPU box for the three arms (SmolLM2-135M trains at ~100-150
# tokens/s and prefills at ~270 tokens/s there); the first sizing (50 steps, 4 lengths x 40
# examples per cell) needed ~2 h.
STEPS = 30            # 30 x 8 = 240 training examples (~61k tokens)
TAU_LR = 1e-3         # configs/finetune_tuned.py's validation choice (docs/results.md)
LENGTHS = (192, 256, 512)  # <= TRAIN_LEN: within the fine-tuning length; 512: beyond it
# (3 decoys need >= ~149 tokens with SmolLM2's tokenizer: run() checks the grid first)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NUM_EXAMPLES = 20     # per (length, depth) cell: 100 per length, 200 within, 100 beyond


def get_config(arm: str = 'ssa'):
  if arm not in ARMS:
    raise ValueError(f'configs/passkey_decoy.py: unknown arm {arm!r}; expected one of '
                     f'{list(ARMS)}.')
  c = finetune_shakespeare.get_config('vanilla' if arm != 'ssa' else 'ssa')
  c.model.preset = f'smollm2-135m-passkey-decoy-{arm}'
  c.data.dataset = 'passkey'
  c.data.passkey_decoys = DECOYS
  c.data.passkey_depth = None
  c.data.passkey_num_examples = 64
  c.data.seq_len = TRAIN_LEN
  c.data.batch_size = BATCH
  c.data.eval_batches = 4
  c.data.num_threads = 1
  if arm == 'ssa':
    c.ssa.k = 'none'
    c.optim.tau_lr = TAU_LR
  c.optim.warmup_steps = 5
  c.train.num_steps = STEPS
  c.train.log_every = 10
  c.train.eval_every = -1
  c.train.eval_at_start = False
  c.checkpoint.every = 10       # resumable: an interrupted arm loses at most 10 steps
  c.checkpoint.keep = 1
  c.eval.batch_size = 8
  return c
