"""The installable package (pyproject.toml): its pinned dependencies equal requirements.txt's,
and `pip install .` into a fresh venv gives the `ssa` package and command lines that run from
outside the checkout."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins(lines):
  return {re.split('==', l)[0].strip().lower().replace('_', '-'): l.split('==')[1].strip()
          for l in lines if '==' in l}


def test_package_dependencies_are_the_runtime_pins_of_requirements_txt():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  deps = _pins(project['dependencies'])
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    lines = [l.split('#')[0].strip() for l in f]
  reqs = _pins(lines)
  test_only = {'pytest', 'pytest-xdist'}
  assert deps == {k: v for k, v in reqs.items() if k not in test_only}
  assert set(project['scripts']) == {'ssa-train', 'ssa-eval', 'ssa-sweep', 'ssa-export'}


def test_pip_install_gives_the_package_and_its_commands_outside_the_checkout(tmp_path):
  # The source tree as a user gets it (a copy: the build writes build/ beside pyproject.toml).
  src = tmp_path / 'src'
  src.mkdir()
  for f in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, f), src / f)
  for d in ('ssa', 'configs'):
    shutil.copytree(os.path.join(ROOT, d), src / d,
                    ignore=shutil.ignore_patterns('__pycache__'))
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
  py = venv / 'bin' / 'python'
  site = subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        check=True, capture_output=True, text=True).stdout.strip()
  # The dependencies, pip and the build backend come from this interpreter's environment (no
  # network needed); the package is built from the copy and installed into the new venv.
  with open(os.path.join(site, 'test_deps.pth'), 'w') as f:
    f.write(sysconfig.get_paths()['purelib'] + '\n')
  r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                      str(src)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  outside = tmp_path / 'elsewhere'
  outside.mkdir()
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('PYTHONPATH', None)
  where = subprocess.run([str(py), '-c', 'import ssa, configs; print(ssa.__file__, configs.__file__)'],
                         cwd=outside, env=env, check=True, capture_output=True, text=True).stdout
  assert where.startswith(site) and ROOT not in where and str(src) not in where, where
  config = os.path.join(site, 'configs', 'tiny.py')  # the installed configs/ folder
  r = subprocess.run([str(venv / 'bin' / 'ssa-train'), f'--config={config}',
                      f'--workdir={tmp_path / "run"}', '--config.train.num_steps=4',
                      '--config.checkpoint.every=0'],
                     cwd=outside, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert os.path.exists(tmp_path / 'run' / 'metrics.jsonl')
  r = subprocess.run([str(venv / 'bin' / 'ssa-export'), f'--workdir={tmp_path / "run"}',
                      f'--out={tmp_path / "export"}'], cwd=outside, env=env, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0 and 'Exported step 4' in r.stdout, r.stdout + r.stderr[-3000:]
