"""Source files of the `hf_remote` export (ssa/convert/hf_remote_format.py), copied as they are
into every export directory: configuration_ssa.py and modeling_ssa.py, which Hugging Face
transformers imports with `trust_remote_code=True`.

They import only torch, transformers and the standard library (never jax or this project), so
nothing here is imported by the project's own code; importing this package imports neither.
"""
