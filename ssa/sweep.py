r"""Ablation sweeps: run every (variant, seed) of configs/sweeps.py, skip finished runs, resume
interrupted ones, and collect the results into one markdown table per sweep.

    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --root=runs/sweeps
    python sweep.py --sweep=all --size=small --seeds=0,1,2 --root=runs/sweeps    # shared runs once
    python sweep.py --sweep=strategies --size=paper --seeds=0,1 --root=gs://B/sweeps \
        --print_commands --train_flags=--multihost          # one train.py command per run
    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --collect_only

Layout: ROOT/SIZE/VARIANT_sSEED is the workdir of one run (variant names are the same in every
sweep, so sweeps that list a variant share its runs). In it:

  run.json     written before training: {variant, seed, size, overrides, set}. A workdir whose
               run.json differs (another variant definition or other --set overrides), or a
               non-empty workdir without run.json, raises SweepError naming it: nothing is
               overwritten.
  result.json  written when the run finished: final validation loss / perplexity, eval_start
               (step 0), parameter counts (total / temperature), train wall time (this call:
               setup, compile and evals included), tokens trained and the validation curve
               [(step, tokens, loss)] read from metrics.jsonl. A run with
               result.json is skipped; one with checkpoints but no result.json is resumed from its
               latest checkpoint (train_lib.train_and_evaluate restores it).

Runs made elsewhere by the printed train.py commands have no run.json / result.json; collecting
reads their metrics.jsonl instead (finished = an eval record at step train.num_steps).

Each run's config = configs/sweeps.base_config(SIZE) + the variant's overrides + --set overrides,
with config.seed = data.seed = SEED (what `train.py --config=configs/sweeps.py:SWEEP,SIZE,VARIANT
--config.seed=SEED --config.data.seed=SEED` trains). The table (ROOT/SIZE/SWEEP.md): one row per
variant in sweep order; mean ± sample std (ddof=1, '-' for one seed) of the final validation loss
and perplexity over seeds; delta loss vs vanilla = mean ± std over seeds of the paired difference
(variant - vanilla, same seed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import statistics
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import ml_collections

from configs import sweeps as sweep_configs
from ssa import checkpoint as ckpt_lib
from ssa import config_lib
from ssa import metrics as metrics_lib
from ssa import train_lib
from ssa.model import Transformer, abstract_param_counts

RUN_JSON = 'run.json'
RESULT_JSON = 'result.json'
BaseFn = Union[None, ml_collections.ConfigDict, Callable[[str], ml_collections.ConfigDict]]


class SweepError(ValueError):
  """A workdir belongs to another run (run.json differs) or a sweep argument is invalid."""


@dataclasses.dataclass
class Run:
  """One (variant, seed) of a sweep at one size."""
  sweep: str          # first requested sweep that lists the variant (names the config argument)
  variant: str
  seed: int
  size: str
  overrides: dict     # the variant's dotted-field overrides
  extra: dict         # --set overrides (apply to every run)
  workdir: str

  def spec(self) -> dict:
    """Content of run.json (independent of the sweep that asked for the run)."""
    return _jsonable({'variant': self.variant, 'seed': self.seed, 'size': self.size,
                      'overrides': self.overrides, 'set': self.extra})


def _jsonable(x):
  return json.loads(json.dumps(x, sort_keys=True))


# ----------------------------------------------------------------------------- planning

def sweep_names(sweep: str) -> list[str]:
  """'all' -> every sweep; 'a,b' -> [a, b]; unknown names raise SweepError listing valid ones."""
  if sweep == 'all':
    return list(sweep_configs.SWEEPS)
  names = [s.strip() for s in sweep.split(',') if s.strip()]
  bad = [s for s in names if s not in sweep_configs.SWEEPS]
  if bad or not names:
    raise SweepError(f'Unknown sweep(s) {bad or [sweep]}; expected "all" or a comma-separated '
                     f'list of {list(sweep_configs.SWEEPS)}.')
  return names


def _names(sweeps: Union[str, Sequence[str]]) -> list[str]:
  out = []
  for s in ([sweeps] if isinstance(sweeps, str) else sweeps):
    out += [n for n in sweep_names(s) if n not in out]
  return out


def parse_seeds(seeds: Union[str, Sequence[int]]) -> list[int]:
  """'0,1,2' (or a list of ints) -> [0, 1, 2]; duplicates and non-integers raise SweepError."""
  try:
    out = [int(s) for s in (seeds.split(',') if isinstance(seeds, str) else seeds)]
  except ValueError as e:
    raise SweepError(f'seeds={seeds!r}: expected comma-separated integers.') from e
  if not out or len(set(out)) != len(out):
    raise SweepError(f'seeds={seeds!r}: expected distinct integers, at least one.')
  bad = [s for s in out if not 0 <= s < 2**32]
  if bad:
    raise SweepError(f'seeds={seeds!r}: {bad} out of range; expected integers in [0, 2**32 - 1].')
  return out


def parse_sets(items: Sequence[str]) -> dict:
  """['optim.lr=1e-3', ...] -> {'optim.lr': 0.001}; values are Python literals, else strings."""
  try:
    return config_lib.parse_overrides(items)
  except ValueError as e:
    raise SweepError(str(e)) from e


def run_workdir(root: str, size: str, variant: str, seed: int) -> str:
  return os.path.join(root, size, f'{variant}_s{seed}')


def plan(sweeps: Union[str, Sequence[str]], size: str, seeds, root: str,
         extra: Optional[dict] = None) -> list[Run]:
  """The runs of `sweeps` (a name, 'all' or a list), seed-major, each variant once."""
  names = _names(sweeps)
  if size not in sweep_configs.SIZES:
    raise SweepError(f'Unknown size {size!r}; expected one of {list(sweep_configs.SIZES)}.')
  order = {}  # variant -> (first sweep, overrides)
  for name in names:
    for variant, overrides in sweep_configs.get_sweep(name, size):
      order.setdefault(variant, (name, overrides))
  return [Run(sweep, v, seed, size, dict(ov), dict(extra or {}), run_workdir(root, size, v, seed))
          for seed in parse_seeds(seeds) for v, (sweep, ov) in order.items()]


def make_config(run: Run, base: BaseFn = None) -> ml_collections.ConfigDict:
  """The full config of `run`: base (configs/sweeps.base_config) + overrides + --set + seeds."""
  if base is None:
    c = sweep_configs.base_config(run.size)
  elif callable(base):
    c = base(run.size)
  else:
    c = base.copy_and_resolve_references()
  config_lib.apply_overrides(c, run.overrides)
  config_lib.apply_overrides(c, run.extra)
  c.seed = run.seed
  c.data.seed = run.seed
  return c


def _fmt_flag(value) -> str:
  if isinstance(value, (tuple, list, dict)):
    return shlex.quote(repr(value))
  return shlex.quote(str(value))


def command(run: Run, python: str = 'python', train_flags: str = '') -> str:
  """The train.py command line of `run` (same config as make_config with the default base)."""
  parts = [python, 'train.py', f'--config=configs/sweeps.py:{run.sweep},{run.size},{run.variant}',
           f'--workdir={shlex.quote(run.workdir)}', f'--config.seed={run.seed}',
           f'--config.data.seed={run.seed}']
  parts += [f'--config.{k}={_fmt_flag(v)}' for k, v in run.extra.items()]
  if train_flags:
    parts.append(train_flags)
  return ' '.join(parts)


# ----------------------------------------------------------------------------- one run

def _read_json(path: str) -> Optional[dict]:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def check_workdir(run: Run, base: BaseFn = None) -> None:
  """SweepError if run.workdir holds another run (run.json differs, or files but no run.json that
  were not made by this run's printed train.py command)."""
  have = _read_json(os.path.join(run.workdir, RUN_JSON))
  want = run.spec()
  if have is None:
    if os.path.isdir(run.workdir) and os.listdir(run.workdir):
      if _adopt(run, base):  # made by the printed train.py command of this very run
        return
      raise SweepError(f'{run.workdir} is not empty but has no {RUN_JSON}: it was not made by this '
                       f'sweep runner for {want} (nor by its printed train.py command with the same '
                       'config). Remove it or use another --root.')
    return
  if have != want:
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    raise SweepError(
        f'{os.path.join(run.workdir, RUN_JSON)} belongs to a different run (fields {diff} differ): '
        f'it has {have}, this sweep wants {want}. The variant definition or --set overrides '
        'changed; use another --root (or remove that workdir) instead of mixing results.')


def _adopt(run: Run, base: BaseFn = None) -> bool:
  """Writes run.json for a workdir trained by `command(run)` (its checkpoint's saved config equals
  this run's config); False when there is no checkpoint or the configs differ."""
  found = ckpt_lib.read_saved_config(run.workdir)
  if found is None or ckpt_lib.run_config_diff(found[1], make_config(run, base)):
    return False
  _write_json(os.path.join(run.workdir, RUN_JSON), run.spec())
  return True


def read_curve(workdir: str, tokens_per_step: int) -> list[list]:
  """[[step, tokens, loss]] of the eval records in metrics.jsonl (last record per step wins)."""
  by_step = {}
  for rec in metrics_lib.read_metrics(workdir):
    if rec.get('kind') == 'eval' and 'loss' in rec:
      by_step[int(rec['step'])] = float(rec['loss'])
  return [[s, s * tokens_per_step, by_step[s]] for s in sorted(by_step)]


def param_counts(config) -> dict:
  """{'total', 'temperature', 'base', 'added_ratio'} from shapes only (no memory)."""
  model = Transformer(config_lib.model_config(config.model), config_lib.ssa_config(config.ssa))
  return abstract_param_counts(model, seq_len=8)


def make_result(run: Run, config, *, final: Optional[dict] = None,
                train_wall_s: Optional[float] = None, resumed_from_step: int = 0,
                source: str = 'sweep') -> Optional[dict]:
  """result.json content from metrics.jsonl (+ the final eval of train_and_evaluate if given).

  None when the run has no validation at step train.num_steps (not finished)."""
  num_steps = int(config.train.num_steps)
  tps = int(config.data.batch_size) * int(config.data.seq_len)
  curve = read_curve(run.workdir, tps)
  last = {s: loss for s, _, loss in curve}
  if final is None:
    if num_steps not in last:
      return None
    final = {'loss': last[num_steps], 'perplexity': math.exp(min(last[num_steps], 80.0))}
  start = ({'loss': last[0], 'perplexity': math.exp(min(last[0], 80.0))} if 0 in last else None)
  return {**run.spec(), 'loss': float(final['loss']), 'perplexity': float(final['perplexity']),
          'step': num_steps, 'eval_start': start, 'params': param_counts(config),
          'train_wall_s': train_wall_s, 'resumed_from_step': resumed_from_step,
          'tokens_trained': num_steps * tps, 'tokens_per_step': tps, 'curve': curve,
          'source': source}


def _latest_checkpoint_step(workdir: str) -> int:
  d = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []
  return max(steps, default=0)


def run_one(run: Run, *, base: BaseFn = None, train_fn: Optional[Callable] = None,
            log: Callable[[str], Any] = print, prefix: str = '') -> tuple[str, Optional[dict]]:
  """Trains `run` unless finished. Returns (status, result): status in 'skip', 'done',
  'stopped' (SIGTERM/SIGINT: checkpoint saved, no result), 'failed' (non-finite loss)."""
  result_path = os.path.join(run.workdir, RESULT_JSON)
  check_workdir(run, base)
  result = _read_json(result_path)
  if result is not None:
    log(f'{prefix}skip (done: val loss {result["loss"]:.4f})')
    return 'skip', result
  config = make_config(run, base)
  os.makedirs(run.workdir, exist_ok=True)
  _write_json(os.path.join(run.workdir, RUN_JSON), run.spec())
  resumed = _latest_checkpoint_step(run.workdir)
  if train_fn is None:
    train_fn = train_lib.train_and_evaluate
  log(f'{prefix}train' + (f' (resuming from step {resumed})' if resumed else ''))
  t0 = time.time()
  try:
    out = train_fn(config, run.workdir)
  except FloatingPointError as e:  # train_lib.NonFiniteError
    log(f'{prefix}FAILED after {time.time() - t0:.1f} s: {e}')
    return 'failed', None
  finally:
    _clear_jax_caches()
  wall = time.time() - t0
  if out.get('stopped_by'):
    log(f'{prefix}stopped by {out["stopped_by"]} at step {out["step"]} (checkpoint saved; '
        'run again to resume)')
    return 'stopped', None
  result = make_result(run, config, final=out.get('eval'), train_wall_s=wall,
                       resumed_from_step=resumed)
  if result is None:
    raise SweepError(f'{run.workdir}: training returned without a validation at step '
                     f'{config.train.num_steps} (train.eval_every=-1?); the sweep table needs one.')
  _write_json(result_path, result)
  log(f'{prefix}done in {wall:.1f} s: val loss {result["loss"]:.4f}')
  return 'done', result


def _clear_jax_caches():
  jax.clear_caches()  # every run jits new functions: do not let the caches grow


# ----------------------------------------------------------------------------- tables

def load_result(run: Run, base: BaseFn = None) -> Optional[dict]:
  """result.json of `run`, else one built from metrics.jsonl of a finished run made by train.py."""
  res = _read_json(os.path.join(run.workdir, RESULT_JSON))
  if res is not None:  # only if it was made for this run (same variant, seed, --set overrides)
    return res if {k: res.get(k) for k in run.spec()} == run.spec() else None
  have = _read_json(os.path.join(run.workdir, RUN_JSON))
  if have is not None and have != run.spec():
    return None  # another run's workdir: not ours to report
  if not os.path.isfile(os.path.join(run.workdir, metrics_lib.METRICS_FILE)):
    return None
  return make_result(run, make_config(run, base), source='metrics.jsonl')


def _mean_std(xs: Sequence[float]) -> tuple[float, Optional[float]]:
  return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _pm(xs: Sequence[float], digits: int = 4, signed: bool = False) -> str:
  if not xs:
    return '–'
  m, s = _mean_std(xs)
  m = round(m, digits) + 0.0  # no '-0.0000'
  head = f'{m:+.{digits}f}' if signed else f'{m:.{digits}f}'
  return f'{head} ± {s:.{digits}f}' if s is not None else f'{head} ± -'


def summarize(variants: Sequence[str], results: dict) -> list[dict]:
  """Rows of the table. results: {(variant, seed): result dict}. One row per variant, in order."""
  base = {seed: r['loss'] for (v, seed), r in results.items() if v == 'vanilla'}
  rows = []
  for v in variants:
    mine = {seed: r for (vv, seed), r in results.items() if vv == v}
    seeds = sorted(mine)
    losses = [mine[s]['loss'] for s in seeds]
    ppls = [mine[s]['perplexity'] for s in seeds]
    diffs = [mine[s]['loss'] - base[s] for s in seeds if s in base] if 'vanilla' in variants else []
    params = mine[seeds[0]]['params'] if seeds else None
    rows.append({'variant': v, 'seeds': seeds, 'n': len(seeds), 'loss': losses, 'perplexity': ppls,
                 'delta_vs_vanilla': diffs, 'params': params})
  return rows


def markdown_table(rows: Sequence[dict], title: str = '', with_delta: bool = True) -> str:
  head = ['variant', 'seeds (n)', 'temperature params (added %)', 'val loss (mean ± std)',
          'val perplexity (mean ± std)']
  if with_delta:
    head.append('Δ loss vs vanilla (mean ± std of paired diffs)')
  lines = ([f'### {title}', ''] if title else []) + [
      '| ' + ' | '.join(head) + ' |', '|---|---:|---:|---:|---:|' + ('---:|' if with_delta else '')]
  for r in rows:
    p = r['params']
    ptxt = f'{p["temperature"]:,} ({100 * p["added_ratio"]:.3f}%)' if p else '–'
    cells = [r['variant'], str(r['n']), ptxt, _pm(r['loss']), _pm(r['perplexity'], 3)]
    if with_delta:
      cells.append('–' if r['variant'] == 'vanilla' else _pm(r['delta_vs_vanilla'], signed=True))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def collect(sweep: str, size: str, seeds, root: str, *, extra: Optional[dict] = None,
            base: BaseFn = None, write: bool = True) -> tuple[str, list[Run]]:
  """(markdown table of one sweep, runs without results); writes ROOT/SIZE/SWEEP.md."""
  runs = plan(sweep, size, seeds, root, extra)
  results, missing = {}, []
  for run in runs:
    res = load_result(run, base)
    if res is None:
      missing.append(run)
    else:
      results[(run.variant, run.seed)] = res
  variants = [v for v, _ in sweep_configs.get_sweep(sweep, size)]
  rows = summarize(variants, results)
  title = f'{sweep} ({size}, seeds {",".join(map(str, parse_seeds(seeds)))})'
  md = markdown_table(rows, title, with_delta='vanilla' in variants)
  if missing:
    md += '\n\nmissing runs: ' + ', '.join(os.path.basename(r.workdir) for r in missing)
  if write:
    os.makedirs(os.path.join(root, size), exist_ok=True)
    with open(os.path.join(root, size, f'{sweep}.md'), 'w') as f:
      f.write(md + '\n')
  return md, missing


def run_sweep(sweeps: Union[str, Sequence[str]], size: str, seeds, root: str, *,
              extra: Optional[dict] = None, base: BaseFn = None,
              train_fn: Optional[Callable] = None, log: Callable[[str], Any] = print) -> dict:
  """Runs every (variant, seed) of `sweeps` in turn, then writes and prints each sweep's table.

  Returns {'status': {workdir: status}, 'tables': {sweep: markdown}, 'stopped': bool}."""
  runs = plan(sweeps, size, seeds, root, extra)
  for run in runs:  # fail before training anything if a workdir belongs to another run
    check_workdir(run, base)
  status, stopped = {}, False
  t_all = time.time()
  for k, run in enumerate(runs, 1):
    prefix = f'[{k}/{len(runs)} {time.time() - t_all:.0f}s] {run.variant} seed {run.seed}: '
    st, _ = run_one(run, base=base, train_fn=train_fn, log=log, prefix=prefix)
    status[run.workdir] = st
    if st == 'stopped':
      stopped = True
      break
  tables = {}
  for name in _names(sweeps):
    md, _ = collect(name, size, seeds, root, extra=extra, base=base)
    tables[name] = md
    log(md + '\n')
  failed = [os.path.basename(w) for w, s in status.items() if s == 'failed']
  if failed:
    log(f'failed runs (non-finite loss): {", ".join(failed)}')
  return {'status': status, 'tables': tables, 'stopped': stopped}
