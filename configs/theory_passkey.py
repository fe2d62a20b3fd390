r"""Passkey theory experiment (docs/ssa.md §3): train vanilla and SSA at ONE length, test up to 4x longer.

    python -m ssa.experiments.passkey --config=configs/theory_passkey.py:small \
        --outdir=docs/figures/passkey --runs_root=runs/passkey

`get_config(size)`, size in ('small', 'paper'):

  small  CPU-sized (a few minutes per model on 2 cores). Word-level tokenizer built from the
         passkey template itself (ssa.experiments.passkey.word_tokenizer: 95 ids, every digit its
         own token, so the key is 5 tokens and a prompt without filler is 70 tokens), written to
         `experiment.tokenizer_path` on first use. GPT-2 block layout with rotary positions
         (model.pos_emb='rope', so the 4x longer contexts need no position table), 2 layers,
         D=64, 4 heads of 16. Trained at T=128 (58 filler tokens) with the key depth uniform per
         example (data.passkey_depth=None: a curriculum over all depths); loss only on the answer
         tokens. Grid: lengths 128 x (1, 1.5, 2, 3, 4), depths 0..1 step 0.25, 20 examples a cell;
         3 seeds per variant.
  paper  the accelerator setting: Pythia-160m shape (GPT-NeoX, rope on 25% of head_dim), GPT-2
         tokenizer, trained from scratch at T=512 and tested to 2048. Not run in this project yet.

`experiment` section (read only by ssa/experiments/passkey.py; the training code ignores it):
variants (name -> ssa.strategy), seeds, length_factors, depths, num_examples, eval_batch_size,
tokenizer_path. Everything else is the ordinary training config (configs/base.py documents each
field); --config.x=... overrides work as in train.py.
"""

import ml_collections

from configs import base

SIZES = ('small', 'paper')


def _experiment(**kw) -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  e.variants = ('vanilla', 'ssa')   # runs per seed; each name is also its ssa.strategy
  e.seeds = (0, 1, 2)               # config.seed (init) and data.seed (examples) of each run
  e.length_factors = (1.0, 1.5, 2.0, 3.0, 4.0)  # eval lengths = round(factor * data.seq_len)
  e.depths = (0.0, 0.25, 0.5, 0.75, 1.0)        # eval key depths (relative position in the filler)
  e.num_examples = 20               # examples per (length, depth) cell (split 'test')
  e.eval_batch_size = 20            # prompts per greedy-decoding batch
  e.tokenizer_path = ''             # 'small': where the word tokenizer is written ('' = none)
  e.update(kw)
  return e


def get_config(size: str = 'small') -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f'configs/theory_passkey.py: size={size!r}; expected one of {SIZES}.')
  if size == 'small':
    c = base.get_config('gpt2-tiny')
    c.model.preset = 'passkey-small'
    c.model.pos_emb = 'rope'
    c.model.vocab_size = 95          # ssa.experiments.passkey.word_tokenizer (checked at start)
    c.model.vocab_pad_multiple = 32
    c.model.d_model = 64
    c.model.n_layers = 2
    c.model.n_heads = 4
    c.model.n_kv_heads = 4
    c.model.head_dim = 16
    c.model.d_ff = 256
    c.model.max_len = 512            # kv-cache length = the longest eval context (4 x 128)
    tok_path = '~/.cache/ssa_data/passkey_words/tokenizer.json'
    c.data.tokenizer = 'hf:' + tok_path
    c.data.seq_len = 128
    c.data.batch_size = 32
    c.data.eval_batches = 2
    c.data.passkey_num_examples = 64
    c.data.num_threads = 1
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.num_steps = 250
    c.train.log_every = 50
    c.train.eval_every = 0            # validation loss only at the end
    c.train.progress_bar = False
    c.train.tensorboard = False
    c.checkpoint.every = 0            # end only
    c.checkpoint.keep = 1
    c.checkpoint.async_save = False
    c.eval.batch_size = 20
    exp = _experiment(tokenizer_path=tok_path)
  else:
    c = base.get_config('pythia-160m')
    c.data.tokenizer = 'gpt2'
    c.data.seq_len = 512
    c.data.batch_size = 32
    c.data.eval_batches = 4
    c.data.passkey_num_examples = 256
    c.model.max_len = 2048           # 4 x 512 (rope: kv-cache length only)
    c.model.dtype = 'bfloat16'
    c.optim.lr = 6e-4
    c.optim.warmup_steps = 500
    c.train.num_steps = 20000
    c.train.log_every = 100
    c.train.eval_every = 2000
    c.checkpoint.every = 2000
    c.eval.batch_size = 16
    exp = _experiment(num_examples=50, eval_batch_size=16)
  c.data.dataset = 'passkey'
  c.data.passkey_depth = None        # key depth uniform per training example (depth curriculum)
  c.unlock()
  c.experiment = exp
  c.lock()
  return c
