r"""Export a training run's model: Hugging Face format (vanilla) or the SSA checkpoint format.

    python export.py --workdir=runs/ft/ssa --out=exported/ssa                  # latest step
    python export.py --workdir=runs/ft/vanilla --out=exported/hf --format=hf
    python export.py --checkpoint=runs/x/checkpoints/400 --out=DIR
    python export.py --workdir=runs/ft/ssa --out=exported/ssa --overwrite      # replace DIR

--format=auto (default) writes Hugging Face safetensors + config.json for models without
temperatures (ssa.strategy=vanilla) and the SSA checkpoint format (ssa/convert/ssa_format.py)
otherwise. Only the parameters are read from the checkpoint (ssa/evaluation/loading.py).

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

# The command lives in ssa/commands/export.py (installed as `ssa-export`, pyproject.toml); this
# file keeps `python export.py ...` working in a checkout.
from ssa import commands

if __name__ == '__main__':
  commands.export()
