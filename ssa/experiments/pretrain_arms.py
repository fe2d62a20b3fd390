r"""Three-arm pre-training comparison with dilution statistics: vanilla vs pts vs SSA, several seeds.

    python -m ssa.experiments.pretrain_arms --workdir=runs/pretrain_arms \
        --results=docs/results/pretrain_arms --seeds=0,1,2,3
    python -m ssa.experiments.pretrain_arms --results=docs/results/pretrain_arms --summarize_only

Every run ARM_sSEED of configs/pretrain_arms.py (ARM in vanilla, pts, ssa) trains from scratch in
<workdir>/ARM_sSEED (orbax checkpoints: an interrupted run resumes) and is then measured; its
result goes to <results>/ARM_sSEED.json as soon as it exists (a rerun skips runs whose file was
made with the same settings). Runs go seed by seed (all arms of seed 0, then seed 1, ...), so an
interrupted experiment still has complete paired seeds. Per run:

  test loss      the first --eval_batches batches of the held-out 'test' split (>= 100k positions),
                 overall, per position bucket and per sequence (for the paired bootstrap);
  curve          validation loss against training tokens (train.eval_every; metrics.jsonl);
  temperatures   the learned slopes theta (layer x head) and the mean tau_q / tau_v by position
                 bucket on 8 test rows;
  dilution       on --attn_rows test rows, per layer: attention entropy by query position, its
                 least-squares slope against log n (n = 2..T; uniform attention = 1), the sorted
                 attention curves at positions ATTN_POSITIONS (top 32 ranks), and, for arms with a
                 value temperature, the same on the effective mixing weights p_j tau_v,j
                 (renormalised).

The summary (<results>/summary.json, summary.md, figures in <results>/*.png) pairs the arms by
seed: each comparison's mean difference with a 95% interval from a bootstrap over seeds and test
sequences, and its minimum detectable effect, overall and per bucket (ssa/measure.py); the n-gram
baselines of the same split (counted on train); entropy slopes per layer (mean over seeds with a
t interval, and the per-seed paired difference from vanilla); and the token ratio at which each
arm's validation curve reaches vanilla's final validation loss (linear interpolation between
curve points, per seed).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Sequence

import numpy as np
from absl import flags

from configs import pretrain_arms as exp_config
from ssa import cli
from ssa import metrics as metrics_lib
from ssa import plots
from ssa.evaluation import attention_stats
from ssa.experiments import arms as arms_lib
from ssa.experiments import ngram
from ssa.experiments.common import integers, known_names, with_steps, write_json
from ssa.experiments.common import write_summary_files
from ssa.sweep import read_curve

FLAGS = flags.FLAGS
COMPARISONS = (('pts', 'vanilla'), ('ssa', 'vanilla'), ('ssa', 'pts'))
ATTN_POSITIONS = (32, 64, 128, 256)
TOP_RANKS = 32
TAU_ROWS = 8
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}  # Student t quantiles at 0.975 by degrees of freedom


def run_name(arm: str, seed: int) -> str:
  return f'{arm}_s{seed}'


def arm_config(arm: str, seed: int, steps: Optional[int] = None, size: str = 'cpu'):
  c = exp_config.get_config(f'{arm},{seed},{size}')
  if steps is not None:
    c.train.eval_every = max(1, steps // exp_config.EVAL_POINTS)
  return with_steps(c, steps)


def settings(config, eval_batches: int, attn_rows: int) -> dict:
  """What makes two result files comparable (a rerun with other settings redoes the run)."""
  d, m = config.data, config.model
  return {'steps': int(config.train.num_steps), 'batch': int(d.batch_size),
          'seq_len': int(d.seq_len), 'lr': float(config.optim.lr), 'dtype': m.dtype,
          'tokenizer': d.tokenizer,
          'model': [int(m.n_layers), int(m.d_model), int(m.n_heads)],
          'eval_split': 'test', 'eval_batches': int(eval_batches), 'attn_rows': int(attn_rows)}


def _mean_rows(a: np.ndarray) -> np.ndarray:
  return np.asarray(a, np.float64).mean(axis=(0, 1))


def dilution_statistics(model, variables, rows: np.ndarray) -> dict:
  """Per layer: entropy by position, its slope against log n, sorted curves at ATTN_POSITIONS;
  the same on the mixing weights p * tau_v where the layer has a value temperature."""
  probs, taus = attention_stats.capture(model, variables, rows)
  T = rows.shape[1]
  out = {}
  for layer, p in probs.items():
    kinds = {'attention': p}
    if 'v' in taus.get(layer, {}):
      kinds['mixing'] = attention_stats.mixing_weights(p, taus[layer]['v'])
    out[layer] = {}
    for kind, w in kinds.items():
      ent = attention_stats.entropy_by_position(w)
      curves = attention_stats.dilution_curves(w)
      out[layer][kind] = {
          'entropy': ent.tolist(), 'entropy_slope': attention_stats.entropy_slope(ent),
          'sorted': {str(t): curves[t - 1, :min(t, TOP_RANKS)].tolist()
                     for t in ATTN_POSITIONS if t <= T}}
  return out


def run_one(arm: str, seed: int, workdir: str, results: str, eval_batches: int, attn_rows: int,
            steps: Optional[int] = None, log=print, config_fn: Callable = arm_config) -> dict:
  """Trains (if needed) and measures one run; writes and returns <results>/ARM_sSEED.json.
  config_fn(arm, seed, steps) -> the run's config (tests pass a tiny model's)."""
  name = run_name(arm, seed)
  config = config_fn(arm, seed, steps)
  want = settings(config, eval_batches, attn_rows)
  path = os.path.join(results, f'{name}.json')
  if os.path.isfile(path):
    with open(path) as f:
      prev = json.load(f)
    if prev.get('settings') == want:
      log(f'[{name}] done: {path} (skipped)')
      return prev
    log(f'[{name}] {path} was made with other settings ({prev.get("settings")}); redoing it')
  run_dir = os.path.join(workdir, name)
  model, variables, train_s = arms_lib.train_or_load(config, run_dir,
                                                     log=lambda m: log(f'[{name}] {m}'))
  t0 = time.time()
  r, batches = arms_lib.score(model, variables, config, 'test', eval_batches)
  rows_per_batch = config.data.batch_size
  tau = arms_lib.tau_by_position(model, variables, batches[:max(1, TAU_ROWS // rows_per_batch)],
                                 config.data.seq_len)
  test_rows = np.concatenate([np.asarray(b['inputs'], np.int32)[np.asarray(b['weights']).sum(-1) > 0]
                              for b in batches])[:attn_rows]
  dil = dilution_statistics(model, variables, test_rows)
  tokens_per_step = config.data.batch_size * config.data.seq_len
  curve = read_curve(run_dir, tokens_per_step)
  speeds = [r['tokens_per_s'] for r in metrics_lib.read_metrics(run_dir)
            if r.get('kind') == 'train' and r.get('tokens_per_s')]
  out = {'arm': arm, 'seed': seed, 'settings': want, 'strategy': config.ssa.strategy,
         'ssa': {k: config.ssa[k] for k in ('q', 'v', 'slope', 'theta_init', 'linear_min_tau')},
         'train_tokens': int(config.train.num_steps) * tokens_per_step,
         'train_seconds': train_s, 'measure_seconds': time.time() - t0,
         'tokens_per_s': float(np.median(speeds)) if speeds else None,
         'loss': r['loss'], 'tokens': r['tokens'], 'by_position': r['by_position'],
         'buckets': r['buckets'], 'curve': curve, 'theta': arms_lib.theta(variables['params']),
         'tau_by_position': tau, 'dilution': dil, 'attn_rows': int(len(test_rows)),
         'sequence_bucket_nll': r['sequence_bucket_nll'],
         'sequence_bucket_tokens': r['sequence_bucket_tokens']}
  write_json(results, f'{name}.json', out)
  log(f'[{name}] test loss {r["loss"]:.4f} nats/token over {r["tokens"]:.0f} tokens (train '
      f'{train_s:.0f} s incl. setup, measure {out["measure_seconds"]:.0f} s) -> {path}')
  return out


# ----- summary ---------------------------------------------------------------------------------

def t_interval(xs) -> dict:
  """Mean and 95% Student-t interval over seeds (None for one value)."""
  xs = np.asarray(xs, np.float64)
  m = float(xs.mean())
  if xs.size < 2:
    return {'mean': m, 'ci95': None, 'n': int(xs.size)}
  h = T_975.get(xs.size - 1, 1.96) * float(xs.std(ddof=1)) / np.sqrt(xs.size)
  return {'mean': m, 'ci95': [m - h, m + h], 'n': int(xs.size)}


def tokens_to_reach(curve: Sequence, target: float) -> Optional[float]:
  """Training tokens at which a [[step, tokens, loss]] curve first reaches `target` (linear
  interpolation between points); None if it never does."""
  prev = None
  for _, tok, loss in curve:
    if loss <= target:
      if prev is None or prev[1] == loss:
        return float(tok)
      t0, l0 = prev
      return float(t0 + (l0 - target) / (l0 - loss) * (tok - t0))
    prev = (tok, loss)
  return None


def paired_seeds(runs: dict) -> list[int]:
  """Seeds for which every arm in `runs` ({arm: {seed: result}}) has a result."""
  sets = [set(v) for v in runs.values()]
  return sorted(set.intersection(*sets)) if sets else []


def summarize(runs: dict, baselines: Optional[dict] = None) -> dict:
  """runs: {arm: {seed: result}}."""
  arms = [a for a in exp_config.ARMS if a in runs]
  out = {'arms': {}, 'comparisons': {}, 'entropy_slopes': {}, 'token_ratio': {},
         'baselines': baselines}
  for a in arms:
    rs = [runs[a][s] for s in sorted(runs[a])]
    buckets = list(rs[0]['by_position'])
    theta = [np.mean([np.mean(v) for v in r['theta'].values()]) for r in rs if r['theta']]
    out['arms'][a] = {
        'seeds': sorted(runs[a]), 'loss': t_interval([r['loss'] for r in rs]),
        'by_position': {b: float(np.mean([r['by_position'][b]['loss'] for r in rs]))
                        for b in buckets},
        'tokens': rs[0]['tokens'], 'train_tokens': rs[0]['train_tokens'],
        'train_seconds': float(np.mean([r['train_seconds'] for r in rs])),
        'tokens_per_s': float(np.median([r['tokens_per_s'] for r in rs if r.get('tokens_per_s')]
                                        or [np.nan])),
        'theta_mean': t_interval(theta) if theta else None,
        'theta_by_layer': {l: float(np.mean([np.mean(r['theta'][l]) for r in rs]))
                           for l in (rs[0]['theta'] or {})},
        'tau_by_position': {e: {b: float(np.mean([r['tau_by_position'][e][b] for r in rs]))
                                for b in rs[0]['tau_by_position'][e]}
                            for e in rs[0]['tau_by_position']},
        'curve': [[p[0], p[1], float(np.mean([r['curve'][i][2] for r in rs]))]
                  for i, p in enumerate(rs[0]['curve'])
                  if all(len(r['curve']) > i for r in rs)]}
  for x, y in COMPARISONS:
    if x in runs and y in runs:
      seeds = paired_seeds({x: runs[x], y: runs[y]})
      if seeds:
        c = arms_lib.compare([runs[x][s] for s in seeds], [runs[y][s] for s in seeds])
        out['comparisons'][f'{x} - {y}'] = {'seeds': seeds, **c}
  for a in arms:
    first = runs[a][min(runs[a])]
    out['entropy_slopes'][a] = {}
    for layer, kinds in first['dilution'].items():
      out['entropy_slopes'][a][layer] = {
          kind: t_interval([runs[a][s]['dilution'][layer][kind]['entropy_slope']
                            for s in sorted(runs[a])]) for kind in kinds}
      if a != 'vanilla' and 'vanilla' in runs:
        seeds = paired_seeds({a: runs[a], 'vanilla': runs['vanilla']})
        if seeds:
          out['entropy_slopes'][a][layer]['attention - vanilla'] = t_interval(
              [runs[a][s]['dilution'][layer]['attention']['entropy_slope'] -
               runs['vanilla'][s]['dilution'][layer]['attention']['entropy_slope']
               for s in seeds])
  if 'vanilla' in runs:
    for a in arms:
      ratios = []
      for s in paired_seeds({a: runs[a], 'vanilla': runs['vanilla']}):
        v = runs['vanilla'][s]
        if not v['curve']:
          continue
        reach = tokens_to_reach(runs[a][s]['curve'], v['curve'][-1][2])
        ratios.append(None if reach is None else reach / v['curve'][-1][1])
      found = [r for r in ratios if r is not None]
      out['token_ratio'][a] = {'per_seed': ratios,
                               'summary': t_interval(found) if found else None,
                               'reached': f'{len(found)}/{len(ratios)}'}
  return out


def _ci(d: Optional[dict], digits: int = 4, sign: str = '+') -> str:
  """'mean [lo, hi]' of a t_interval result ('-' for None); sign '' for unsigned values."""
  if not d:
    return '-'
  f = f'{sign}.{digits}f'
  if d['ci95'] is None:
    return format(d['mean'], f)
  return f'{format(d["mean"], f)} [{format(d["ci95"][0], f)}, {format(d["ci95"][1], f)}]'


def markdown(summary: dict) -> str:
  arms = summary['arms']
  first = next(iter(arms.values()))
  buckets = list(first['by_position'])
  lines = []
  if summary.get('baselines'):
    b = summary['baselines']['baselines']
    lines += ['n-gram baselines on the same test split (counted on train): ' + ', '.join(
        f'{k} {v["nll"]:.4f}' for k, v in b.items()) + ' nats/byte', '']
  lines += ['| arm | seeds | test loss: mean [95% t-interval] | ' + ' | '.join(buckets) +
            ' | theta mean | train tok/s (median) | train s (incl. setup, evals) |',
            '|---' * (len(buckets) + 6) + '|']
  for a, d in arms.items():
    lines.append(f'| {a} | {len(d["seeds"])} | {_ci(d["loss"], sign="")} | ' + ' | '.join(
        f'{d["by_position"][b]:.4f}' for b in buckets) +
        f' | {_ci(d["theta_mean"])} | {d["tokens_per_s"]:,.0f} | {d["train_seconds"]:.0f} |')
  lines += ['', '| comparison (paired by seed) | overall: mean [95% CI] (MDE) | ' +
            ' | '.join(buckets) + ' |', '|---' * (len(buckets) + 2) + '|']
  for name, c in summary['comparisons'].items():
    lines.append(f'| {name} (seeds {",".join(map(str, c["seeds"]))}) | '
                 f'{arms_lib.cell(c["overall"])} | ' + ' | '.join(
                     arms_lib.cell(c['by_position'][b]) if b in c['by_position'] else '-'
                     for b in buckets) + ' |')
  taus = {a: d for a, d in arms.items() if d.get('tau_by_position')}
  if taus:
    lines += ['', '| arm | mean tau (embedding, position bucket; 8 test rows, mean over seeds) | '
              'theta per layer (mean over heads and seeds) |', '|---|---|---|']
    for a, d in taus.items():
      tau = ', '.join(f'{e} {b}: {v:.3f}' for e, bs in d['tau_by_position'].items()
                      for b, v in bs.items())
      th = ' / '.join(f'{d["theta_by_layer"][l]:+.3f}' for l in d.get('theta_by_layer', {}))
      lines.append(f'| {a} | {tau} | {th or "-"} |')
  lines += ['', '| arm | layer | entropy slope vs log n (attention) | mixing weights p*tau_v | '
            'attention slope - vanilla (paired) |', '|---|---|---|---|---|']
  for a, layers in summary['entropy_slopes'].items():
    for layer, k in layers.items():
      lines.append(f'| {a} | {layer} | {_ci(k["attention"], 3, "")} | '
                   f'{_ci(k.get("mixing"), 3, "")} | {_ci(k.get("attention - vanilla"), 3)} |')
  lines += ['', '| arm | tokens to reach vanilla\'s final validation loss / vanilla\'s tokens '
            '(per seed) | mean [95% t-interval] | reached |', '|---|---|---|---|']
  for a, t in summary['token_ratio'].items():
    if a == 'vanilla':
      continue
    per = ', '.join('-' if r is None else f'{r:.3f}' for r in t['per_seed'])
    lines.append(f'| {a} | {per} | {_ci(t["summary"], 3, "")} | {t["reached"]} |')
  return '\n'.join(lines)


def figures(runs: dict, summary: dict, results: str) -> list[str]:
  """curves.png (validation loss vs tokens), entropy.png (per layer, vs log n), sorted.png."""
  plt = plots._plt()  # pylint: disable=protected-access
  paths = []
  fig, ax = plt.subplots(figsize=(6, 4))
  for a, d in summary['arms'].items():
    if d['curve']:
      c = np.asarray(d['curve'])
      ax.plot(c[:, 1], c[:, 2], marker='o', label=f'{a} (mean of {len(d["seeds"])} seeds)')
  if summary.get('baselines'):
    for k, v in summary['baselines']['baselines'].items():
      if k != 'unigram':
        ax.axhline(v['nll'], ls=':', color='grey')
        ax.text(0, v['nll'], f' {k} (test)', va='bottom', fontsize=7, color='grey')
  ax.set_xlabel('training tokens')
  ax.set_ylabel('validation loss (nats/byte)')
  ax.set_ylim(top=3.5)
  ax.legend(fontsize=7)
  ax.set_title('validation loss during training')
  paths.append(plots._save(fig, os.path.join(results, 'curves.png')))  # pylint: disable=protected-access
  arms = list(summary['arms'])
  layers = list(runs[arms[0]][min(runs[arms[0]])]['dilution'])
  fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.4), squeeze=False)
  for j, layer in enumerate(layers):
    ax = axes[0][j]
    for a in arms:
      ent = np.mean([runs[a][s]['dilution'][layer]['attention']['entropy'] for s in runs[a]], 0)
      n = np.arange(1, len(ent) + 1)
      ax.plot(np.log(n), ent, label=a)
      if 'mixing' in runs[a][min(runs[a])]['dilution'][layer]:
        mix = np.mean([runs[a][s]['dilution'][layer]['mixing']['entropy'] for s in runs[a]], 0)
        ax.plot(np.log(n), mix, ls='--', label=f'{a} p*tau_v')
    n = np.arange(1, len(ent) + 1)
    ax.plot(np.log(n), np.log(n), 'k', alpha=0.3, label='uniform')
    ax.set_title(layer)
    ax.set_xlabel('log n (query position)')
    if j == 0:
      ax.set_ylabel('entropy (nats)')
      ax.legend(fontsize=6)
  rows = runs[arms[0]][min(runs[arms[0]])]['attn_rows']
  fig.suptitle(f'attention entropy by query position: mean over seeds '
               f'({", ".join(f"{a} {len(runs[a])}" for a in arms)}), {rows} test rows and the '
               'heads; dashed: mixing weights p*tau_v', fontsize=8)
  paths.append(plots._save(fig, os.path.join(results, 'entropy.png')))  # pylint: disable=protected-access
  fig, axes = plt.subplots(len(layers), len(arms), figsize=(3.4 * len(arms), 2.6 * len(layers)),
                           squeeze=False, sharey=True)
  for i, layer in enumerate(layers):
    for j, a in enumerate(arms):
      ax = axes[i][j]
      srt = runs[a][min(runs[a])]['dilution'][layer]['attention']['sorted']
      for t in srt:
        curve = np.mean([runs[a][s]['dilution'][layer]['attention']['sorted'][t]
                         for s in runs[a]], 0)
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f'n={t}')
      ax.set_yscale('log')
      ax.set_title(f'{a} {layer}', fontsize=8)
      if i == len(layers) - 1:
        ax.set_xlabel('rank')
      if i == 0 and j == 0:
        ax.legend(fontsize=6)
  fig.suptitle(f'sorted attention rows at query positions n (top {TOP_RANKS} ranks): mean over '
               f'seeds, {rows} test rows and the heads', fontsize=8)
  paths.append(plots._save(fig, os.path.join(results, 'sorted.png')))  # pylint: disable=protected-access
  return paths


def load_runs(results: str, seeds: Optional[Sequence[int]] = None) -> dict:
  """{arm: {seed: result}} of the ARM_sSEED.json files in results (all seeds, or `seeds`)."""
  out = {}
  if os.path.isdir(results):
    for f in sorted(os.listdir(results)):
      arm, _, rest = f.partition('_s')
      if arm in exp_config.ARMS and rest.endswith('.json') and rest[:-5].isdigit():
        seed = int(rest[:-5])
        if seeds is None or seed in seeds:
          with open(os.path.join(results, f)) as fh:
            out.setdefault(arm, {})[seed] = json.load(fh)
  if not out:
    raise FileNotFoundError(f'{results}: no run result file (ARM_sSEED.json, ARM in '
                            f'{", ".join(exp_config.ARMS)}).')
  return out


def write_summary(results: str, seeds: Optional[Sequence[int]] = None, log=print,
                  draw: bool = True) -> dict:
  runs = load_runs(results, seeds)
  bpath = os.path.join(results, 'ngram.json')
  baselines = None
  if os.path.isfile(bpath):
    with open(bpath) as f:
      baselines = json.load(f)
  summary = summarize(runs, baselines)
  write_summary_files(results, summary, markdown(summary), log)
  if draw:
    figures(runs, summary, results)
  return summary


def run(workdir: str, results: str, seeds: Sequence[int], arms: Sequence[str], eval_batches: int,
        attn_rows: int, steps: Optional[int] = None, log=print,
        config_fn: Callable = arm_config) -> dict:
  if not os.path.isfile(os.path.join(results, 'ngram.json')):
    base = ngram.baselines(config_fn(arms[0], seeds[0], steps), 'test', log=log)
    write_json(results, 'ngram.json', base)
  t0 = time.time()
  for seed in seeds:
    for arm in arms:
      run_one(arm, seed, workdir, results, eval_batches, attn_rows, steps, log, config_fn)
      log(f'elapsed {time.time() - t0:.0f} s')
  return write_summary(results, seeds, log)


def define_flags() -> None:
  """The CLI flags (defined by the main only: importing this module defines none)."""
  flags.DEFINE_string('workdir', 'runs/pretrain_arms', 'where each run trains (<workdir>/ARM_sSEED)')
  flags.DEFINE_string('results', 'docs/results/pretrain_arms', 'where the result files go')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3'], 'seeds (each trains every arm)')
  flags.DEFINE_list('arms', list(exp_config.ARMS), 'arms (configs/pretrain_arms.py ARMS)')
  flags.DEFINE_enum('size', 'cpu', list(exp_config.SIZES), "configs/pretrain_arms.py size: "
                    "'cpu' (this machine) or 'gpu' (GPT-2 124M, T=1024, bf16; one H100/H200)")
  flags.DEFINE_integer('eval_batches', None, 'test batches scored per run (default: TEST_BATCHES x 8 '
                       'x 256 = 102,400 positions for cpu, GPU_EVAL_BATCHES x 32 x 1024 for gpu)')
  flags.DEFINE_integer('attn_rows', 8, 'test rows whose attention the dilution statistics use')
  flags.DEFINE_integer('steps', None, 'override train.num_steps of every run (smoke runs)')
  flags.DEFINE_bool('summarize_only', False, 'only recompute the summary and figures from the '
                    'result files')


def main(argv):
  cli.check_no_args(argv)
  cli.quiet_logging()
  eval_batches = FLAGS.eval_batches or (exp_config.TEST_BATCHES if FLAGS.size == 'cpu'
                                        else exp_config.GPU_EVAL_BATCHES)
  for name, value in (('eval_batches', eval_batches), ('attn_rows', FLAGS.attn_rows)):
    if value < 1:
      cli.exit_with_error(ValueError(f'--{name}={value}; expected >= 1.'))
  size = FLAGS.size
  try:
    arms = known_names('--arms', FLAGS.arms, exp_config.ARMS, 'configs/pretrain_arms.py ARMS')
    seeds = integers('--seeds', FLAGS.seeds)
    if FLAGS.summarize_only:
      write_summary(FLAGS.results, seeds)
    else:
      run(FLAGS.workdir, FLAGS.results, seeds, arms, eval_batches, FLAGS.attn_rows,
          FLAGS.steps, config_fn=lambda a, s, st: arm_config(a, s, st, size))
  except (FileNotFoundError, ValueError) as e:
    cli.exit_with_error(e)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
