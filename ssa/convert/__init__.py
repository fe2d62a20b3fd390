"""Pretrained weight import / export (DESIGN.md: ssa/convert).

    from ssa import convert
    model_cfg, params = convert.load_hf('dir-or-org/repo', ssa_config)       # GPT-2, Pythia, Llama
    model_cfg, params, tok = convert.load_gguf('model.gguf', ssa_config)     # Llama family GGUF
    convert.save_hf(params, model_cfg, 'out_dir')                           # vanilla models
    convert.save_ssa(variables, model_cfg, ssa_cfg, 'out_dir')              # SSA models (any)
    model_cfg, ssa_cfg, variables, extra = convert.load_ssa('out_dir')
    convert.save_hf_remote(variables, model_cfg, ssa_cfg, 'out_dir')        # any model, for
                                                     # transformers' trust_remote_code=True

`params` is the exact 'params' tree of ssa.model.Transformer(model_cfg, ssa_cfg).init, with the
SSA temperature parameters at their init values (identity at start). Any mismatch raises
ConversionError naming the file and tensors. torch / transformers are never imported here.
"""

from ssa.convert.common import ConversionError
from ssa.convert.gguf import load_gguf
from ssa.convert.hf import load_hf, model_config_from_hf, hf_config_from_model, save_hf
from ssa.convert.hf_remote_format import save_hf_remote
from ssa.convert.ssa_format import load_ssa, read_ssa_config, save_ssa

__all__ = ['ConversionError', 'load_hf', 'load_gguf', 'save_hf', 'model_config_from_hf',
           'hf_config_from_model', 'save_ssa', 'load_ssa', 'read_ssa_config', 'save_hf_remote']
