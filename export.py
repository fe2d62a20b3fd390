r"""Export a training run's model: Hugging Face format (vanilla) or the SSA checkpoint format.

    python export.py --workdir=runs/ft/ssa --out=exported/ssa                  # latest step
    python export.py --workdir=runs/ft/vanilla --out=exported/hf --format=hf
    python export.py --checkpoint=runs/x/checkpoints/400 --out=DIR

--format=auto (default) writes Hugging Face safetensors + config.json for models without
temperatures (ssa.strategy=vanilla) and the SSA checkpoint format (ssa/convert/ssa_format.py)
otherwise. Only the parameters are read from the checkpoint (ssa/evaluation/loading.py).
A missing checkpoint or a format that cannot represent the model exits with status 2.
"""

import os
import sys

from absl import app
from absl import flags

from ssa.checkpoint import CheckpointError
from ssa.convert import ConversionError
from ssa.convert.export import FORMATS, export
from ssa.evaluation import loading

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Training workdir (its checkpoints/ folder is read).')
flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (.../checkpoints/<step>).')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('out', None, 'Output directory.')
flags.DEFINE_enum('format', 'auto', list(FORMATS), 'auto: hf for vanilla, ssa otherwise.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.out is None:
    raise app.UsageError('--out is required.')
  try:
    loaded = loading.load(workdir=FLAGS.workdir, checkpoint=FLAGS.checkpoint, step=FLAGS.step)
    fmt = export(loaded, FLAGS.out, FLAGS.format)
  except (ConversionError, CheckpointError, ValueError) as e:
    print(f'ERROR: {type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Exported step {loaded.step} of {loaded.directory} to {os.path.abspath(FLAGS.out)} '
        f'({fmt} format).')


if __name__ == '__main__':
  app.run(main)
