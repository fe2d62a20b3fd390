r"""Evaluate a trained model: perplexity, zero-shot tasks, passkey, attention figures, generation.

    python eval.py --workdir=/tmp/ssa_tiny                       # config read from the checkpoint
    python eval.py --config=configs/tiny.py --workdir=/tmp/ssa_tiny --config.eval.passkey=True
    python eval.py --checkpoint=/tmp/ssa_tiny/checkpoints/10 --config.eval.zero_shot_dir=~/tasks
    python eval.py --workdir=/tmp/ssa_tiny --prompt='ROMEO:' --prompt='To be' \
        --config.eval.temperature=0.7 --config.eval.top_k=40     # print completions only

Writes <output_dir>/eval_results.json (+ attention_stats.json, zero_shot.md, figures/); output_dir
is config.eval.output_dir, default <workdir>/eval (or <checkpoints dir>/../eval for --checkpoint).
Fields: configs/eval_defaults.py. Without --config, the config saved with the checkpoint is used
and --config.* overrides cannot be given; use --set=key=value (repeatable) for those
(e.g. --set=eval.passkey=True --set="eval.splits=('validation','test')"); --set=eval.step=N
picks the checkpoint step (it is read before the checkpoint is loaded).
A missing checkpoint or one written for another model config exits with status 2 and a message
naming the path or the differing fields.
"""

import os


from absl import app
from absl import flags
from ml_collections import config_flags

from ssa import cli
from ssa import config_lib
from ssa.checkpoint import CheckpointError
from ssa.config_lib import ConfigError
from ssa.data import DataError
from ssa.evaluation import loading, runner

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'ml_collections config file (configs/*.py); '
                                'default: the config saved in the checkpoint.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir (its checkpoints/ folder is read).')
flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (.../checkpoints/<step>) or '
                    'a checkpoints directory.')
flags.DEFINE_multi_string('prompt', None, 'Print completions of this prompt (repeatable) and exit.')
flags.DEFINE_multi_string('set', [], 'key=value override of a config field (repeatable; values '
                          'parsed as Python literals), for runs without --config, e.g. '
                          '--set=eval.passkey=True --set=eval.word_ppl_max_docs=5.')


def apply_overrides(config, overrides):
  """Applies --set key=value items (values parsed as Python literals, else strings)."""
  return config_lib.apply_overrides(config, config_lib.parse_overrides(overrides))


def override_value(overrides, key, default=None):
  """The value --set gives `key` (the last wins; parsed as apply_overrides does), else default."""
  return config_lib.parse_overrides(overrides).get(key, default)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if (FLAGS.workdir is None) == (FLAGS.checkpoint is None):
    raise app.UsageError('Give exactly one of --workdir and --checkpoint.')
  cli.quiet_logging()
  try:
    config = FLAGS.config
    if config is not None:
      config = config.copy_and_resolve_references()  # unlocked copy
    step = None
    loaded = None
    if config is not None:
      apply_overrides(config, FLAGS.set)
      step = config.eval.step
    else:  # the checkpoint's config is read only after loading: take eval.step from --set now
      step = override_value(FLAGS.set, 'eval.step')
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
      raise ValueError(f'eval.step={step!r}: expected an integer checkpoint step or None.')
    loaded = loading.load(config, workdir=FLAGS.workdir, checkpoint=FLAGS.checkpoint, step=step)
    config = loaded.config
    if FLAGS.config is None:
      apply_overrides(config, FLAGS.set)
    if FLAGS.prompt:
      runner.complete(config, loaded, FLAGS.prompt)
      return
    out = config.eval.output_dir or (os.path.join(FLAGS.workdir, 'eval') if FLAGS.workdir else
                                     os.path.join(os.path.dirname(loaded.directory), 'eval'))
    runner.run(config, loaded, out)
  except (ConfigError, DataError, CheckpointError, OSError, ValueError) as e:
    cli.exit_with_error(e)

