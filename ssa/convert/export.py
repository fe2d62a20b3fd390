"""Export a training run's model: Hugging Face format (vanilla) or the SSA checkpoint format.

    python -m ssa.convert.export --workdir=runs/ft/ssa --out=exported/ssa          # latest step
    python -m ssa.convert.export --workdir=runs/ft/vanilla --out=exported/hf --format=hf
    python -m ssa.convert.export --checkpoint=runs/x/checkpoints/400 --out=DIR

--format=auto (default) writes Hugging Face safetensors + config.json for vanilla models
(ssa.strategy=vanilla) and the SSA checkpoint format (ssa/convert/ssa_format.py) otherwise.
The SSA format also records the tokenizer spec and the source step in ssa_config.json 'extra'.
"""

import os
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():  # only when run as a script: importing the module defines no flags
  flags.DEFINE_string('workdir', None, 'Training workdir (its checkpoints/ folder is read).')
  flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (.../checkpoints/<step>).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_enum('format', 'auto', ['auto', 'hf', 'ssa'], 'auto: hf for vanilla, ssa otherwise.')


def export(loaded, out: str, fmt: str = 'auto') -> str:
  """Writes `loaded` (ssa.evaluation.loading.Loaded) to `out`; returns the format written."""
  from ssa import convert  # pylint: disable=g-import-not-at-top
  mcfg, scfg = loaded.model.cfg, loaded.model.ssa
  if fmt == 'auto':
    fmt = 'hf' if scfg.strategy == 'vanilla' else 'ssa'
  if fmt == 'hf' and scfg.strategy != 'vanilla':  # e.g. yarn: no tau_* params, but not vanilla
    raise convert.ConversionError(f'--format=hf cannot represent ssa.strategy={scfg.strategy!r}; '
                                  'use --format=ssa (or auto).')
  if fmt == 'hf':
    convert.save_hf(loaded.variables['params'], mcfg, out)
  else:
    extra = {'tokenizer': loaded.config.data.tokenizer, 'step': loaded.step,
             'source': loaded.directory}
    convert.save_ssa(loaded.variables, mcfg, scfg, out, extra=extra)
  return fmt


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.out is None:
    raise app.UsageError('--out is required.')
  from ssa.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from ssa.convert import ConversionError  # pylint: disable=g-import-not-at-top
  from ssa.evaluation import loading  # pylint: disable=g-import-not-at-top
  try:
    loaded = loading.load(workdir=FLAGS.workdir, checkpoint=FLAGS.checkpoint, step=FLAGS.step)
    fmt = export(loaded, FLAGS.out, FLAGS.format)
  except (ConversionError, CheckpointError, ValueError) as e:
    print(f'ERROR: {type(e).__name__}: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'Exported step {loaded.step} of {loaded.directory} to {os.path.abspath(FLAGS.out)} '
        f'({fmt} format).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
