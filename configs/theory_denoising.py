"""Theory experiment (b): denoising, vanilla vs value-selective attention vs naive vs Bayes.

    python -m ssa.experiments.denoising --config=configs/theory_denoising.py:small --outdir=DIR

The task is ssa/data/synthetic.py's denoising task (hidden mean mu ~ N(0, I_d); k signal tokens
mu + sigma_signal * eps, n - k noise tokens sigma_noise * eps, a last channel flags signal). The
experiment draws k uniformly in [num_signal_min, num_signal_max] per example (docs/theory.md
explains why a fixed k makes vanilla attention Bayes-optimal and the comparison empty).
Sizes: 'small' (about 1.5 minutes on a 2-core CPU, all seeds) and 'paper' (more steps and seeds).
"""

import ml_collections

SIZES = ('small', 'paper')


def get_config(size: str = 'small') -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f'configs/theory_denoising.py: unknown size {size!r}; expected one of {SIZES}.')
  c = ml_collections.ConfigDict()
  c.size = size                   # informational: which preset these values came from
  c.num_tokens = 32               # n: context tokens per example
  c.dim = 8                       # d: dimension of mu (tokens have d + 1 channels)
  c.num_signal_min = 1            # k ~ uniform integer in [num_signal_min, num_signal_max] per example
  c.num_signal_max = 16
  c.sigma_signal = 2.0            # signal token = mu + sigma_signal * eps
  c.sigma_noise = 8.0             # noise token = sigma_noise * eps
  c.key_dim = 16                  # d_k of the learned query vector and the key map
  c.value_dim = 16                # d_v of the value map (read out by a d_v x d matrix)
  c.weight_sharing = True         # tau_v reads the value projection x W_v + b_v (docs/ssa.md §1.2); False = its own d+1 x d_v projection
  c.batch_size = 128              # fresh examples per Adam step
  c.num_steps = 2000              # Adam steps
  c.lr = 1e-2                     # Adam peak learning rate (linear warm-up, then cosine decay to 0)
  c.warmup_steps = 100            # linear warm-up steps from 0 to lr (0 = none)
  c.grad_clip = 1.0               # clip the gradient to this global norm before Adam (0 = off)
  c.input_norm = True             # divide each input channel by its RMS on one training batch (fixed, both models)
  c.num_seeds = 5                 # seeds 0..num_seeds-1 (init and training batches)
  c.eval_per_k = 512              # test examples per value of k (synthetic.denoising_example, split 'test')
  c.log_points = 20               # loss-curve points kept in the JSON
  if size == 'paper':
    c.num_steps = 20000
    c.num_seeds = 10
    c.eval_per_k = 4096
  c.lock()
  return c
