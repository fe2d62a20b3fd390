r"""n-gram baselines of a config's data: where an LM result sits (ssa/measure.py).

    python -m ssa.experiments.ngram --config=configs/frozen_llm.py:base \
        --outdir=docs/results/frozen_llm --eval_split=test
    python -m ssa.experiments.ngram --config=configs/sweeps.py:strategies --outdir=DIR

Unigram, bigram and trigram models with add-k smoothing (k chosen per order on the last tenth of
the train documents), counted on config.data.train_split, scored on --eval_split (default
config.data.eval_split) in nats per token of config.data.tokenizer. Each document is tokenized
alone (no EOS), its first tokens scored with the history they have. Writes OUTDIR/ngram.json.
"""

from __future__ import annotations

import time

from ssa import cli
from ssa import measure
from ssa.data import get_tokenizer
from ssa.evaluation.common import dataset_texts
from ssa.experiments.common import write_json


def baselines(config, eval_split=None, log=print) -> dict:
  t0 = time.time()
  d = config.data
  tok = get_tokenizer(d.tokenizer, d.eos_token)
  split = eval_split or d.eval_split
  docs = {s: [tok.encode(t) for t in dataset_texts(config, s)] for s in (d.train_split, split)}
  out = measure.ngram_baselines(docs[d.train_split], docs[split], tok.vocab_size)
  result = {'dataset': d.dataset, 'tokenizer': d.tokenizer, 'train_split': d.train_split,
            'eval_split': split, 'train_tokens': sum(map(len, docs[d.train_split])),
            'eval_tokens': sum(map(len, docs[split])), 'unit': 'nats/token',
            'baselines': out, 'seconds': time.time() - t0}
  for name, b in out.items():
    log(f'{name}: {b["nll"]:.4f} nats/token (add-k, k={b["k"]}) on {b["tokens"]:.0f} '
        f'{split} tokens')
  return result


def _run(config, outdir, eval_split=None):
  cli.quiet_logging()
  path = write_json(outdir, 'ngram.json', baselines(config, eval_split))
  print(f'-> {path}')


if __name__ == '__main__':
  cli.run_config_experiment(_run, config_help='the config whose data is counted and scored',
                            outdir_help='where ngram.json goes',
                            string_flags=(('eval_split', 'split scored (default: '
                                           'config.data.eval_split)'),))
