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
  if FLAGS.multihost or FLAGS.coordinator:
    jax.distributed.shutdown()

