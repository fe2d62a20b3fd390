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

# The command lives in ssa/commands/train.py (installed as `ssa-train`, pyproject.toml); this
# file keeps `python train.py ...` working in a checkout.
from ssa import commands

if __name__ == '__main__':
  commands.train()
