"""export.py as a command line: refusing to overwrite, --overwrite, bad --out, atomic writes."""

import json
import os
import re
import subprocess
import sys

import pytest
from safetensors import safe_open

from ssa import convert
from ssa import train_lib
from ssa.convert import export as export_lib
from ssa.evaluation import loading
from tests.test_train import _config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_FILES = ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']
SSA_FILES = sorted(['model.safetensors', 'ssa_config.json'] + TOKENIZER_FILES)
HF_FILES = sorted(['config.json', 'model.safetensors'] + TOKENIZER_FILES)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Workdirs of two tiny 3-step runs: a vanilla one (exports as hf) and an SSA one (as ssa)."""
  out = {}
  for name, strategy in (('hf', 'vanilla'), ('ssa', 'ssa')):
    wd = str(tmp_path_factory.mktemp(f'run_{name}'))
    cfg = _config(**{'train.num_steps': 3, 'checkpoint.every': 0, 'ssa.strategy': strategy})
    train_lib.train_and_evaluate(cfg, wd)
    out[name] = wd
  return out


def _export_cli(*args):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.run([sys.executable, 'export.py', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def _contents(d):
  """{relative path: bytes} of every file below d."""
  out = {}
  for root, _, files in os.walk(d):
    for f in files:
      p = os.path.join(root, f)
      with open(p, 'rb') as fh:
        out[os.path.relpath(p, d)] = fh.read()
  return out


def _one_error_line(p, *needles):
  lines = p.stderr.strip().splitlines()
  assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr[-3000:])
  assert lines[0].startswith('ERROR: ConversionError: '), lines
  for n in needles:
    assert n in lines[0], (n, lines[0])
  return lines[0]


def test_refuses_a_non_empty_dir_and_replaces_it_with_overwrite(runs, tmp_path):
  d = tmp_path / 'out'
  d.mkdir()  # an existing empty directory is a fine destination
  p = _export_cli(f'--workdir={runs["hf"]}', f'--out={d}')
  assert p.returncode == 0, p.stderr[-3000:]
  assert f'to {d} (hf format)' in p.stdout
  assert sorted(os.listdir(d)) == HF_FILES
  (d / 'notes.txt').write_text('mine')  # a file of the user's, next to the export
  before = _contents(d)

  p = _export_cli(f'--workdir={runs["ssa"]}', f'--out={d}')
  line = _one_error_line(p, str(d), '--overwrite', 'empty or new directory')
  assert 'notes.txt' in line
  assert _contents(d) == before  # nothing written, nothing removed

  p = _export_cli(f'--workdir={runs["ssa"]}', f'--out={d}', '--overwrite')
  assert p.returncode == 0, p.stderr[-3000:]
  assert f'to {d} (ssa format)' in p.stdout
  assert sorted(os.listdir(d)) == SSA_FILES  # no stale config.json, no notes.txt
  with safe_open(str(d / 'model.safetensors'), framework='numpy') as st:
    assert st.metadata() == {'format': 'ssa-checkpoint'}  # the SSA weights, not the HF ones
  _, scfg, _, extra = convert.load_ssa(str(d))
  assert scfg.strategy == 'ssa' and extra['step'] == 3
  assert os.listdir(tmp_path) == ['out']  # no temporary directories left


def test_out_that_is_a_file_is_a_one_line_error(runs, tmp_path):
  f = tmp_path / 'model.bin'
  f.write_bytes(b'keep me')
  p = _export_cli(f'--workdir={runs["ssa"]}', f'--out={f}')
  _one_error_line(p, str(f), 'not a directory')
  assert f.read_bytes() == b'keep me' and os.listdir(tmp_path) == ['model.bin']


def test_bad_destinations_are_refused_before_writing(tmp_path):
  f = tmp_path / 'file'
  f.write_text('x')
  with pytest.raises(convert.ConversionError, match=re.escape(f'{f} is a file, not a directory')):
    export_lib.check_out(str(f / 'sub' / 'out'))
  with pytest.raises(convert.ConversionError, match='only local directories'):
    export_lib.check_out('gs://bucket/exported')
  d = tmp_path / 'd'
  (d / 'checkpoints').mkdir(parents=True)
  (d / 'checkpoints' / 'x').write_text('x')
  with pytest.raises(convert.ConversionError, match='would delete'):
    export_lib.check_out(str(d), overwrite=True, keep=[str(d / 'checkpoints')])
  assert export_lib.check_out(str(tmp_path / 'new' / 'out')) == str(tmp_path / 'new' / 'out')
  assert sorted(os.listdir(tmp_path)) == ['d', 'file']  # checking creates nothing


def test_a_failing_export_leaves_the_old_directory_and_no_temporaries(runs, tmp_path,
                                                                      monkeypatch):
  hf, ssa = loading.load(workdir=runs['hf']), loading.load(workdir=runs['ssa'])
  d = str(tmp_path / 'out')
  assert export_lib.export(hf, d) == 'hf'
  before = _contents(d)

  def half_written(variables, model_cfg, ssa_cfg, out_dir, extra=None):
    with open(os.path.join(out_dir, 'model.safetensors'), 'wb') as f:
      f.write(b'partial')
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(export_lib, 'save_ssa', half_written)
  with pytest.raises(convert.ConversionError, match='No space left.*is unchanged'):
    export_lib.export(ssa, d, overwrite=True)
  assert _contents(d) == before and os.listdir(tmp_path) == ['out']
  with pytest.raises(convert.ConversionError, match='No space left'):
    export_lib.export(ssa, str(tmp_path / 'new'))  # a new directory is not created either
  assert os.listdir(tmp_path) == ['out']
  monkeypatch.undo()

  rename = os.rename  # the final rename fails: the old directory is moved back

  def failing_rename(src, dst):
    if os.path.basename(src).startswith('.out.tmp-'):
      raise OSError(5, 'Input/output error')
    return rename(src, dst)
  monkeypatch.setattr(os, 'rename', failing_rename)
  with pytest.raises(convert.ConversionError, match='old directory is back in place'):
    export_lib.export(ssa, d, overwrite=True)
  monkeypatch.undo()
  assert _contents(d) == before and os.listdir(tmp_path) == ['out']

  assert export_lib.export(ssa, d, overwrite=True) == 'ssa'  # and the API replaces it too
  assert sorted(os.listdir(d)) == SSA_FILES and os.listdir(tmp_path) == ['out']
  assert json.loads(open(os.path.join(d, 'ssa_config.json')).read())['extra']['step'] == 3
