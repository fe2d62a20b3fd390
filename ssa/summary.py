"""Print a model's shape and parameter counts, and what SSA adds, without allocating it.

    python -m ssa.summary --config=configs/base.py:gpt2-124m [--config.ssa.weight_sharing=False]
"""

from absl import app
from ml_collections import config_flags

from ssa import config_lib
from ssa.strategies import temperature_specs
from ssa import model as model_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/base.py', 'Config file (:preset).')


def summary(config) -> str:
  mcfg, scfg = config_lib.model_config(config.model), config_lib.ssa_config(config.ssa)
  counts = model_lib.abstract_param_counts(model_lib.Transformer(mcfg, scfg))
  specs = ', '.join(f'{e}: {s.strategy}/{s.terms}' for e, s in
                    temperature_specs(scfg).items()) or 'none'
  return '\n'.join([
      f'model   {mcfg.preset or mcfg.family}: family={mcfg.family} layers={mcfg.n_layers} '
      f'd_model={mcfg.d_model} heads={mcfg.n_heads}/{mcfg.n_kv_heads} head_dim={mcfg.head_dim} '
      f'd_ff={mcfg.d_ff} vocab={mcfg.vocab_size} (table {mcfg.padded_vocab_size})',
      f'ssa     strategy={scfg.strategy} temperatures: {specs}' + (
          f' weight_sharing={scfg.weight_sharing} granularity={scfg.granularity}'
          if temperature_specs(scfg) else ''),
      f'params  total {counts["total"]:,} = base {counts["base"]:,} + SSA {counts["temperature"]:,}'
      f' ({100 * counts["added_ratio"]:.4f}% added)',
  ])


def main(argv):
  del argv
  print(summary(_CONFIG.value))


if __name__ == '__main__':
  app.run(main)
