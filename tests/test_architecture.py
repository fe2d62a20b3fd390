"""The import graph of the package: no cycle (imports inside functions count), and every arrow
points down the layers of the README's architecture section."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Layers, bottom to top. A module may import only modules of its own or a LOWER layer.
LAYERS = [
    ('ssa.errors', 'ssa.hostmem'),
    ('ssa.flash',),
    ('ssa.kernels', 'ssa.strategies', 'ssa.sharding', 'ssa.data', 'ssa.metrics', 'ssa.measure',
     'ssa.plots',
     'ssa.checkpoint', 'ssa.signals'),
    ('ssa.config_lib', 'ssa.workdir'),
    ('ssa.attention',),
    ('ssa.model', 'ssa.summary'),
    ('ssa.convert',),
    ('ssa.optim', 'ssa.pretrained', 'ssa.statistics'),
    ('ssa.train_lib',),
    ('ssa.evaluation', 'ssa.experiments', 'ssa.sweep', 'ssa.benchmarks', 'ssa.cli'),
    ('ssa.commands',),
]


def _modules():
  """{module name: path} of every .py file in ssa/."""
  out = {}
  for dirpath, _, files in os.walk(os.path.join(ROOT, 'ssa')):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, '.')
        out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = os.path.join(dirpath, f)
  return out


def _imports(path, modules):
  """Project modules imported anywhere in the file (module level or inside functions)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from pkg import sub` imports the module pkg.sub; `from pkg import name` imports pkg.
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
               else node.module for a in node.names]
    else:
      continue
    for n in names:
      while n and n not in modules:
        n = n.rpartition('.')[0]
      if n:
        found.add(n)
  return found


def _graph():
  modules = _modules()
  graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
  graph.pop('ssa', None)
  for deps in graph.values():
    deps.discard('ssa')
  return graph


def _layer(module):
  for i, layer in enumerate(LAYERS):
    if any(module == p or module.startswith(p + '.') for p in layer):
      return i
  raise AssertionError(f'{module} is in no layer of tests/test_architecture.py LAYERS')


def test_no_import_cycle():
  graph = _graph()
  state = {}
  stack = []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 'open':
        pytest.fail('import cycle: ' + ' -> '.join(stack[stack.index(d):] + [d]))
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m)


def test_imports_point_down_the_layers():
  up = [f'{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})'
        for m, deps in sorted(_graph().items()) for d in sorted(deps)
        if _layer(d) > _layer(m)]
  assert not up, up


def test_the_checker_sees_imports_inside_functions(tmp_path):
  p = tmp_path / 'm.py'
  p.write_text('def f():\n  from ssa import train_lib\n  import ssa.model\n')
  assert _imports(str(p), _modules()) - {'ssa'} == {'ssa.train_lib', 'ssa.model'}
