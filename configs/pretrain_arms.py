"""Three-arm pre-training comparison: vanilla vs position-only vs SSA (docs/results.md §1;
ssa/experiments/pretrain_arms.py).

    python -m ssa.experiments.pretrain_arms --workdir=runs/pretrain_arms \
        --results=docs/results/pretrain_arms --seeds=0,1,2,3
    python -m ssa.experiments.pretrain_arms --size=gpu --workdir=runs/pretrain_arms_gpu \
        --results=docs/results/pretrain_arms_gpu --seeds=0    # one H100/H200 (not run yet)

A byte-level GPT (GPT-2 layout, 4 layers, D=128, 4 heads of 32, d_ff 512) trained from scratch on
the embedded Shakespeare plays at T=256, batch 8, for STEPS steps (AdamW 2e-3, warmup 100, cosine
to 2e-4: the quick start's recipe and its 2,048 tokens per step). A first try at batch 16 for 500
steps (2.05M tokens) ended on the byte models' bigram plateau (test 2.505 nats/byte for vanilla
seed 0 against the bigram's 2.524): the quick start leaves that plateau only after ~1,000 steps,
so the budget went to steps (1,500 x 2,048 = 3.07M tokens per run). 10% of the plays are
held out as 'test' (scored once per run, >= 100k positions) and 10% as 'validation' (the loss
curve during training). The argument is 'ARM', 'ARM,SEED' or 'ARM,SEED,SIZE' (SIZE 'cpu', the
default, or 'gpu'); config.seed = data.seed = SEED, so
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

Size 'gpu' (prepared for one H100/H200, not run on this project's CPU machine): GPT-2 124M at
T=1024, GPT-2 BPE, bf16 compute with f32 params, batch 32 x 1024, GPU_STEPS steps (the paper's
GPT-2 recipe: AdamW 6e-4 -> 6e-5, warmup 100 here), the same Shakespeare plays and splits, test
scored on GPU_EVAL_BATCHES batches. Sized to about 3 minutes per run on one H100 at ~35% MFU
(an estimate: 124M params x 6 + attention ~ 0.85 GFLOP/token, ~10M tokens per run); ~7 epochs of
the plays, so expect overfitting late in the run: compare the arms, not the absolute loss.
"""

from configs import shakespeare

ARMS = ('vanilla', 'pts', 'ssa')
SEQ_LEN = 256
BATCH = 8
STEPS = 1500          # 1500 x 8 x 256 = 3.07M training tokens per run (12 runs in ~80 min idle)
EVAL_POINTS = 10      # validation-curve points per run (every STEPS / EVAL_POINTS steps)
CURVE_BATCHES = 8     # validation batches per curve point (16,384 positions)
TEST_BATCHES = 50     # test batches scored once per run (50 x 8 x 256 = 102,400 positions)
SIZES = ('cpu', 'gpu')
GPU_STEPS = 300       # 300 x 32 x 1024 = 9.8M training tokens per run
GPU_EVAL_BATCHES = 4  # 4 x 32 x 1024 = 131,072 test positions


def get_config(arg: str = 'ssa'):
  arm, _, rest = str(arg).partition(',')
  seed, _, size = rest.partition(',')
  size = size or 'cpu'
  if size not in SIZES:
    raise ValueError(f'configs/pretrain_arms.py: unknown size {size!r} in {arg!r}; expected one '
                     f'of {list(SIZES)}.')
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
  c.optim.warmup_steps = 100
  c.train.num_steps = STEPS
  c.train.eval_every = STEPS // EVAL_POINTS
  c.train.eval_at_start = True
  c.train.log_every = 50
  c.checkpoint.every = 250       # resumable: an interrupted run loses at most 250 steps
  c.checkpoint.keep = 1
  if size == 'gpu':
    _gpu(c)
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


def _gpu(c) -> None:
  """GPT-2 124M, T=1024, bf16 (size 'gpu'); data, splits, seeds and arms as the CPU size."""
  from configs import presets  # pylint: disable=g-import-not-at-top
  keep = {k: c.model[k] for k in ('preset',)}
  presets.apply(c, 'gpt2-124m')
  c.model.preset = keep['preset'].replace(f'shakespeare-T{SEQ_LEN}', 'gpt2-124m-T1024')
  c.model.max_len = 1024
  c.model.dtype = 'bfloat16'
  c.data.tokenizer = 'gpt2'
  c.data.seq_len = 1024
  c.data.batch_size = 32
  c.data.num_threads = 4
  c.optim.lr = 6e-4
  c.optim.warmup_steps = 100
  c.train.num_steps = GPU_STEPS
  c.train.eval_every = GPU_STEPS // EVAL_POINTS
  c.train.log_every = 10
  c.checkpoint.every = 100
