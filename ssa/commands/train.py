r"""Train a model: any family, any SSA variant, on CPU, GPU or a multi-host Cloud TPU slice.

    python train.py --config=configs/shakespeare.py --workdir=/tmp/ssa_shakespeare
    python train.py --config=configs/gpt2_124m_pretrain.py --workdir=gs://BUCKET/run1 \
        --config.ssa.strategy=vanilla --config.train.num_steps=100000

Re-running the same command with the same --workdir resumes from the latest checkpoint.
SIGTERM / SIGINT (Ctrl-C) saves a checkpoint and exits with status 0; a second Ctrl-C aborts.
A non-finite loss saves the last good state and exits with status 3 (NonFiniteError).
--multihost calls jax.distributed.initialize() (Cloud TPU: no arguments needed; elsewhere pass
--coordinator, --num_processes, --process_id).
"""



import os
import shlex
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ssa import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'ml_collections config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory (local or gs://) for checkpoints and metrics.')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() before anything else.')
flags.DEFINE_string('coordinator', None, 'jax.distributed coordinator address host:port '
                    '(not needed on Cloud TPU).')
flags.DEFINE_integer('num_processes', None, 'jax.distributed number of processes.')
flags.DEFINE_integer('process_id', None, 'jax.distributed id of this process.')
flags.DEFINE_string('cpu_collectives', 'gloo', 'CPU-only multi-process collectives implementation.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_logging()  # orbax logs every save at INFO; --verbosity=0 shows it
  # JAX and the project are imported only here, after the flags are parsed, so that
  # jax.distributed.initialize() runs before anything can touch a JAX backend (it must).
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.multihost or FLAGS.coordinator:
    if FLAGS.coordinator:
      jax.config.update('jax_cpu_collectives_implementation', FLAGS.cpu_collectives)
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  from ssa import train_lib  # pylint: disable=g-import-not-at-top
  from ssa.config_lib import ConfigError  # pylint: disable=g-import-not-at-top
  from ssa.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from ssa.data import DataError  # pylint: disable=g-import-not-at-top
  from ssa.convert import ConversionError  # pylint: disable=g-import-not-at-top
  logging.info('JAX: %d process(es), %d devices (%s)', jax.process_count(), jax.device_count(),
               jax.devices()[0].device_kind)
  t0 = time.time()
  try:
    out = train_lib.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, DataError, CheckpointError, ConversionError) as e:
    cli.exit_with_error(e)
  except OSError as e:  # e.g. a full disk while writing metrics.jsonl: one line naming the file
    cli.exit_with_error(e)
  except train_lib.NonFiniteError as e:
    cli.exit_with_error(e, 3)
  if out['stopped_by']:
    logging.info('Stopped by %s at step %d (checkpoint saved).', out['stopped_by'], out['step'])
  if jax.process_index() == 0:
    print(summary(FLAGS.config, FLAGS.workdir, out, time.time() - t0), file=sys.stderr, flush=True)
  if FLAGS.multihost or FLAGS.coordinator:
    jax.distributed.shutdown()



def _duration(seconds: float) -> str:
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def sample_text(config, out) -> str | None:
  """A short sample of the trained model (train.summary_sample_tokens tokens after a document
  start, config.eval's temperature / top_k / top_p / seed), or None when not applicable: a
  synthetic dataset, summary_sample_tokens=0, or several processes (the state is sharded
  across them)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ssa.evaluation.common import is_synthetic, make_tokenizer  # pylint: disable=g-import-not-at-top
  from ssa.evaluation.generation import Generator  # pylint: disable=g-import-not-at-top
  n = int(config.train.summary_sample_tokens)
  if n <= 0 or is_synthetic(config) or jax.process_count() > 1:
    return None
  model = out['model']
  tok = make_tokenizer(config, model.cfg)
  n = min(n, model.cfg.max_len)
  variables = {'params': out['state'].params}
  if out['state'].constants:
    variables['constants'] = out['state'].constants
  e = config.eval
  start = tok.bos_id if tok.bos_id is not None else tok.eos_id
  (ids,) = Generator(model, variables, n + 1, tok.pad_id).sample(
      [[start]], n, rng=jax.random.PRNGKey(e.sample_seed), temperature=e.temperature,
      top_k=e.top_k, top_p=e.top_p)
  return tok.decode([i for i in ids if i != tok.eos_id])


def summary(config, workdir: str, out, wall_s: float) -> str:
  """The end-of-run summary: wall time, tokens, final losses, the checkpoint, the commands that
  evaluate or sample it, and (language models) a short sample."""
  step, hist, ev = out['step'], out['history'], out['eval']
  B, T = config.data.batch_size, config.data.seq_len
  ck = os.path.join(os.path.abspath(workdir), 'checkpoints', str(step))
  w = shlex.quote(workdir)
  how = f'stopped by {out["stopped_by"]}' if out['stopped_by'] else 'done'
  lines = [f'=== Training {how}: step {step}/{config.train.num_steps}, {_duration(wall_s)} wall '
           f'(this invocation), {out["tokens_seen"]:,} tokens ({step} steps x {B} x {T})']
  losses = []
  if hist:
    losses.append(f'train loss {hist[-1]["loss"]:.4f} (step {hist[-1]["step"]})')
  if ev:
    losses.append(f'validation loss {ev["loss"]:.4f} ({config.data.eval_split}, '
                  f'{int(ev["tokens"]):,} tokens)')
  if losses:
    lines.append('  ' + ', '.join(losses))
  lines.append(f'  checkpoint: {ck}')
  lines.append(f'  evaluate:   python eval.py --workdir={w}')
  from ssa.evaluation.common import is_synthetic  # pylint: disable=g-import-not-at-top
  if not is_synthetic(config):
    prompt = 'ROMEO:' if config.data.dataset == 'shakespeare' else 'YOUR PROMPT'
    lines.append(f"  sample:     python eval.py --workdir={w} --prompt='{prompt}'")
  text = sample_text(config, out)
  if text is not None:
    one = ' '.join(repr(text)[1:-1].split())
    lines.append(f'  sample ({config.train.summary_sample_tokens} tokens from a document start, '
                 f'temperature {config.eval.temperature:g}): {one[:400]}')
  return '\n'.join(lines)
