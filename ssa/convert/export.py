"""Write a trained model in Hugging Face format (no temperatures) or the SSA checkpoint format.

    export(loaded, out, fmt='auto')     # loaded: ssa.evaluation.loading.Loaded (or any object
                                        # with .model, .variables, .config, .step, .directory)

The command line is export.py at the top of the repository. fmt='auto' writes Hugging Face
safetensors + config.json for a strategy without temperatures (ssa.strategy=vanilla) and the SSA
checkpoint format (ssa/convert/ssa_format.py) otherwise; the SSA format also records the
tokenizer spec and the source step in ssa_config.json 'extra'.
"""

from __future__ import annotations

from ssa import strategies
from ssa.convert.common import ConversionError
from ssa.convert.hf import save_hf
from ssa.convert.ssa_format import save_ssa

FORMATS = ('auto', 'hf', 'ssa')


def export(loaded, out: str, fmt: str = 'auto') -> str:
  """Writes `loaded`'s model to `out`; returns the format written ('hf' or 'ssa')."""
  mcfg, scfg = loaded.model.cfg, loaded.model.ssa
  if fmt not in FORMATS:
    raise ConversionError(f'--format={fmt!r} is not valid; expected one of {list(FORMATS)}.')
  plain = not strategies.temperature_specs(scfg)  # Hugging Face models have no temperatures
  if fmt == 'auto':
    fmt = 'hf' if plain else 'ssa'
  if fmt == 'hf' and not plain:  # e.g. yarn: no tau_* params, but a temperature all the same
    raise ConversionError(f'--format=hf cannot represent ssa.strategy={scfg.strategy!r}; '
                          'use --format=ssa (or auto).')
  if fmt == 'hf':
    save_hf(loaded.variables['params'], mcfg, out)
  else:
    extra = {'tokenizer': loaded.config.data.tokenizer, 'step': loaded.step,
             'source': loaded.directory}
    save_ssa(loaded.variables, mcfg, scfg, out, extra=extra)
  return fmt
