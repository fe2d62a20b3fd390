"""Data: tfds builders (local_text, embedded Shakespeare, catalog passthrough), tokenizers, the grain
pipeline (packing, sharding, resumable iterators) and synthetic tasks. See each module's docstring.

    it, tok = ssa.data.make_train_iterator(config, jax.process_index(), jax.process_count())
    batch = next(it)            # dict of numpy [B / processes, T]
    state = it.get_state()      # small JSON-able dict; it.set_state(state) resumes exactly
"""

from ssa.data.errors import DataError
from ssa.data.pipeline import BATCH_KEYS, lm_dataset, make_eval_iterator, make_train_iterator
from ssa.data.tokenizers import Tokenizer, get_tokenizer

__all__ = ['BATCH_KEYS', 'DataError', 'Tokenizer', 'get_tokenizer', 'lm_dataset',
           'make_eval_iterator', 'make_train_iterator']
