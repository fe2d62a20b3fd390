"""Evaluation (SSA_SPEC §3): perplexity, zero-shot scoring, passkey, generation, attention statistics.

    scoring.py          LM (apply_fn + variables) and Scorer: bucketed, jitted token log-likelihoods,
                        harness-style loglikelihood / loglikelihood_rolling requests
    perplexity.py       token-level ppl over eval batches; word/byte ppl with rolling windows
    zero_shot.py        lambada / piqa / hellaswag / winogrande / arc from local JSONL, harness scoring
    passkey.py          passkey accuracy over context length x key depth
    generation.py       kv-cache sampling (temperature / top-k / top-p), greedy reference
    attention_stats.py  dilution curves, entropy, temperatures from the reference kernel
    loading.py          restore a trained model through ssa.checkpoint / ssa.train_lib
    runner.py           what eval.py runs; writes eval_results.json and figures
    collect.py          eval_results.json of several runs -> one markdown table
    harness.py          optional lm-evaluation-harness adapter
"""
