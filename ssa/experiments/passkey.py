r"""Passkey length generalisation: vanilla vs SSA trained at ONE length, tested up to 4x longer.

    python -m ssa.experiments.passkey --config=configs/theory_passkey.py:small \
        --outdir=docs/figures/passkey --runs_root=runs/passkey

For every variant v in config.experiment.variants (each name is an ssa.strategy) and every seed s
in config.experiment.seeds:
  1. train: ssa.train_lib.train_and_evaluate on data.dataset='passkey' at T = data.seq_len, with
     config.seed = data.seed = s, into RUNS/<v>_s<s> (RUNS = --runs_root, default OUTDIR/runs).
     A run whose checkpoint already has train.num_steps is not trained again (reruns only redo
     the evaluation).
  2. evaluate: ssa.evaluation.passkey.evaluate_passkey (greedy kv-cache decoding of the answer)
     on the grid
        lengths = [round(f * data.seq_len) for f in experiment.length_factors]
        depths  = experiment.depths
     with experiment.num_examples examples per cell from split 'test' and task seed 0 (the SAME
     examples for every variant and seed, so the comparison is paired). Accuracy = exact match
     of the five digits; chance is 1e-5. The per-run grid goes to RUNS/<v>_s<s>/passkey_eval.json.

Aggregation (`aggregate`), per variant over its seeds, with std = sample std (ddof=1; 0 for one
seed):
  by_length[i] = mean/std over seeds of (mean over depths of accuracy[i][:])
  by_depth[j]  = mean/std over seeds of (mean over lengths of accuracy[:][j])
  cells[i][j]  = mean/std over seeds of accuracy[i][j];  overall = mean/std of the grid means.

Outputs in OUTDIR:
  passkey.json        {'meta': {...}, 'lengths', 'depths', 'length_factors',
                       'variants': {v: {'by_length': {'mean', 'std'}, 'by_depth': {'mean', 'std'},
                                        'cells': {'mean', 'std'}, 'overall': {'mean', 'std'},
                                        'per_seed': {s: {'accuracy', 'mean_accuracy',
                                        'final_train_loss', 'final_eval_loss', 'train_seconds',
                                        'eval_seconds', 'samples'}}}}}
  passkey_length.png  accuracy vs context length, one curve per variant, error bars = std
  passkey_depth.png   accuracy vs key depth (curves), and the length x depth grid per variant
and a summary table on stdout.

The 'small' config uses a word-level tokenizer built from the passkey template (`word_tokenizer`),
written to experiment.tokenizer_path when it is missing.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import time
from typing import Sequence

import numpy as np

from ssa import checkpoint as ckpt_lib
from ssa import cli
from ssa import metrics as metrics_lib
from ssa import plots
from ssa import train_lib
from ssa.data import get_tokenizer
from ssa.data import synthetic
from ssa.evaluation import generation, loading, passkey
from ssa.evaluation.scoring import LM
from ssa.experiments.common import write_json

# ----------------------------------------------------------------------------- tokenizer

WORD_SPECIAL = ('<|endoftext|>', '<unk>')


def word_vocab() -> list[str]:
  """Ids of the word tokenizer: EOS, UNK, the space marker, 10 digits, then template words."""
  texts = [synthetic.PASSKEY_PREFIX, *synthetic.FILLER_SENTENCES,
           synthetic.PASSKEY_SENTENCE.format(key=12345), synthetic.PASSKEY_QUESTION]
  words = sorted({w for t in texts for w in re.findall(r'[A-Za-z]+|[^\sA-Za-z0-9]', t)})
  vocab = list(WORD_SPECIAL) + ['\u2581'] + [str(d) for d in range(10)]
  vocab += [('\u2581' + w if w.isalpha() else w) for w in words] + words
  return list(dict.fromkeys(vocab))


def word_tokenizer(path: str) -> str:
  """Writes (if missing) a Hugging Face WordLevel tokenizer.json for the passkey template.

  Pre-tokenization: Metaspace (a space becomes '▁' glued to the next word) -> single digits ->
  punctuation; decoding reverses it exactly, so decode(encode(' 12345')) == ' 12345' and the
  answer is '▁' + five digit tokens. Returns the path.
  """
  path = os.path.expanduser(path)
  if os.path.isfile(path):
    return path
  # optional dependency: the Hugging Face tokenizers package (as for the 'hf:' tokenizers)
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  vocab = word_vocab()
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token='<unk>'))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='never'),
      pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Punctuation()])
  tok.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='never')
  tok.add_special_tokens(list(WORD_SPECIAL))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  tok.save(tmp)
  os.replace(tmp, path)
  return path


# ----------------------------------------------------------------------------- grid + aggregation

def eval_lengths(seq_len: int, factors: Sequence[float]) -> list[int]:
  """Context lengths of the grid: round(factor * seq_len), in the given order, duplicates kept."""
  if not factors or any(f <= 0 for f in factors):
    raise ValueError(f'experiment.length_factors={tuple(factors)}; expected positive numbers.')
  return [int(round(f * seq_len)) for f in factors]


def eval_grid(seq_len: int, factors: Sequence[float], depths: Sequence[float]):
  """[(length, depth)] cells, length-major (the row order of every accuracy grid)."""
  for d in depths:
    if not 0.0 <= d <= 1.0:
      raise ValueError(f'experiment.depths has {d}; expected numbers in [0, 1].')
  return [(t, float(d)) for t in eval_lengths(seq_len, factors) for d in depths]


def cell_accuracy(tokenizer, outputs: Sequence[Sequence[int]], keys: Sequence[int]) -> float:
  """Fraction of decoded outputs whose first number is exactly the key (passkey.is_correct)."""
  if len(outputs) != len(keys) or not keys:
    raise ValueError(f'{len(outputs)} outputs for {len(keys)} keys.')
  return sum(passkey.is_correct(tokenizer, o, k) for o, k in zip(outputs, keys)) / len(keys)


def _mean_std(x: np.ndarray) -> tuple[list, list]:
  std = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1:])
  return x.mean(axis=0).tolist(), np.asarray(std).tolist()


def aggregate(per_seed: dict) -> dict:
  """per_seed: {seed: accuracy grid [lengths][depths]} -> the summary of the module docstring."""
  if not per_seed:
    raise ValueError('aggregate: no seeds.')
  acc = np.asarray([per_seed[s] for s in sorted(per_seed)], np.float64)  # [S, L, D]
  if acc.ndim != 3:
    raise ValueError(f'aggregate: accuracy grids must be [lengths][depths], got shape {acc.shape[1:]}.')
  out = {}
  for name, x in (('by_length', acc.mean(axis=2)), ('by_depth', acc.mean(axis=1)),
                  ('cells', acc), ('overall', acc.mean(axis=(1, 2))[:, None])):
    m, s = _mean_std(x)
    out[name] = {'mean': m, 'std': s}
  out['overall'] = {'mean': out['overall']['mean'][0], 'std': out['overall']['std'][0]}
  out['num_seeds'] = int(acc.shape[0])
  return out


def summary_table(result: dict) -> str:
  """Markdown: one row per variant, columns = lengths then depths then overall (mean ± std)."""
  L, D = result['lengths'], result['depths']
  head = (['variant'] + [f'T={t}' for t in L] + [f'depth {d:g}' for d in D] + ['all'])
  rows = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for v, r in result['variants'].items():
    f = lambda m, s: f'{m:.3f} ± {s:.3f}'  # noqa: E731
    cells = ([f(m, s) for m, s in zip(r['by_length']['mean'], r['by_length']['std'])]
             + [f(m, s) for m, s in zip(r['by_depth']['mean'], r['by_depth']['std'])]
             + [f(r['overall']['mean'], r['overall']['std'])])
    rows.append('| ' + ' | '.join([v] + cells) + ' |')
  return '\n'.join(rows)


# ----------------------------------------------------------------------------- figures

def plot_length(result: dict, path: str) -> str:
  plt = plots._plt()  # pylint: disable=protected-access
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for v, r in result['variants'].items():
    ax.errorbar(result['lengths'], r['by_length']['mean'], yerr=r['by_length']['std'], marker='o',
                capsize=3, label=f'{v} (n={r["num_seeds"]} seeds)')
  ax.axvline(result['meta']['train_len'], color='k', alpha=0.3, ls='--', label='train length')
  ax.set_xlabel('context length (tokens)')
  ax.set_ylabel('passkey accuracy (mean over depths)')
  ax.set_ylim(-0.03, 1.03)
  ax.set_xticks(result['lengths'])
  ax.legend(fontsize=8)
  ax.set_title('passkey: trained at one length, tested longer')
  return plots._save(fig, path)  # pylint: disable=protected-access


def plot_depth(result: dict, path: str) -> str:
  plt = plots._plt()  # pylint: disable=protected-access
  names = list(result['variants'])
  fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.6 * (1 + len(names)), 3.8),
                           squeeze=False)
  ax = axes[0][0]
  for v in names:
    r = result['variants'][v]['by_depth']
    ax.errorbar(result['depths'], r['mean'], yerr=r['std'], marker='o', capsize=3, label=v)
  ax.set_xlabel('key depth')
  ax.set_ylabel('accuracy (mean over lengths)')
  ax.set_ylim(-0.03, 1.03)
  ax.legend(fontsize=8)
  for k, v in enumerate(names):
    ax = axes[0][k + 1]
    acc = np.asarray(result['variants'][v]['cells']['mean'])
    im = plots.accuracy_grid(ax, acc, result['lengths'], result['depths'], fontsize=7)
    ax.set_xlabel('context length')
    ax.set_ylabel('key depth')
    ax.set_title(f'{v}: mean over seeds')
  fig.colorbar(im, ax=axes[0][-1], label='accuracy')
  return plots._save(fig, path)  # pylint: disable=protected-access


# ----------------------------------------------------------------------------- runs

def run_config(config, variant: str, seed: int):
  """The training config of one run: ssa.strategy = variant, config.seed = data.seed = seed."""
  c = copy.deepcopy(config)
  c.ssa.strategy = variant
  c.seed = int(seed)
  c.data.seed = int(seed)
  return c


def _last_metrics(workdir: str) -> tuple:
  """(last train loss, last eval loss) of the run's metrics.jsonl (None where there is none)."""
  train = evl = None
  for rec in metrics_lib.read_metrics(workdir):
    if 'loss' in rec:
      if rec.get('kind') == 'eval' or 'perplexity' in rec:
        evl = rec['loss']
      else:
        train = rec.get('loss_mean', rec['loss'])
  return train, evl


def train_run(cfg, workdir: str, log=print) -> dict:
  """Trains unless workdir already holds this config's checkpoint at train.num_steps.

  A workdir trained with another config raises ValueError naming the fields; a run stopped by a
  signal raises SystemExit (its checkpoint is saved: rerun to resume), so that no half-trained
  model is evaluated as if finished."""
  t0 = time.time()
  found = ckpt_lib.read_saved_config(workdir)  # (latest step, its saved config) or None
  if found is not None:
    done, saved = found
    diff = ckpt_lib.run_config_diff(saved, cfg)
    if diff:
      raise ValueError(f'{workdir} holds a run of another config ({"; ".join(diff[:6])}); use '
                       'another --runs_root or remove it.')
    if done == cfg.train.num_steps:
      log(f'  {workdir}: finished (step {done}); training skipped')
      return {'trained': False, 'seconds': 0.0}
  out = train_lib.train_and_evaluate(cfg, workdir)
  if out.get('stopped_by'):
    raise SystemExit(f'{workdir}: stopped by {out["stopped_by"]} at step {out["step"]} (checkpoint '
                     'saved; rerun the same command to resume). passkey.json not written.')
  return {'trained': True, 'seconds': time.time() - t0,
          'final_eval_loss': (out['eval'] or {}).get('loss')}


def evaluate_run(cfg, workdir: str, lengths, depths, num_examples, batch_size) -> dict:
  t0 = time.time()
  loaded = loading.load(cfg, workdir=workdir)
  tok = get_tokenizer(cfg.data.tokenizer, cfg.data.eos_token)
  lm = LM.from_model(loaded.model, loaded.variables, max(max(lengths), loaded.model.cfg.max_len))
  gen = generation.generate_fn(lm, pad_id=tok.pad_id)
  r = passkey.evaluate_passkey(gen, tok, lengths, depths, num_examples, seed=0,
                               batch_size=batch_size, decoys=cfg.data.passkey_decoys,
                               template=cfg.data.passkey_template)
  r['step'] = loaded.step
  r['eval_seconds'] = time.time() - t0
  write_json(workdir, 'passkey_eval.json', r)
  return r


def run(config, outdir: str, runs_root: str | None = None, log=print) -> dict:
  """The whole experiment (module docstring); returns the passkey.json dict."""
  t_start = time.time()
  e = config.experiment
  outdir = os.path.abspath(os.path.expanduser(outdir))  # orbax needs absolute paths
  runs_root = os.path.abspath(os.path.expanduser(runs_root or os.path.join(outdir, 'runs')))
  os.makedirs(outdir, exist_ok=True)
  if e.tokenizer_path:
    word_tokenizer(e.tokenizer_path)
  tok = get_tokenizer(config.data.tokenizer, config.data.eos_token)
  if tok.vocab_size > config.model.vocab_size:
    raise ValueError(f'model.vocab_size={config.model.vocab_size} < tokenizer vocabulary '
                     f'{tok.vocab_size} ({config.data.tokenizer}).')
  T = int(config.data.seq_len)
  lengths = eval_lengths(T, e.length_factors)
  depths = [float(d) for d in e.depths]
  eval_grid(T, e.length_factors, depths)  # validates the depths
  if max(lengths) > config.model.max_len:
    raise ValueError(f'longest eval length {max(lengths)} exceeds model.max_len='
                     f'{config.model.max_len} (the kv-cache length).')
  result = {'meta': {'train_len': T, 'train_steps': int(config.train.num_steps),
                     'batch_size': int(config.data.batch_size), 'preset': config.model.preset,
                     'pos_emb': config.model.pos_emb, 'tokenizer': config.data.tokenizer,
                     'tokenizer_vocab': int(tok.vocab_size),
                     'train_depth': config.data.passkey_depth,
                     'num_examples': int(e.num_examples), 'eval_seed': 0,
                     'seeds': [int(s) for s in e.seeds], 'variants': list(e.variants),
                     'runs_root': runs_root,
                     'date': datetime.date.today().isoformat(), 'complete': False},
            'lengths': lengths, 'depths': depths,
            'length_factors': [float(f) for f in e.length_factors], 'variants': {}}
  for v in e.variants:
    per_seed, raw = {}, {}
    for s in e.seeds:
      cfg = run_config(config, v, s)
      wd = os.path.join(runs_root, f'{v}_s{s}')
      log(f'[{v} seed {s}] {wd}')
      tr = train_run(cfg, wd, log)
      r = evaluate_run(cfg, wd, lengths, depths, e.num_examples, e.eval_batch_size)
      train_loss, eval_loss = _last_metrics(wd)
      per_seed[s] = r['accuracy']
      raw[str(s)] = {'accuracy': r['accuracy'], 'mean_accuracy': r['mean_accuracy'],
                     'step': r['step'], 'final_train_loss': train_loss,
                     'final_eval_loss': eval_loss, 'trained_now': tr['trained'],
                     'train_seconds': tr['seconds'], 'eval_seconds': r['eval_seconds'],
                     'samples': r['samples']}
      log(f'  mean accuracy {r["mean_accuracy"]:.3f} (train {tr["seconds"]:.0f}s, eval '
          f'{r["eval_seconds"]:.0f}s, final train loss {train_loss}, eval loss {eval_loss})')
    result['variants'][v] = {**aggregate(per_seed), 'per_seed': raw}
  result['meta']['complete'] = True
  result['meta']['seconds'] = time.time() - t_start
  write_json(outdir, 'passkey.json', result)
  plot_length(result, os.path.join(outdir, 'passkey_length.png'))
  plot_depth(result, os.path.join(outdir, 'passkey_depth.png'))
  log(summary_table(result))
  log(f'wrote {outdir}/passkey.json, passkey_length.png, passkey_depth.png '
      f'({result["meta"]["seconds"]:.0f}s)')
  return result


if __name__ == '__main__':
  cli.run_config_experiment(
      run, config_help='configs/theory_passkey.py:SIZE',
      outdir_help='Where passkey.json and the figures are written.',
      string_flags=[('runs_root', 'Training workdirs (default OUTDIR/runs).')])
