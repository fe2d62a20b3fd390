"""Device mesh (data, fsdp, tensor) and logical-axis sharding (config.mesh).

    mesh = make_mesh(config.mesh)                      # jax.make_mesh, Auto axis types
    rules = logical_rules(config.mesh)                 # (('embed', 'fsdp'), ('heads', 'tensor'), ...)
    shardings = param_shardings(abstract_boxed_params, mesh, rules)

Parameters carry logical axis names (nn.with_logical_partitioning in ssa/model.py and
ssa/attention.py: 'vocab', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp', None). ONE table,
config.mesh.rules, maps each logical name to mesh axes; every logical name used by a parameter must
be in the table (an unknown name is an error, never a silent replication), and every sharded
dimension must be divisible by the product of its mesh axes (else an error naming the parameter).
The batch dimension of inputs is the logical axis 'batch' (default: sharded over data and fsdp).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ssa.errors import ConfigError

AXES = ('data', 'fsdp', 'tensor')


def mesh_shape(mesh_cfg, num_devices: int | None = None) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; one axis may be -1 (= devices left over)."""
  n = jax.device_count() if num_devices is None else num_devices
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
  for name, s in zip(AXES, sizes):
    if not isinstance(s, int) or isinstance(s, bool) or (s < 1 and s != -1):
      raise ConfigError(f'mesh.{name}={s!r}; expected a positive integer or -1 (= the rest).')
  if sizes.count(-1) > 1:
    raise ConfigError(f'mesh: at most one of data/fsdp/tensor may be -1, got {sizes}.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise ConfigError(f'mesh: {n} devices are not divisible by the fixed axes {sizes} '
                        f'(product {known}).')
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n:
    raise ConfigError(f'mesh: data x fsdp x tensor = {sizes} uses {math.prod(sizes)} devices, but '
                      f'{n} are available; set mesh.data=-1 to use the rest.')
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * 3
  if len(devices) == jax.device_count():
    return jax.make_mesh(shape, AXES, axis_types=auto)
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def logical_rules(mesh_cfg) -> tuple[tuple[str, Any], ...]:
  """config.mesh.rules as flax logical-axis rules ((logical, mesh axes or None), ...)."""
  rules = []
  for logical, value in mesh_cfg.rules.items():
    if value is None or str(value).strip() in ('', 'None', 'none'):
      rules.append((logical, None))
      continue
    axes = tuple(a.strip() for a in str(value).split(',') if a.strip())
    for a in axes:
      if a not in AXES:
        raise ConfigError(f'mesh.rules.{logical}={value!r}: {a!r} is not a mesh axis; expected '
                          f'a comma-separated subset of {list(AXES)} or None.')
    rules.append((logical, axes[0] if len(axes) == 1 else axes))
  return tuple(rules)


def _axes_size(mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(logical: Sequence[Any], rules, where: str) -> P:
  table = dict(rules)
  out = []
  for name in logical:
    if name is None:
      out.append(None)
    elif name not in table:
      raise ConfigError(f'{where}: logical axis {name!r} has no entry in config.mesh.rules '
                        f'(known: {sorted(table)}); add mesh.rules.{name}.')
    else:
      out.append(table[name])
  return P(*out)


def param_shardings(boxed_abstract, mesh, rules):
  """NamedSharding per leaf of a tree of (possibly nn.Partitioned-boxed) abstract arrays.

  Unboxed leaves (no logical names) are replicated. Raises ConfigError naming a parameter whose
  dimension is not divisible by its mesh axes.
  """
  def one(path, leaf):
    name = jax.tree_util.keystr(path)
    if isinstance(leaf, nn.Partitioned):
      spec = logical_to_spec(leaf.names, rules, name)
      shape = leaf.value.shape
    else:
      spec, shape = P(), getattr(leaf, 'shape', ())
    for dim, axes in zip(shape, spec):
      k = _axes_size(mesh, axes)
      if dim % k:
        raise ConfigError(f'Parameter {name} of shape {tuple(shape)}: dimension {dim} is not '
                          f'divisible by mesh axes {axes} (size {k}); change config.mesh.rules '
                          'for its logical axis or the mesh shape.')
    return NamedSharding(mesh, spec)
  return jax.tree_util.tree_map_with_path(
      one, boxed_abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_spec(rules) -> P:
  return P(dict(rules).get('batch'))


def batch_sharding(mesh, rules) -> NamedSharding:
  """Sharding of a [B, T] input array: B over the 'batch' rule's axes, T replicated."""
  return NamedSharding(mesh, batch_spec(rules))


def batch_divisor(mesh, rules) -> int:
  return _axes_size(mesh, dict(rules).get('batch'))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding, global_rows: int):
  """Assemble the global jax.Array batch from this process's rows (multi-host safe)."""
  out = {}
  for k, v in local_batch.items():
    shape = (global_rows,) + v.shape[1:]
    out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
  return out
