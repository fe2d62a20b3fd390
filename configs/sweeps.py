r"""Ablation sweeps of the paper (docs/ssa.md §1.4): one sweep per appendix table, two model sizes.

One run of a sweep is one config (the argument is SWEEP,SIZE,VARIANT):

    python train.py --config=configs/sweeps.py:strategies,small,yarn --workdir=runs/x \
        --config.seed=1 --config.data.seed=1
    python train.py --config=configs/sweeps.py:strategies,paper,yarn --workdir=gs://B/runs/yarn_s1 \
        --config.seed=1 --config.data.seed=1 --multihost                     # TPU pod (docs/tpu.md)

Whole sweeps (every variant x seed, run one after the other, skipped when done; table at the end):

    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --root=runs/sweeps
    python sweep.py --sweep=all --size=paper --seeds=0 --root=gs://B/sweeps --print_commands

Sizes:
  small  byte-level Shakespeare, GPT-2 layout, 2 layers, D=128, 4 heads of 32, T=64, batch 16,
         300 steps (AdamW 3e-3, warmup 30, cosine to 3e-4); validation (8 batches) at step 0 and
         every 60 steps (6 points of the validation curve per run); checkpoint every 150 steps.
         One run: 23-45 s wall on the idle 2-core dev CPU (compile and evals included; up to
         96 s when the box was shared); final val loss 2.55-2.77 nats/byte (docs/results.md).
  paper  the GPT-2 124M pre-training recipe (configs/gpt2_124m_pretrain.py, docs/ssa.md §2) plus a
         validation at step 0; for GPU / TPU.

Variants have ONE name each, the same in every sweep (a run is shared by all sweeps that list its
variant; `python sweep.py --sweep=all` trains it once):

  vanilla             ssa.strategy=vanilla (no temperature)
  ssa                 the paper's final SSA = configs/base.py defaults: q pos+tok, k none, v tok,
                      exp_exp slope, per-head theta and u, weight sharing, add
  q k v qk qv kv qkv  strategy ssa with the named embeddings scaled, each by BOTH terms (pos+tok),
                      the others unscaled ('qv' is not 'ssa': there v gets the token term only)
  q_pos q_tok         only q scaled, by the position term / the token term ('q' = both)
  v_pos v_tok         only v scaled, by the position term / the token term ('v' = both)
  constant yarn frequency pts   the strategy baselines; yarn's fixed factor is the YaRN
                      temperature of a 4x context extension, 0.1 ln 4 + 1 = 1.139
                      (yarn_train_len = T, yarn_context_len = 4T)
  ssa_no_sharing      ssa with weight_sharing=False (a new d x (H d_h) matrix per layer)
  ssa_sigmoid         ssa with slope=sigmoid
  ssa_linear          ssa with slope=linear, tau clamped to >= 0.05 (ssa.linear_min_tau)
  ssa_layer           ssa with granularity=layer (one theta and one u per layer)
  ssa_mul             ssa with combine=mul: tau_pos * (1 + tanh f)

Sweeps (vanilla is in each, so every table has its delta-vs-vanilla column):
  embeddings   vanilla q k v qk qv kv qkv
  terms        vanilla q_pos q_tok q v_pos v_tok v
  strategies   vanilla constant yarn frequency pts ssa
  sharing      vanilla ssa ssa_no_sharing
  slope        vanilla ssa(exp_exp) ssa_sigmoid ssa_linear
  granularity  vanilla ssa(head) ssa_layer
  combine      vanilla ssa(add) ssa_mul
  efficiency   vanilla ssa: the runs of the training-efficiency experiment, trained with a longer
               budget and denser validation through --set (docs/results.md gives the command)
"""

from __future__ import annotations

import ml_collections

from configs import base
from configs import gpt2_124m_pretrain
from configs import shakespeare
from ssa.config_lib import apply_overrides

SIZES = ('small', 'paper')

# The embeddings that can carry a temperature (config.ssa.q / .k / .v).
_EMB = ('q', 'k', 'v')


def _scaled(embeddings: str, terms: str = 'pos+tok') -> dict:
  """Strategy ssa with `terms` on each embedding named in `embeddings`, the others unscaled."""
  out = {'ssa.strategy': 'ssa'}
  for e in _EMB:
    out[f'ssa.{e}'] = terms if e in embeddings else 'none'
  return out


def _yarn(size: str) -> dict:
  t = base_config(size).data.seq_len
  return {'ssa.strategy': 'yarn', 'ssa.yarn_train_len': t, 'ssa.yarn_context_len': 4 * t}


def variants(size: str) -> dict[str, dict]:
  """Every variant name -> its overrides (dotted config field -> value) for `size`."""
  _check('size', size, SIZES)
  return {
      'vanilla': {'ssa.strategy': 'vanilla'},
      'ssa': {'ssa.strategy': 'ssa'},
      # which embeddings are scaled (each by pos+tok)
      'q': _scaled('q'), 'k': _scaled('k'), 'v': _scaled('v'),
      'qk': _scaled('qk'), 'qv': _scaled('qv'), 'kv': _scaled('kv'), 'qkv': _scaled('qkv'),
      # which terms (q alone, v alone)
      'q_pos': _scaled('q', 'pos'), 'q_tok': _scaled('q', 'tok'),
      'v_pos': _scaled('v', 'pos'), 'v_tok': _scaled('v', 'tok'),
      # strategy baselines
      'constant': {'ssa.strategy': 'constant'},
      'yarn': _yarn(size),
      'frequency': {'ssa.strategy': 'frequency'},
      'pts': {'ssa.strategy': 'pts'},
      # single switches of the final SSA
      'ssa_no_sharing': {'ssa.strategy': 'ssa', 'ssa.weight_sharing': False},
      'ssa_sigmoid': {'ssa.strategy': 'ssa', 'ssa.slope': 'sigmoid'},
      'ssa_linear': {'ssa.strategy': 'ssa', 'ssa.slope': 'linear', 'ssa.linear_min_tau': 0.05},
      'ssa_layer': {'ssa.strategy': 'ssa', 'ssa.granularity': 'layer'},
      'ssa_mul': {'ssa.strategy': 'ssa', 'ssa.combine': 'mul'},
  }


# sweep name -> variant names, in table order.
SWEEPS = {
    'embeddings': ('vanilla', 'q', 'k', 'v', 'qk', 'qv', 'kv', 'qkv'),
    'terms': ('vanilla', 'q_pos', 'q_tok', 'q', 'v_pos', 'v_tok', 'v'),
    'strategies': ('vanilla', 'constant', 'yarn', 'frequency', 'pts', 'ssa'),
    'sharing': ('vanilla', 'ssa', 'ssa_no_sharing'),
    'slope': ('vanilla', 'ssa', 'ssa_sigmoid', 'ssa_linear'),
    'granularity': ('vanilla', 'ssa', 'ssa_layer'),
    'combine': ('vanilla', 'ssa', 'ssa_mul'),
    'efficiency': ('vanilla', 'ssa'),  # ssa/experiments/efficiency.py (run with a longer budget)
}


def _check(what: str, value, allowed):
  if value not in allowed:
    raise ValueError(f'Unknown {what} {value!r}; expected one of {list(allowed)}.')


def get_sweep(name: str, size: str) -> list[tuple[str, dict]]:
  """[(variant name, {dotted field: value})] of sweep `name` at `size`, in table order."""
  _check('sweep', name, SWEEPS)
  table = variants(size)
  return [(v, dict(table[v])) for v in SWEEPS[name]]


def base_config(size: str) -> ml_collections.ConfigDict:
  """The config every variant of `size` starts from (final SSA, seed 0)."""
  _check('size', size, SIZES)
  if size == 'paper':
    c = gpt2_124m_pretrain.get_config()
    c.train.eval_at_start = True   # validation curve starts at step 0
    return c
  c = shakespeare.get_config()
  c.model.preset = 'sweep-small'
  c.model.d_model = 128
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.n_kv_heads = 4
  c.model.head_dim = 32
  c.model.d_ff = 512
  c.model.max_len = 64
  c.data.seq_len = 64
  c.data.batch_size = 16
  c.data.eval_batches = 8
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 30
  c.train.num_steps = 300
  c.train.log_every = 25
  c.train.eval_every = 60
  c.train.eval_at_start = True
  c.train.progress_bar = False
  c.train.tensorboard = False
  c.train.frequency_batches = 50
  c.checkpoint.every = 150
  c.checkpoint.keep = 1
  return c


def get_config(arg: str = 'strategies,small,ssa') -> ml_collections.ConfigDict:
  """Full config of one run; arg = 'SWEEP,SIZE,VARIANT' (VARIANT must belong to SWEEP)."""
  parts = [p.strip() for p in (arg or '').split(',')]
  if len(parts) != 3:
    raise ValueError(f'configs/sweeps.py:{arg}: expected SWEEP,SIZE,VARIANT, e.g. '
                     f'strategies,small,yarn; sweeps: {list(SWEEPS)}, sizes: {list(SIZES)}.')
  sweep, size, variant = parts
  _check('sweep', sweep, SWEEPS)
  _check('size', size, SIZES)
  runs = dict(get_sweep(sweep, size))
  if variant not in runs:
    raise ValueError(f'Unknown variant {variant!r} of sweep {sweep!r}; expected one of '
                     f'{list(runs)}.')
  c = base_config(size)
  return apply_overrides(c, runs[variant])
