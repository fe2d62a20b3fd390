r"""Export a training run's model: Hugging Face format (vanilla), a transformers model with remote
code (any model), or the SSA checkpoint format.

    python export.py --workdir=runs/ft/ssa --out=exported/ssa                  # latest step
    python export.py --workdir=runs/ft/vanilla --out=exported/hf --format=hf
    python export.py --workdir=runs/ft/ssa --out=exported/remote --format=hf_remote
    python export.py --checkpoint=runs/x/checkpoints/400 --out=DIR
    python export.py --workdir=runs/ft/ssa --out=exported/ssa --overwrite      # replace DIR

--format=auto (default) writes Hugging Face safetensors + config.json for models without
temperatures (ssa.strategy=vanilla) and the SSA checkpoint format (ssa/convert/ssa_format.py)
otherwise. --format=hf_remote writes any model (every family and strategy, SSA included) for
Hugging Face transformers with remote code: config.json with auto_map, configuration_ssa.py,
modeling_ssa.py (a PyTorch port of the model) and model.safetensors, loaded with
AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True) (ssa/convert/hf_remote_format.py).
Every format carries the tokenizer files for AutoTokenizer.from_pretrained(DIR). Only the
parameters are read from the checkpoint (ssa/evaluation/loading.py).

--out is a local directory: a new one (created with its parents) or an empty one. A non-empty
directory is refused unless --overwrite is given, which replaces it as a whole (no file of the
old one is kept). The export is atomic: it is written into a temporary sibling directory
(.<name>.tmp-<pid>-<hex>) that is renamed into place only once complete, so a failed export
leaves --out as it was (ssa/convert/export.py has the details). gs:// and other URLs are
refused: export locally, then copy.

Exit status 2, with one line 'ERROR: <type>: <message>' on stderr: a missing checkpoint, a format
that cannot represent the model, or an --out that is refused (a non-empty directory without
--overwrite, an existing file, a URL).
"""

import os

from absl import app
from absl import flags

from ssa import cli
from ssa.checkpoint import CheckpointError
from ssa.convert import ConversionError
from ssa.convert.export import FORMATS, check_out, export
from ssa.evaluation import loading

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Training workdir (its checkpoints/ folder is read).')
flags.DEFINE_string('checkpoint', None, 'A checkpoint step directory (.../checkpoints/<step>).')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_string('out', None, 'Output directory (local): new or empty, or any existing '
                    'directory with --overwrite.')
flags.DEFINE_enum('format', 'auto', list(FORMATS),
                  'auto: hf for vanilla, ssa otherwise; hf_remote: any model as a transformers '
                  'model with remote code (trust_remote_code=True).')
flags.DEFINE_boolean('overwrite', False, 'Replace --out if it is a non-empty directory (all of '
                     'its files are removed, atomically once the export is complete).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.out is None:
    raise app.UsageError('--out is required.')
  cli.quiet_logging()
  try:
    check_out(FLAGS.out, FLAGS.overwrite)  # refuse before the (slow) checkpoint read
    loaded = loading.load(workdir=FLAGS.workdir, checkpoint=FLAGS.checkpoint, step=FLAGS.step)
    fmt = export(loaded, FLAGS.out, FLAGS.format, overwrite=FLAGS.overwrite)
  except (ConversionError, CheckpointError, OSError, ValueError) as e:
    cli.exit_with_error(e)
  print(f'Exported step {loaded.step} of {loaded.directory} to '
        f'{os.path.abspath(os.path.expanduser(FLAGS.out))} ({fmt} format).')

