"""Running a pure step on the devices: `jit` over a (data, seq) mesh (default) or `pmap`.

    runner = Runner.create(cfg)                       # mesh from train.mesh_data / mesh_seq
    state = runner.init(init_fn, *args)               # created already sharded / replicated
    step = runner.step(train_step_fn)                 # (state, batch, frozen) -> (state, metrics)
    state, metrics = step(state, runner.put_batch(host_batch), frozen)

jit: the state is replicated (sharding.REPLICATED), every batch array (B, T, ...) is laid out
as sharding.FRAMES (batch over `data`, frames over `seq`), and the renderer pins its
activations and tokens with the same roles; the state argument is donated. Multi-host: every
host passes its slice of the batch and `jax.make_array_from_process_local_data` assembles the
global array.

pmap: data parallel only (the `seq` axis must be 1); the state is replicated with a leading
device axis, each device gets batch / n_devices samples and the step averages gradients with
`lax.pmean` over the axis named `data`. Kept because the design card names it; both paths give
the same numbers (tests/test_train_parallel.py).

The step's RNG is fold_in(state.key, state.step), made inside the compiled function: no host
round trip, and a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding

from jaxtalk import sharding as sh
from jaxtalk.errors import ConfigError

PyTree = Any
PMAP_AXIS = sh.DATA


def step_rng(state: Any) -> jax.Array:
  return jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)


def maybe_initialize_distributed(cfg: Any) -> None:
  """jax.distributed.initialize() when train.distributed, once, before any computation.

  Slurm, Open MPI and TPU pods are detected by JAX itself. Elsewhere set JAX_COORDINATOR_ADDRESS
  (host:port of process 0, read by JAX) and JAX_NUM_PROCESSES / JAX_PROCESS_ID (read here and
  passed on) on every host; see docs/training.md.
  """
  if not cfg.train.distributed or jax.distributed.is_initialized():
    return
  kwargs = {}
  if os.environ.get("JAX_NUM_PROCESSES"):
    kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
  if os.environ.get("JAX_PROCESS_ID"):
    kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
  jax.distributed.initialize(**kwargs)


@dataclasses.dataclass
class Runner:
  mode: str  # "jit" | "pmap"
  mesh: Mesh | None
  n_devices: int
  devices: list | None = None  # pmap: the local devices mapped over

  @classmethod
  def create(cls, cfg: Any, mode: str | None = None, devices: list | None = None) -> Runner:
    mode = mode or cfg.train.parallel
    if mode not in ("jit", "pmap"):
      raise ConfigError(f"train.parallel must be 'jit' or 'pmap', got {mode!r}")
    if mode == "pmap":
      if cfg.train.mesh_seq != 1:
        raise ConfigError("train.parallel='pmap' is data parallel only: set train.mesh_seq=1")
      devs = list(jax.local_devices() if devices is None else devices)
      return cls("pmap", None, len(devs), devs)
    try:
      mesh = sh.make_mesh(cfg.train.mesh_data, cfg.train.mesh_seq, devices=devices)
    except ValueError as e:
      raise ConfigError(f"train.mesh_data / train.mesh_seq: {e}") from e
    return cls("jit", mesh, mesh.devices.size)

  # -- layout -------------------------------------------------------------------------------

  @property
  def data_size(self) -> int:
    if self.mode == "pmap":
      return self.n_devices * jax.process_count()
    return self.mesh.shape[sh.DATA]

  @property
  def seq_size(self) -> int:
    return 1 if self.mode == "pmap" else self.mesh.shape[sh.SEQ]

  def check_batch(self, global_batch: int, seq_len: int, what: str) -> None:
    if global_batch % self.data_size:
      raise ConfigError(
        f"{what}.batch_size={global_batch} must be a multiple of the data-parallel size "
        f"{self.data_size}"
      )
    if seq_len % self.seq_size:
      raise ConfigError(
        f"{what}.seq_len={seq_len} must be a multiple of train.mesh_seq={self.seq_size}"
      )

  def named(self, spec) -> NamedSharding:
    return sh.named(self.mesh, spec)

  def model_shardings(self) -> dict[str, Any]:
    """token_sharding / frame_sharding for the model constructors (None under pmap)."""
    if self.mode == "pmap":
      return {"token_sharding": None, "frame_sharding": None}
    return {"token_sharding": self.named(sh.TOKENS), "frame_sharding": self.named(sh.FRAMES)}

  @property
  def bn_axis_name(self) -> str | None:
    return PMAP_AXIS if self.mode == "pmap" else None

  # -- state --------------------------------------------------------------------------------

  def state_shardings(self, abstract_state: PyTree) -> PyTree:
    return jax.tree.map(lambda _: self.named(sh.REPLICATED), abstract_state)

  def init_fn(self, init_fn: Callable[..., PyTree], *example_args: Any) -> Callable[..., PyTree]:
    """The compiled initialiser: under jit with out_shardings, so the state is created already
    sharded (never materialised whole on one device); under pmap, replicated after."""
    if self.mode == "jit":
      abstract = jax.eval_shape(init_fn, *example_args)
      return jax.jit(init_fn, out_shardings=self.state_shardings(abstract))
    jitted = jax.jit(init_fn)
    return lambda *args: self.put_state(jitted(*args))

  def init(self, init_fn: Callable[..., PyTree], *args: Any) -> PyTree:
    return self.init_fn(init_fn, *args)(*args)

  def abstract_state(self, init_fn: Callable[..., PyTree], *args: Any) -> PyTree:
    """ShapeDtypeStructs with the target shardings (what a checkpoint restores into)."""
    abstract = jax.eval_shape(init_fn, *args)
    if self.mode == "jit":
      shardings = self.state_shardings(abstract)
    else:
      dev = jax.local_devices()[0]
      shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(dev), abstract)
    return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )

  def put_state(self, state: PyTree) -> PyTree:
    """A plain (restored, single-copy) state into this runner's layout."""
    if self.mode == "jit":
      return jax.device_put(state, self.state_shardings(state))
    # One copy per device, in the layout pmap gives its outputs (the leading axis sharded over a
    # mesh of these devices named like the pmap axis). From any other layout (one device's
    # array), pmap's second call, fed the first call's outputs, would trace and compile again.
    n = self.n_devices
    mesh = Mesh(np.array(self.devices), (PMAP_AXIS,), axis_types=(AxisType.Auto,))
    sharding = sh.named(mesh, sh.BATCH)
    return jax.tree.map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x)[None], (n, *np.shape(x))), sharding),
      state,
    )

  def get_state(self, state: PyTree) -> PyTree:
    """The single-copy state (for checkpoints and inspection)."""
    if self.mode == "jit":
      return state
    return jax.tree.map(lambda x: x[0], state)

  def state_fn(
    self, fn: Callable[[PyTree], PyTree], abstract_state: PyTree
  ) -> Callable[[PyTree], PyTree]:
    """A compiled state -> state function in this layout (e.g. entering stage 2), donating."""
    if self.mode == "jit":
      shardings = self.state_shardings(abstract_state)
      return jax.jit(fn, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0)
    return jax.pmap(fn, axis_name=PMAP_AXIS, donate_argnums=0, devices=self.devices)

  # -- batches ------------------------------------------------------------------------------

  def put_batch(self, host_batch: PyTree) -> PyTree:
    """This host's slice of the global batch -> device arrays in the step's layout."""
    if self.mode == "jit":
      sharding = self.named(sh.FRAMES)
      return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch
      )
    n = self.n_devices

    def split(x):
      x = np.asarray(x)
      if x.shape[0] % n:
        raise ConfigError(f"host batch of {x.shape[0]} does not split over {n} local devices")
      return x.reshape(n, x.shape[0] // n, *x.shape[1:])

    return jax.tree.map(split, host_batch)

  # -- compiled functions -------------------------------------------------------------------

  def step(
    self, fn: Callable[..., tuple[PyTree, dict]], abstract_state: PyTree | None = None
  ) -> Callable[[PyTree, PyTree, PyTree], tuple[PyTree, dict]]:
    """fn(state, batch, rng, frozen, axis_name=...) -> (state, metrics), compiled with the
    RNG drawn from the state. Returns step(state, batch, frozen); metrics are replicated
    scalars (under pmap: taken from device 0)."""

    def with_rng(state, batch, frozen, axis_name=None):
      return fn(state, batch, step_rng(state), frozen, axis_name=axis_name)

    if self.mode == "jit":
      rep = self.named(sh.REPLICATED)
      compiled = jax.jit(
        with_rng,
        in_shardings=(
          None if abstract_state is None else self.state_shardings(abstract_state),
          self.named(sh.FRAMES),
          rep,
        ),
        out_shardings=(
          None if abstract_state is None else self.state_shardings(abstract_state),
          rep,
        ),
        donate_argnums=0,
      )
      return compiled

    pm = jax.pmap(
      lambda s, b, f: with_rng(s, b, f, axis_name=PMAP_AXIS),
      axis_name=PMAP_AXIS,
      in_axes=(0, 0, None),
      donate_argnums=0,
      devices=self.devices,
    )

    def run(state, batch, frozen):
      state, metrics = pm(state, batch, frozen)
      return state, jax.tree.map(lambda m: m[0], metrics)

    return run

  def eval_fn(self, fn: Callable[..., dict]) -> Callable[[PyTree, PyTree, PyTree], dict]:
    """fn(state, batch, frozen, axis_name=...) -> metrics (no update, no RNG)."""
    if self.mode == "jit":
      return jax.jit(lambda s, b, f: fn(s, b, f, axis_name=None))
    pm = jax.pmap(
      lambda s, b, f: fn(s, b, f, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS, in_axes=(0, 0, None),
      devices=self.devices,
    )  # fmt: skip
    return lambda s, b, f: jax.tree.map(lambda m: m[0], pm(s, b, f))


def fetch(tree: PyTree) -> dict[str, float]:
  """Device scalars -> Python floats/ints (one transfer)."""
  host = jax.device_get(tree)
  out = {}
  for k, v in host.items():
    v = np.asarray(v)
    out[k] = (
      bool(v)
      if v.dtype == np.bool_
      else (int(v) if np.issubdtype(v.dtype, np.integer) else float(v))
    )
  return out


def replicate_frozen(runner: Runner, frozen: PyTree) -> PyTree:
  """Constant inputs (the VGG weights) placed once: replicated over the mesh, or left on host
  for pmap (broadcast with in_axes None)."""
  if frozen is None:
    return None
  if runner.mode == "jit":
    return jax.device_put(frozen, runner.named(sh.REPLICATED))
  return jax.tree.map(jnp.asarray, frozen)
