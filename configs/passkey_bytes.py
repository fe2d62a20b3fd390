"""Passkey among decoys for the byte-level pre-training arms (docs/results.md;
ssa/experiments/passkey_bytes.py).

    python -m ssa.experiments.passkey_bytes --pretrain_workdir=runs/pretrain_arms \
        --workdir=runs/passkey_bytes --results=docs/results/passkey_bytes --seeds=0,1

The argument is 'ARM,SEED' (ARM in vanilla, pts, ssa: configs/pretrain_arms.py's arms). Each run
starts from that arm's pre-trained weights (model.init_from = 'ssa:<pretrain_workdir>/ARM_sSEED',
set by the experiment: the trained Shakespeare byte model of the headline comparison, with its
temperatures) and is fine-tuned with the same architecture, temperatures and optimizer groups on
the passkey task among DECOYS decoys (data.passkey_decoys) in the 'compact' template
(data.passkey_template: no prefix, " The pass key is 41927." among " The door code is 12345."
sentences in random filler), which fits the byte models' T=256; the 'standard' template needs
~470 bytes with 3 decoys. Loss on the answer bytes only (" 41927": 6 targets per example), key
depth uniform. Only the label tells the key from a decoy, so token identity does not solve it.

Fine-tuning: STEPS x BATCH examples, AdamW at a constant LR after WARMUP steps (the temperature
group keeps configs/pretrain_arms.py's tau lr), the data order from SEED (the same for the three
arms of a seed). Test: greedy decoding of the answer on the same examples for every
run (task seed 0, split 'test'): LENGTHS x DEPTHS x NUM_EXAMPLES.
"""

from configs import pretrain_arms

ARMS = pretrain_arms.ARMS
DECOYS = 3
TEMPLATE = 'compact'
TRAIN_LEN = pretrain_arms.SEQ_LEN   # 256 bytes: the pre-trained models' context
BATCH = 16
# A pilot (vanilla seed 0, 300 steps x 32 with cosine decay to 1e-4) left the training answer loss
# at the uniform-digit level from step 50 on (1.90 nats/byte = ln 10 on each of the 5 digits, ~0
# on the space): the same examples went to twice the updates at a constant lr. 6 runs take ~30
# min of the 2-core CPU box.
STEPS = 600           # 600 x 16 = 9,600 training examples (2.5M tokens, 48k answer digits)
LR = 1e-3
WARMUP = 30
LENGTHS = (192, 256)  # both within the models' context (learned positions: no T > 256)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
NUM_EXAMPLES = 40     # per (length, depth) cell: 400 test examples per run


def get_config(arg: str = 'ssa,0'):
  arm, _, seed = str(arg).partition(',')
  c = pretrain_arms.get_config(f'{arm},{seed or 0}')
  c.model.preset = c.model.preset.replace('shakespeare-T', 'passkey-bytes-T')
  d = c.data
  d.dataset = 'passkey'
  d.passkey_decoys = DECOYS
  d.passkey_template = TEMPLATE
  d.passkey_depth = None
  d.passkey_num_examples = 64
  d.seq_len = TRAIN_LEN
  d.batch_size = BATCH
  d.eval_batches = 2
  d.num_threads = 1
  c.optim.lr = LR
  c.optim.schedule = 'constant'
  c.optim.warmup_steps = WARMUP
  c.train.num_steps = STEPS
  c.train.log_every = 25
  c.train.eval_every = -1
  c.train.eval_at_start = False
  c.checkpoint.every = 100      # resumable: an interrupted run loses at most 100 steps
  c.checkpoint.keep = 1
  c.eval.batch_size = 40
  return c
