"""Evaluation (docs/ssa.md §3): perplexity, zero-shot scoring, passkey, generation, attention stats.

Each evaluation is a unit with one interface (common.Unit: `name`, `enabled(config)` from its
config.eval fields, `run(ctx)` adding to ctx.results), defined next to the computation it wraps;
runner.py loops over them.

    common.py           EvalContext (config, model, tokenizer, LM, Scorer, results, cached
                        documents), read_jsonl / check_limit, write_results, eval_splits, make_lm
    scoring.py          LM (apply_fn + variables) and Scorer: bucketed, jitted token log-likelihoods,
                        harness-style loglikelihood / loglikelihood_rolling requests
    perplexity.py       token-level ppl over eval batches; word/byte ppl with rolling windows;
                        units SPLITS (token + document ppl per split) and WIKITEXT
    zero_shot.py        lambada / piqa / hellaswag / winogrande / arc from local JSONL, harness
                        scoring; unit UNIT (+ zero_shot.md)
    passkey.py          passkey accuracy over context length x key depth; unit UNIT
    attention_stats.py  dilution curves, entropy, temperatures from the reference kernel;
                        attention_stats.json + figures; unit UNIT
    generation.py       kv-cache sampling (temperature / top-k / top-p), greedy reference;
                        complete() for eval.py --prompt
    loading.py          restore a trained model through ssa.checkpoint / ssa.train_lib
    runner.py           what eval.py runs: the enabled units in order, eval_results.json
    collect.py          eval_results.json of several runs -> one markdown table
    harness.py          optional lm-evaluation-harness adapter
"""
