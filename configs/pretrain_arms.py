"""Three-arm pre-training comparison: vanilla vs position-only vs SSA (docs/results.md §1;
ssa/experiments/pretrain_arms.py).

    python -m ssa.experiments.pretrain_arms --workdir=runs/pretrain_arms \
        --results=docs/results/pretrain_arms --seeds=0,1,2,3

A byte-level GPT (GPT-2 layout, 4 layers, D=128, 4 heads of 32, d_ff 512) trained from scratch on
the embedded Shakespeare plays at T=256, batch 16, for STEPS steps (AdamW 2e-3, warmup 50, cosine
to 2e-4: the quick start's recipe, fixed before any result here was seen). 10% of the plays are
held out as 'test' (scored once per run, >= 100k positions) and 10% as 'validation' (the loss
curve during training). The argument is 'ARM' or 'ARM,SEED'; config.seed = data.seed = SEED, so
the three arms of one seed start from the same base weights (the temperature parameters are extra
leaves; Flax derives every other leaf's init from its own path) and read the same batches.

Arms (the temperatures use one parametrisation in both temperature arms, so the arms differ only
by the terms they have):
  vanilla   no temperature (ssa.strategy='vanilla')
  pts       position term on q only: tau_q = max(0.05, 1 + theta log n), theta per head from 0
            (slope 'linear', the project's parametrisation that moves from the identity at the
            optimizer's pace; the release's exp(-exp(theta)) from theta 1.5 hardly moves in a
            budget this size, see docs/results.md)
  ssa       the final SSA: q position + token term, v token term (weight sharing), same slope
"""

from configs import shakespeare

ARMS = ('vanilla', 'pts', 'ssa')
SEQ_LEN = 256
BATCH = 16
STEPS = 500           # 500 x 16 x 256 = 2.05M training tokens per run (12 runs in ~60 min idle)
EVAL_POINTS = 10      # validation-curve points per run (every STEPS / EVAL_POINTS steps)
CURVE_BATCHES = 4     # validation batches per curve point (16,384 positions)


def get_config(arg: str = 'ssa'):
  arm, _, seed = str(arg).partition(',')
  if arm not in ARMS:
    raise ValueError(f'configs/pretrain_arms.py: unknown arm {arm!r}; expected one of '
                     f'{list(ARMS)} (optionally ",SEED").')
  try:
    seed = int(seed) if seed else 0
  except ValueError:
    raise ValueError(f'configs/pretrain_arms.py: seed {seed!r} in {arg!r} is not an integer.')
  c = shakespeare.get_config()
  c.model.preset = f'shakespeare-T{SEQ_LEN}-{arm}'
  c.model.max_len = SEQ_LEN
  c.seed = seed
  c.data.seed = seed
  c.data.seq_len = SEQ_LEN
  c.data.batch_size = BATCH
  c.data.test_fraction = 0.1
  c.data.eval_batches = CURVE_BATCHES
  c.optim.warmup_steps = 50
  c.train.num_steps = STEPS
  c.train.eval_every = STEPS // EVAL_POINTS
  c.train.eval_at_start = True
  c.train.log_every = 50
  c.checkpoint.every = 100       # resumable: an interrupted run loses at most 100 steps
  c.checkpoint.keep = 1
  s = c.ssa
  if arm == 'vanilla':
    s.strategy = 'vanilla'
  else:
    s.strategy = 'ssa'
    s.slope = 'linear'
    s.theta_init = 0.0
    s.linear_min_tau = 0.05
    s.k = 'none'
    s.q, s.v = ('pos', 'none') if arm == 'pts' else ('pos+tok', 'tok')
  return c
