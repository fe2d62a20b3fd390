"""Checkpoints and SSA-format exports written before the architecture change (commit 8968f82,
tests/fixtures/make_legacy_fixture.py) still load, to the logits they were made with, and still resume.

The logits are compared to float32 rounding (rtol 1e-5, atol 1e-6), not bit for bit: XLA-CPU's
kernels differ between hosts (the same code on another CPU differs in the last bit of ~2/3 of
the logits, 1.2e-7 at most here), while any change of the math (a missing temperature, a wrong
scale, a transposed weight) moves them by orders of magnitude more."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from ssa import convert
from ssa import train_lib
from ssa.evaluation import loading
from ssa.model import Transformer
from tests.fixtures import make_legacy_fixture as fixture

RUNS = sorted(fixture.RUNS)


def _as_made(mcfg, scfg):
  """The fixture's logits came from the xla kernel (`auto` on CPU at 8968f82); computing them
  with it keeps the check at the host's rounding. The flash kernel (now `auto` on CPU) agrees to
  < 1e-5 (tests/test_flash.py)."""
  return Transformer(mcfg, dataclasses.replace(scfg, backend='xla'))


def _assert_same_logits(got, want):
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def _expected(name):
  return (np.load(os.path.join(fixture.OUT, 'tokens.npy')),
          np.load(os.path.join(fixture.OUT, f'{name}_logits.npy')))


@pytest.mark.parametrize('name', RUNS)
def test_checkpoint_restores_to_identical_logits(name):
  tokens, want = _expected(name)
  loaded = loading.load(workdir=os.path.join(fixture.OUT, name))
  assert loaded.step == 2
  model = _as_made(loaded.model.cfg, loaded.model.ssa)
  _assert_same_logits(model.apply(loaded.variables, tokens), want)


@pytest.mark.parametrize('name', RUNS)
def test_ssa_export_loads_to_identical_logits(name):
  tokens, want = _expected(name)
  mcfg, scfg, variables, extra = convert.load_ssa(os.path.join(fixture.OUT, f'{name}_export'))
  assert extra['step'] == 2
  got = _as_made(mcfg, scfg).apply(variables, tokens)
  _assert_same_logits(got, want)


@pytest.mark.parametrize('name', RUNS)
def test_checkpoint_resumes_training(name, tmp_path):
  workdir = str(tmp_path / name)
  shutil.copytree(os.path.join(fixture.OUT, name), workdir)
  cfg = fixture.config(fixture.RUNS[name])
  cfg.train.num_steps = 3
  out = train_lib.train_and_evaluate(cfg, workdir)
  assert out['step'] == 3 and [h['step'] for h in out['history']] == [3]
  assert np.isfinite(out['history'][-1]['loss'])


def test_evaluation_loads_parameters_whatever_optimizer_wrote_the_checkpoint(tmp_path):
  """loading.load builds no optimizer: an optimizer config this code does not know (and whose
  state layout it could not rebuild) does not matter; the logits are identical."""
  tokens, want = _expected('ssa')
  workdir = str(tmp_path / 'ssa')
  shutil.copytree(os.path.join(fixture.OUT, 'ssa'), workdir)
  meta_file = os.path.join(workdir, 'checkpoints', '2', 'meta', 'metadata')
  with open(meta_file) as f:
    meta = json.load(f)
  meta['config']['optim'].update(optimizer='lion', mode='mystery', temperature_group=True)
  meta['config']['train']['micro_batches'] = 3
  with open(meta_file, 'w') as f:
    json.dump(meta, f)
  loaded = loading.load(workdir=workdir)
  assert not hasattr(loaded, 'setup')
  model = _as_made(loaded.model.cfg, loaded.model.ssa)
  _assert_same_logits(model.apply(loaded.variables, tokens), want)
