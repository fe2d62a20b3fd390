"""Evaluation section `config.eval` (eval.py, ssa/evaluation): every field with a one-line comment.

    python eval.py --config=configs/tiny.py --workdir=/tmp/ssa_tiny \
        --config.eval.zero_shot_dir=~/lm_tasks --config.eval.passkey=True
"""

import ml_collections
from ml_collections import config_dict

_STR = lambda: config_dict.placeholder(str)  # noqa: E731  (None, overridable from the command line)
_INT = lambda: config_dict.placeholder(int)  # noqa: E731


def eval_config() -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  e.output_dir = _STR()       # where eval_results.json and figures go; None = <workdir>/eval (or next to --checkpoint)
  e.step = _INT()             # checkpoint step to evaluate; None = the latest
  e.batch_size = 8               # rows per scoring / generation batch (fixed shapes; lengths padded to power-of-two buckets)
  e.max_len = _INT()          # scoring context length in tokens; None = model.max_len
  # --- perplexity (ssa/evaluation/perplexity.py) ---
  e.splits = ()                  # splits of data.dataset scored for token-level loss/ppl and document word ppl; () = (data.eval_split,)
  e.token_perplexity = True      # token-level loss/perplexity over packed eval batches of each split
  e.ppl_batches = _INT()      # eval batches per split for token ppl; None = data.eval_batches (None = full pass)
  e.word_perplexity = True       # document-level word/byte/token perplexity (rolling windows) of each split
  e.word_ppl_max_docs = 50       # documents per split scored for word perplexity; None = all
  e.rolling_stride = _INT()   # tokens predicted per rolling window after the first; None = max_len (lm-eval-harness)
  e.wikitext_jsonl = _STR()   # JSONL with field 'page' (wikitext_document_level layout) -> 'wikitext:*' keys
  e.wikitext_detokenize = True   # apply the harness's wikitext detokenizer before scoring (words counted on the raw page)
  # --- zero-shot multiple choice (ssa/evaluation/zero_shot.py) ---
  e.zero_shot_dir = _STR()    # folder with <task>.jsonl files in the tasks' public layouts; None = skip zero-shot
  e.zero_shot_tasks = ('lambada_standard', 'piqa', 'hellaswag', 'winogrande', 'arc_easy', 'arc_challenge')  # tasks read from zero_shot_dir
  e.zero_shot_limit = _INT()  # first N >= 1 records of each task; None = all (0 is an error)
  # --- passkey retrieval (ssa/evaluation/passkey.py) ---
  e.passkey = False              # run the passkey grid (greedy decoding of the five digits)
  e.passkey_lengths = (64, 128)  # context lengths T of the grid (tokens; <= model.max_len)
  e.passkey_depths = (0.0, 0.25, 0.5, 0.75, 1.0)  # relative key depths of the grid
  e.passkey_num_examples = 10    # examples per (length, depth) cell
  # --- attention statistics and figures (ssa/evaluation/attention_stats.py, ssa/plots.py) ---
  e.attention_stats = True       # dilution / entropy / temperature numbers + figures from the reference kernel
  e.attention_num_seqs = 4       # sequences of the first eval batch used for attention statistics
  e.attention_text = _STR()   # text for Figure 1 (token temperatures); None = the first attention row (documents of the first split scored); '' is an error
  e.fig1_layer = -1              # layer index i (layer_i, must have tau_q) whose query temperature colours Figure 1; -1 = mean over the layers with tau_q
  e.compare_workdir = _STR()  # another run's output_dir (e.g. vanilla): its attention_stats.json is plotted beside ours
  e.figures = True               # write PNG/HTML figures (numbers are always written as JSON)
  # --- generation (ssa/evaluation/generation.py; eval.py --prompt=...) ---
  e.max_new_tokens = 64          # tokens sampled per completion
  e.temperature = 0.8            # sampling temperature; 0 = greedy (argmax)
  e.top_k = 0                    # keep the k most likely tokens; 0 = off
  e.top_p = 1.0                  # nucleus sampling mass; 1.0 = off
  e.num_samples = 1              # completions printed per prompt
  e.sample_seed = 0              # PRNG seed of sampling
  return e
