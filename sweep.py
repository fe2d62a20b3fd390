r"""Run the paper's ablation sweeps (configs/sweeps.py): every (variant, seed), one after the other.

    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --root=runs/sweeps
    python sweep.py --sweep=all --size=small --seeds=0,1,2        # every sweep, shared runs once
    python sweep.py --sweep=strategies --size=small --seeds=0 --set=train.num_steps=600 \
        --root=runs/long
    python sweep.py --sweep=all --size=paper --seeds=0,1 --root=gs://B/sweeps --print_commands \
        --train_flags=--multihost        # one train.py command per run (cluster / TPU launchers)
    python sweep.py --sweep=embeddings --size=small --seeds=0,1,2 --collect_only

Workdirs are ROOT/SIZE/VARIANT_sSEED (run.json, result.json, checkpoints, metrics.jsonl); finished
runs are skipped and interrupted ones resumed, so re-running the same command continues a sweep.
Tables go to ROOT/SIZE/SWEEP.md and stdout. Ctrl-C / SIGTERM saves the current run's checkpoint and
stops the sweep. A workdir holding another run (different run.json) stops it with status 2.
See ssa/sweep.py for the files and the table's columns.
"""

# The command lives in ssa/commands/sweep.py (installed as `ssa-sweep`, pyproject.toml); this
# file keeps `python sweep.py ...` working in a checkout.
from ssa import commands

if __name__ == '__main__':
  commands.sweep()
