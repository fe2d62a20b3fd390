"""Theory experiment (a): graph next-token toy, vanilla vs SSA (docs/theory.md; docs/ssa.md §3 (a)).

    python -m ssa.experiments.graph_toy --config=configs/theory_graph.py:small --outdir=DIR

Sizes: 'small' (a minute or so on a 2-core CPU, all seeds) and 'paper' (bigger graph, more seeds
and steps). The paper's exact settings are not public: these are the project's own.
"""

import ml_collections

SIZES = ('small', 'paper')


def get_config(size: str = 'small') -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f'configs/theory_graph.py: unknown size {size!r}; expected one of {SIZES}.')
  c = ml_collections.ConfigDict()
  c.size = size                   # informational: which preset these values came from
  c.num_nodes = 32                # V: graph nodes = vocabulary size
  c.min_degree = 1                # out-degree of each node ~ uniform integer in [min_degree, max_degree]
  c.max_degree = 8
  c.graph_seed = 0                # graph of seed s is Graph(..., seed=graph_seed + s): a new graph per seed
  c.embed_dim = 32                # d: fixed random Gaussian embeddings e_j ~ N(0, I_d / d); d >= V
  c.key_dim = 32                  # d_k: W_q, W_k are d x d_k
  c.init_std = 1.0                # W_q, W_k entries ~ N(0, init_std^2 / d)
  c.tau_forms = ('tanh', 'softplus')  # one SSA model per form: 'tanh' tau = 1 + tanh(u.gelu(e_i W_q)) (docs/ssa.md §1.2, in (0, 2)); 'softplus' tau = softplus(u.gelu(e_i W_q) + log(e - 1)) (unbounded)
  c.num_steps = 2000              # full-batch Adam steps (all V query nodes per step)
  c.lr = 1e-2                     # Adam learning rate (constant)
  c.weight_decay = 1.0            # decoupled weight decay (optax.adamw, per step lr * wd) on W_q, W_k and u; 0 = plain Adam
  c.num_seeds = 10                # seeds 0..num_seeds-1 (graph, embeddings and init differ per seed)
  c.log_points = 20               # loss-curve points kept in the JSON
  if size == 'paper':
    c.num_nodes = 64
    c.max_degree = 16
    c.embed_dim = 64
    c.key_dim = 64
    c.num_steps = 10000
    c.num_seeds = 20
  c.lock()
  return c
