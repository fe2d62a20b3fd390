"""Base config: every field of the project, each with a one-line comment.

Use with ml_collections config_flags, the argument after ':' picks a model preset:

    python <entry>.py --config=configs/base.py:gpt2-124m --config.ssa.strategy=vanilla

Presets (see configs/presets.py): gpt2-tiny, gpt2-124m, gpt2-355m, pythia-160m, pythia-410m,
llama-tiny, smollm2-135m, tinyllama-1.1b. The sections `model` and `ssa` are declared once, as the
typed views ModelConfig and SSAConfig in ssa/config_lib.py (docs/ssa.md §1.4 explains the SSA
switches); the other sections are declared here. `ssa.config_lib.validate(config, mesh)` checks
every field and names any bad one.
"""

import ml_collections

from configs import eval_defaults
from configs import presets
from ssa import config_lib

# A field whose default is None but that can be set from the command line (--config.x=value).
_opt = ml_collections.config_dict.placeholder


def model_config() -> ml_collections.ConfigDict:
  """Transformer shape and family switches: the fields of ssa.config_lib.ModelConfig (declared and
  documented there, defaults = gpt2-tiny), plus the training-only field below."""
  m = config_lib.config_dict(config_lib.ModelConfig)
  m.init_from = ''               # fresh runs only: '' = random init | 'hf:PATH_OR_REPO' | 'gguf:PATH' | 'ssa:DIR' pretrained weights (shapes must match)
  return m


def ssa_config() -> ml_collections.ConfigDict:
  """Selective Self-Attention switches: the fields of ssa.config_lib.SSAConfig (declared and
  documented there; docs/ssa.md §1.4). Defaults = the paper's final SSA."""
  return config_lib.config_dict(config_lib.SSAConfig)


def data_config() -> ml_collections.ConfigDict:
  """Dataset, tokenizer and input pipeline (ssa/data)."""
  d = ml_collections.ConfigDict()
  d.dataset = 'shakespeare'      # 'shakespeare' (embedded) | 'local_text:P1,P2' or a path | tfds name | 'passkey' | 'graph'
  d.tokenizer = 'gpt2'           # 'byte' | 'gpt2' | 'sentencepiece:PATH' | 'hf:PATH' | 'gguf:PATH' (ssa/data/tokenizers.py)
  d.eos_token = _opt(str)        # 'hf:' tokenizers only: EOS token string (None = first of the usual names found)
  d.seq_len = 128                # tokens per training sequence T
  d.batch_size = 8               # global batch size (sequences per step); each process loads batch_size / processes
  d.seed = 0                     # shuffle seed (documents are reshuffled every epoch) and synthetic-task seed
  d.shuffle = True               # shuffle documents for training (eval never shuffles)
  d.num_epochs = _opt(int)       # training epochs over the data; None = repeat forever
  d.data_dir = '~/.cache/ssa_data'  # cache root: downloads, tfds array_record builds, pre-tokenized arrays
  d.tfds_data_dir = _opt(str)    # tfds catalog datasets: data_dir (local or gs://bucket/tensorflow_datasets); None = <data_dir>/tfds
  d.tfds_download = False        # tfds catalog datasets: True = download and prepare if not prepared in tfds_data_dir (needs network); False = DataError if not prepared
  d.text_key = 'text'            # tfds catalog datasets: record feature that holds the document text
  d.train_split = 'train'        # split used for training
  d.eval_split = 'validation'    # split used for evaluation
  d.file_pattern = '*.txt'       # local_text: file names read inside folders (fnmatch)
  d.doc_unit = 'file'            # local_text: what one document is: 'file' | 'paragraph' | 'line'
  d.validation_fraction = 0.1    # local_text: fraction of documents in validation (hash rule, ssa/data/local_text.py)
  d.test_fraction = 0.0          # local_text: fraction of documents in test (0 = no test split)
  d.pretokenize = False          # tokenize each split once and cache it under data_dir (fast epochs; whole split up front)
  d.num_threads = 4              # grain threads that read and tokenize documents
  d.eval_batches = _opt(int)     # eval batches per process (pads/truncates so hosts stay in step); None = one full pass
  d.passkey_depth = 0.5          # dataset='passkey': relative depth of the key in the filler (0 = start, 1 = end); None = random
  d.passkey_decoys = 0           # dataset='passkey': decoy numbers with other labels ("The door code is 41927...") and random filler; 0 = the classic task (ssa/data/synthetic.py)
  d.passkey_template = 'standard'  # dataset='passkey': 'standard' | 'compact' (no prefix, key and decoy sentences once: for byte-level models at short T; ssa/data/synthetic.py)
  d.passkey_num_examples = 1000  # dataset='passkey': examples per split (eval); training draws fresh ones forever
  d.graph_num_nodes = 64         # dataset='graph': nodes = token ids 0..n-1 of the random graph
  d.graph_min_degree = 1         # dataset='graph': smallest out-degree
  d.graph_max_degree = 16        # dataset='graph': largest out-degree (degrees uniform in [min, max])
  return d


def mesh_config() -> ml_collections.ConfigDict:
  """Device mesh (data, fsdp, tensor) and the logical-axis -> mesh-axis table (ssa/sharding.py)."""
  m = ml_collections.ConfigDict()
  m.data = -1                    # size of the 'data' axis (pure data parallelism); -1 = all devices left over
  m.fsdp = 1                     # size of the 'fsdp' axis: batch AND parameters/optimizer state sharded over it
  m.tensor = 1                   # size of the 'tensor' axis: heads / MLP / vocab dimensions sharded over it
  r = ml_collections.ConfigDict()  # logical axis name -> mesh axes ('a' or 'a,b'); None/'' = replicated
  r.batch = 'data,fsdp'          # batch dimension of inputs and activations
  r.vocab = 'tensor'             # embedding-table rows / output-head columns
  r.embed = 'fsdp'               # model width D of every weight (ZeRO-3 style sharding)
  r.heads = 'tensor'             # query heads
  r.kv_heads = 'tensor'          # key/value heads (set None when n_kv_heads < mesh.tensor)
  r.head_dim = ml_collections.config_dict.placeholder(str)  # per-head width (None: replicated)
  r.mlp = 'tensor'               # MLP hidden width
  m.rules = r
  return m


def optim_config() -> ml_collections.ConfigDict:
  """Optimizer (ssa/optim.py). Defaults = the paper's GPT-2 pre-training recipe (docs/ssa.md §2)."""
  o = ml_collections.ConfigDict()
  o.mode = 'full'                # 'full' (all parameters train) | 'temperature_only' (only tau_* train; rest frozen, no state)
  o.optimizer = 'adamw'          # optimizer of the base group: 'adamw' | 'adam' | 'sgd'
  o.lr = 6e-4                    # peak learning rate of the base group
  o.schedule = 'cosine'          # 'cosine' (linear warmup, cosine decay to min_lr_ratio * lr) | 'constant' (warmup, then flat)
  o.warmup_steps = 2000          # linear warmup steps from 0 to lr
  o.decay_steps = 0              # cosine: steps from 0 to the end of decay (incl. warmup); 0 = train.num_steps
  o.min_lr_ratio = 0.1           # cosine: final lr = min_lr_ratio * lr (6e-4 -> 6e-5)
  o.b1 = 0.9                     # Adam beta1 (sgd is plain SGD, no momentum)
  o.b2 = 0.95                    # Adam beta2
  o.eps = 1e-8                   # Adam epsilon
  o.weight_decay = 0.1           # decoupled weight decay (adamw); never on norms, biases or temperature params
  o.clip_norm = 1.0              # clip the global gradient norm (all trainable params) to this; 0 = off
  o.temperature_group = False    # True: tau_* params get their own optimizer and lr (fields tau_*)
  o.tau_optimizer = 'adam'       # temperature group optimizer: 'adam' | 'adamw' | 'sgd'
  o.tau_lr = 1e-4                # temperature group peak learning rate
  o.tau_schedule = 'constant'    # temperature group schedule: 'constant' | 'cosine' (same warmup/decay steps)
  o.tau_weight_decay = 0.0       # temperature group weight decay (tau_optimizer='adamw' only)
  return o


def train_config() -> ml_collections.ConfigDict:
  """Training loop (ssa/train_lib.py)."""
  t = ml_collections.ConfigDict()
  t.num_steps = 1000             # optimizer steps to train (a resumed run stops at the same total)
  t.micro_batches = 1            # gradient accumulation: split each global batch into this many micro-batches
  t.data_split = 'process'       # 'process': each process reads its own documents | 'global': each reads the global batch, keeps its rows
  t.log_every = 10               # steps between metric logs (progress bar, metrics.jsonl, TensorBoard)
  t.eval_every = 200             # steps between validation runs (0 = only at the end; -1 = never)
  t.eval_at_start = False        # fresh runs: also evaluate before the first step (logged as step 0)
  t.nan_guard = True             # stop (after saving the last good state) on a non-finite loss or gradient
  t.nan_guard_state = False      # the guard also checks every updated param / optimizer-state value (slower; for optimizers that can turn finite gradients into NaN)
  t.inject_nan_at_step = -1      # fault injection for tests: step (1-based) whose loss becomes NaN; -1 = off
  t.log_temperatures = True      # log the mean learned temperature of each layer (tau_q, tau_k, tau_v)
  t.peak_flops_per_device = 0.0  # for MFU: peak FLOP/s of one device; 0 = table by device kind (CPU: measured matmul)
  t.progress_bar = True          # tqdm progress bar on process 0
  t.tensorboard = True           # write TensorBoard event files (tensorboardX) under workdir/tb
  t.summary_sample_tokens = 64   # train.py's end-of-run summary: sample this many tokens of a language model (0 = no sample)
  t.frequency_batches = 50       # ssa.strategy='frequency': unigram counts for the tau table from this many train batches
  return t


def checkpoint_config() -> ml_collections.ConfigDict:
  """Checkpoints (ssa/checkpoint.py; orbax CheckpointManager under workdir/checkpoints)."""
  k = ml_collections.ConfigDict()
  k.every = 500                  # steps between checkpoints (also saved at the end and on SIGTERM/SIGINT); 0 = end only
  k.keep = 3                     # keep the last this many checkpoints (0 = all)
  k.async_save = True            # write checkpoints in a background thread (training continues)
  k.restore = True               # resume from the latest checkpoint in workdir if there is one
  k.fallback = False             # if the latest checkpoint's files cannot be read (corrupt, truncated), set it aside and try older ones (else: error naming it); never for a config mismatch
  k.overwrite = False            # with restore=False: delete the run already in the workdir (checkpoints, metrics, tb, run_config.json) instead of refusing
  k.allow_changes = ''           # resume although these fields differ from the run's saved config: 'optim.lr,data.batch_size' or '*' (README "Failure behaviour")
  return k


def get_config(preset: str = 'gpt2-tiny') -> ml_collections.ConfigDict:
  """Full config; `preset` names a model preset from configs/presets.py."""
  c = ml_collections.ConfigDict()
  c.seed = 0                     # seed of parameter init and dropout-free training RNG
  c.model = model_config()
  c.ssa = ssa_config()
  c.data = data_config()
  c.mesh = mesh_config()
  c.optim = optim_config()
  c.train = train_config()
  c.checkpoint = checkpoint_config()
  c.eval = eval_defaults.eval_config()  # evaluation (configs/eval_defaults.py documents each field)
  presets.apply(c, preset or 'gpt2-tiny')
  c.lock()  # a typo in a field name (here or in --config.x=...) fails at once, naming it
  return c
