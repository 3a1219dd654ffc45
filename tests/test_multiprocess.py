"""Real multi-process training: 2 processes x 2 CPU devices on this machine.

Each process is a separate Python interpreter joined by `jax.distributed.initialize` (coordinator
on 127.0.0.1, a free port) with CPU collectives over gloo. The mesh is data=2 (one row of devices
per process) x seq=2 (the two devices of a process), so gradients are reduced across processes
and the renderer's ring attention runs inside each process. Three phases, each bounded by a
timeout:

  A  2 processes: Grain reads this process's windows (process_index::process_count), the
     jit/mesh Runner trains 3 renderer steps (L1 loss, SGD) on the global batch, an Orbax
     checkpoint is written by both processes; host batches, window ids and parameters dumped.
  B  1 process, 1 device: the same 3 steps on the concatenated global batches from the same
     initial parameters -> parameters equal A's (float tolerance); A's checkpoint restores here
     bit-exactly; B writes its own checkpoint.
  C  2 processes: B's checkpoint restores into the 2-process mesh bit-exactly.

SGD rather than Adam: Adam's update lr * m / sqrt(v) turns rounding noise in a zero gradient
into a full-size step of either sign, so only SGD makes "same parameters" a tight check.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np

from jaxtalk.config import load_config
from jaxtalk.models.renderer import renderer_from_config
from jaxtalk.train.synthetic import write_synthetic_dataset

STEPS = 3
WORKER = textwrap.dedent(
  """
  import functools, json, pathlib, sys
  import numpy as np
  import jax
  jax.config.update("jax_num_cpu_devices", 1 if sys.argv[1] == "single" else 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  mode, data, work = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
  if mode != "single":
    pid, port = int(sys.argv[4]), int(sys.argv[5])
    jax.distributed.initialize(
      coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
      initialization_timeout=60, heartbeat_timeout_seconds=20, shutdown_timeout_seconds=20)
  import flax
  import jax.numpy as jnp
  from jaxtalk.config import load_config
  from jaxtalk.data import pipeline as P
  from jaxtalk.models.renderer import renderer_from_config
  from jaxtalk.train.checkpoint import Checkpoints
  from jaxtalk.train.parallel import Runner

  STEPS, LR = %(steps)d, 0.05
  multi = mode != "single"
  cfg = load_config("tiny", ["train.batch_size=4", f"train.mesh_seq={2 if multi else 1}"])

  @flax.struct.dataclass
  class State:
    params: dict
    step: jax.Array
    key: jax.Array

  def to_inputs(b):
    img = lambda x: jnp.asarray(x, jnp.float32) / 127.5 - 1 if x.dtype == np.uint8 else x
    return img(b["frames"]), img(b["shape"]), b["audio"]

  def train_step(model, state, batch, rng, frozen, axis_name=None):
    def loss_fn(params):
      frames, shape, audio = to_inputs(batch)
      background = frames * (1 - batch["mask"][..., None].astype(jnp.float32))
      return jnp.mean(jnp.abs(model.apply(params, background, shape, audio) - frames))
    loss, g = jax.value_and_grad(loss_fn)(state.params)
    params = jax.tree.map(lambda p, d: p - LR * d, state.params, g)
    return state.replace(params=params, step=state.step + 1), {"loss": loss}

  def local(tree):  # a replicated global array -> this process's copy
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)

  def flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}

  runner = Runner.create(cfg, "jit", devices=None if multi else jax.devices()[:1])
  model = renderer_from_config(cfg, **runner.model_shardings())
  plain = renderer_from_config(cfg)
  t, h = cfg.train.seq_len, cfg.data.image_size
  ex = (jnp.zeros((1, t, h, h, 3)), jnp.zeros((1, t, h, h, 3)),
        jnp.zeros((1, t, cfg.data.audio_window, cfg.data.n_mels)))
  # the initial parameters come from the test (made once there: compiling the initialiser in
  # every process costs minutes on a busy 2-core machine)
  abstract_params = jax.eval_shape(plain.init, jax.random.PRNGKey(0), *ex)
  init_npz = np.load(work.parent / "init_params.npz")
  leaves = [init_npz[f"arr_{i}"] for i in range(len(init_npz.files))]
  params0 = jax.tree.unflatten(jax.tree.structure(abstract_params), leaves)
  key0 = np.asarray(jax.random.key_data(jax.random.PRNGKey(1)))
  init = lambda: State(params0, np.zeros((), np.int32), key0)
  print("initialised", mode, flush=True)
  abstract = runner.abstract_state(init)
  step = runner.step(functools.partial(train_step, model), abstract)
  result = {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "devices": jax.device_count(), "local_devices": jax.local_device_count()}

  if mode == "train":
    class Indexed(P.WindowSource):  # the window id rides along, to check what each host read
      def __getitem__(self, i):
        return {**super().__getitem__(i), "window": np.int64(i)}
    ds = P.open_data(data)
    segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, t)
    it = iter(P.train_dataset(Indexed(ds, segs, t), global_batch=4, seed=0,
                              process_index=jax.process_index(),
                              process_count=jax.process_count()))
    state = runner.put_state(init())
    batches, losses = [], []
    for i in range(STEPS):
      print("step", i, flush=True)
      b = next(it)
      batches.append(b)
      state, m = step(state, runner.put_batch({k: v for k, v in b.items() if k != "window"}),
                      None)
      losses.append(float(np.asarray(m["loss"].addressable_shards[0].data)))
    result["losses"] = losses
    result["windows"] = [b["window"].tolist() for b in batches]
    np.savez(work / f"batches{jax.process_index()}.npz",
             **{f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    np.savez(work / f"params_multi{jax.process_index()}.npz", **flat(local(state.params)))
    with Checkpoints(work / "ckpt_multi", keep=1, async_save=False) as ck:
      ck.save(STEPS, state, None, {"written_by": jax.process_count()})

  elif mode == "single":
    parts = [np.load(work / f"batches{p}.npz") for p in range(2)]
    state = runner.put_state(init())
    losses = []
    for i in range(STEPS):
      keys = [k.split("/", 1)[1] for k in parts[0].files if k.startswith(f"{i}/")]
      # the global batch: process 0's rows first, as make_array_from_process_local_data lays out
      g = {k: np.concatenate([p[f"{i}/{k}"] for p in parts]) for k in keys if k != "window"}
      state, m = step(state, runner.put_batch(g), None)
      losses.append(float(m["loss"]))
    result["losses"] = losses
    mine = flat(jax.device_get(state.params))
    theirs = np.load(work / "params_multi0.npz")
    scale = max(float(np.abs(v).max()) for v in mine.values())
    result["param_max_abs_diff"] = max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)
    result["param_scale"] = scale
    result["moved"] = max(float(np.abs(mine[k] - v).max())
                          for k, v in flat(params0).items())
    with Checkpoints(work / "ckpt_multi", keep=1, async_save=False) as ck:
      restored, meta = ck.restore(abstract, None)
    result["restore_multi_exact"] = all(
      np.array_equal(np.asarray(v), theirs[k]) for k, v in flat(restored.params).items())
    result["restore_multi_meta"] = meta
    np.savez(work / "params_single.npz", **mine)
    with Checkpoints(work / "ckpt_single", keep=1, async_save=False) as ck:
      ck.save(STEPS, state, None, {"written_by": 1})

  elif mode == "restore":
    with Checkpoints(work / "ckpt_single", keep=1, async_save=False) as ck:
      restored, meta = ck.restore(abstract, None)
    want = np.load(work / "params_single.npz")
    result["restore_single_exact"] = all(
      np.array_equal(v, want[k]) for k, v in flat(local(restored.params)).items())
    result["restore_single_meta"] = meta
    result["sharding"] = str(jax.tree.leaves(restored.params)[0].sharding)

  (work / f"{mode}{jax.process_index()}.json").write_text(json.dumps(result))
  print("OK", mode, jax.process_index())
  """
) % {"steps": STEPS}


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(child_env: dict[str, str]) -> dict[str, str]:
  e = {k: v for k, v in child_env.items() if k != "JAX_COORDINATOR_ADDRESS"}
  e["GRPC_ENABLE_FORK_SUPPORT"] = "0"
  return e


def run_two(script, data, work, mode: str, child_env, timeout: int = 600) -> list[dict]:
  port = free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, str(script), mode, str(data), str(work), str(i), str(port)],
      env=env(child_env),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout)[0])
  except subprocess.TimeoutExpired:
    for p in procs:  # a hung peer: stop both and show what they printed
      p.kill()
    raise AssertionError("\n---\n".join(p.communicate()[0][-3000:] for p in procs)) from None
  finally:
    for p in procs:  # never leave a process behind, whatever failed
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  return [json.loads((work / f"{mode}{i}.json").read_text()) for i in range(2)]


def test_two_processes_train_like_one_and_share_checkpoints(tmp_path, child_env):
  data = write_synthetic_dataset(tmp_path / "ds", n_clips=2, n_frames=16, size=64,
                                 expression_dim=16, n_points=18)  # fmt: skip
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  cfg = load_config("tiny")
  t, h = cfg.train.seq_len, cfg.data.image_size
  ex = (np.zeros((1, t, h, h, 3), np.float32), np.zeros((1, t, h, h, 3), np.float32),
        np.zeros((1, t, cfg.data.audio_window, cfg.data.n_mels), np.float32))  # fmt: skip
  params = jax.jit(renderer_from_config(cfg).init)(jax.random.PRNGKey(0), *ex)
  np.savez(tmp_path / "init_params.npz", *[np.asarray(x) for x in jax.tree.leaves(params)])
  work = tmp_path / "work"
  work.mkdir()

  a = run_two(script, data, work, "train", child_env)
  assert [
    (r["process_index"], r["process_count"], r["devices"], r["local_devices"]) for r in a
  ] == [
    (0, 2, 4, 2),
    (1, 2, 4, 2),
  ]
  # both processes see the same (global, replicated) loss
  assert a[0]["losses"] == a[1]["losses"]
  # Grain: each process reads its own slice of the windows, disjoint from the other's
  w0 = {w for b in a[0]["windows"] for w in b}
  w1 = {w for b in a[1]["windows"] for w in b}
  assert w0 and w1 and not (w0 & w1), (w0, w1)
  assert all(w % 2 == 0 for w in w0) and all(w % 2 == 1 for w in w1)

  single = subprocess.run(
    [sys.executable, str(script), "single", str(data), str(work)],
    env=env(child_env), capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]
  b = json.loads((work / "single0.json").read_text())
  # the same global batches give the same losses and parameters, to float32 rounding (the
  # data-parallel gradient is a sum of per-process partial sums, in another order)
  np.testing.assert_allclose(b["losses"], a[0]["losses"], rtol=1e-5)
  assert b["moved"] > 1e-3, "training did not change the parameters: nothing was compared"
  assert b["param_max_abs_diff"] < 1e-5 * max(1.0, b["param_scale"]), b
  assert b["restore_multi_exact"] and b["restore_multi_meta"] == {"written_by": 2}

  c = run_two(script, data, work, "restore", child_env)
  for r in c:
    assert r["restore_single_exact"] and r["restore_single_meta"] == {"written_by": 1}, r
