r"""Evaluate a trained model: perplexity, zero-shot tasks, passkey, attention figures, generation.

    python eval.py --workdir=/tmp/ssa_tiny                       # config read from the checkpoint
    python eval.py --config=configs/tiny.py --workdir=/tmp/ssa_tiny --config.eval.passkey=True
    python eval.py --checkpoint=/tmp/ssa_tiny/checkpoints/10 --config.eval.zero_shot_dir=~/tasks
    python eval.py --workdir=/tmp/ssa_tiny --prompt='ROMEO:' --prompt='To be' \
        --config.eval.temperature=0.7 --config.eval.top_k=40     # print completions only

Writes <output_dir>/eval_results.json (+ attention_stats.json, zero_shot.md, figures/); output_dir
is config.eval.output_dir, default <workdir>/eval (or <checkpoints dir>/../eval for --checkpoint).
Fields: configs/eval_defaults.py. Without --config, the config saved with the checkpoint is used
and --config.* overrides cannot be given; use --set=key=value (repeatable) for those
(e.g. --set=eval.passkey=True --set="eval.splits=('validation','test')"); --set=eval.step=N
picks the checkpoint step (it is read before the checkpoint is loaded).
A missing checkpoint or one written for another model config exits with status 2 and a message
naming the path or the differing fields.
"""

# The command lives in ssa/commands/eval.py (installed as `ssa-eval`, pyproject.toml); this
# file keeps `python eval.py ...` working in a checkout.
from ssa import commands

if __name__ == '__main__':
  commands.evaluate()
