"""The row-chunked loss (train_lib.LOSS_CHUNK_LOGITS): hidden states + head_logits equal the
model's logits, and the chunked loss and its gradients equal the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssa import model as model_lib
from ssa import train_lib
from tests import ssa_testlib as tl


@pytest.mark.parametrize('family', ['gpt2', 'llama'])  # tied embedding / separate lm_head
def test_chunked_loss_equals_the_plain_loss(family, monkeypatch):
  model, variables = tl.build(family, **tl.VARIANTS['ssa'], seq_len=12)
  toks = tl.tokens(2, 13, seed=3)
  batch = {'inputs': toks[:, :-1], 'targets': toks[:, 1:],
           'weights': jnp.ones((2, 12)).at[1, 7:].set(0.0),
           'segment_ids': jnp.array([[1] * 5 + [2] * 7, [1] * 12], jnp.int32),
           'positions': jnp.broadcast_to(jnp.arange(12), (2, 12))}
  params, consts = variables['params'], {k: v for k, v in variables.items() if k != 'params'}
  hidden = model.apply(variables, batch['inputs'], return_hidden=True)
  np.testing.assert_allclose(model_lib.head_logits(params, hidden, model.cfg),
                             model.apply(variables, batch['inputs']), rtol=1e-6, atol=1e-6)

  def loss(p):
    return train_lib.loss_terms(p, consts, batch, model=model)[0]

  plain, g_plain = jax.value_and_grad(loss)(params)
  # 5 rows per chunk: 24 rows -> 5 chunks, the last one padded
  monkeypatch.setattr(train_lib, 'LOSS_CHUNK_LOGITS', 5 * model.cfg.padded_vocab_size)
  chunked, g_chunked = jax.value_and_grad(loss)(params)
  assert abs(float(chunked - plain)) < 1e-5 * abs(float(plain))
  for a, b in zip(jax.tree.leaves(g_chunked), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
