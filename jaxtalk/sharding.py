"""The device mesh and every PartitionSpec by role, in one place.

Mesh axes: `data` splits the batch (clips); `seq` splits the frames of a clip, and with them the
renderer transformer's T*p*p tokens, for sequences too long for one device. Model modules never
import this file: training and inference pass the specs below to the `*_from_config` constructors
(`token_sharding=`, `frame_sharding=`), and None there means "no constraint".

    mesh = make_mesh(data=-1, seq=2)
    with jax.set_mesh(mesh):            # bare PartitionSpecs resolve against this mesh
      renderer = renderer_from_config(cfg, token_sharding=TOKENS, frame_sharding=FRAMES)
      ...jit(train_step)...

Or pass `named(mesh, TOKENS)` (a NamedSharding) and no mesh context is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"
SEQ = "seq"
AXES = (DATA, SEQ)

# Roles. Trailing axes not named are replicated.
REPLICATED = PartitionSpec()  # parameters, optimiser state, scalars
BATCH = PartitionSpec(DATA)  # anything with a leading batch axis: (B, ...)
FRAMES = PartitionSpec(DATA, SEQ)  # per-frame arrays (B, T, ...): images, audio, expressions
TOKENS = PartitionSpec(DATA, SEQ, None)  # transformer tokens (B, L, d), L = T*p*p frame-major


def make_mesh(data: int = -1, seq: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, seq) mesh with Auto axes. data=-1: all devices not used by seq.

  Auto axes: in this JAX `jax.make_mesh` defaults to Explicit axes, under which every array
  carries its sharding in its type and ops like the patch reshapes need explicit out_sharding;
  Auto lets XLA propagate from our constraints instead.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if seq < 1 or n % seq:
    raise ValueError(f"mesh seq={seq} does not divide the {n} devices")
  if data == -1:
    data = n // seq
  if data * seq != n:
    raise ValueError(f"mesh data={data} x seq={seq} != {n} devices")
  return jax.make_mesh(
    (data, seq), AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices
  )


def named(mesh: Mesh, spec: PartitionSpec) -> NamedSharding:
  """The NamedSharding of a role on a mesh (for device_put, jit in/out_shardings)."""
  return NamedSharding(mesh, spec)
