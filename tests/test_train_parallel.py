"""The same train step on 8 fake CPU devices: jit over a data=4 x seq=2 mesh and the pmap
data-parallel path both equal the single-device step (to float tolerance: the shards sum
their partial gradients in another order).

JAX fixes its device count when it starts and other tests start it with one device, so the
comparison runs in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import numpy as np

from jaxtalk.config import load_config
from jaxtalk.train.parallel import PMAP_AXIS, Runner
from jaxtalk.train.synthetic import write_synthetic_dataset

SCRIPT = textwrap.dedent(
  """
  import functools, json, sys
  import jax, numpy as np, optax
  jax.config.update("jax_num_cpu_devices", 8)
  from jaxtalk.config import load_config
  from jaxtalk.data import pipeline as P
  from jaxtalk.train import state as S, step as St
  from jaxtalk.train.parallel import Runner, fetch

  data, out = sys.argv[1], sys.argv[2]
  assert jax.device_count() == 8, jax.devices()
  # learning rates 0: every path keeps the same parameters, so each step's gradients can be
  # compared through Adam's moment estimates (mu = sum (1 - b1) b1^k g) instead of through
  # updates lr * g / |g|, whose sign flips wherever a gradient entry is rounding noise
  base = ["train.batch_size=4", "train.lr=0.0", "train.smooth_lr=0.0", "train.disc_lr=0.0"]
  ds = P.open_data(data)
  segs, _, _ = P.split_segments(P.list_clips(ds), 0.0, 4)
  it = iter(P.train_dataset(P.WindowSource(ds, segs, 4), global_batch=4, seed=0))
  batches = [next(it) for _ in range(3)]
  mean, std = P.audio_stats(ds, ds.clip_names)
  stats = {"audio_mean": mean, "audio_std": std}
  init_key, run_key = S.make_keys(0)
  host_state = None

  def run(cfg, runner, stages):
    # the same initial state everywhere: made once, then put in each runner's layout
    global host_state
    g_tx, d_tx = S.generator_tx(cfg), S.discriminator_tx(cfg)
    hp = St.RendererHParams.from_config(cfg)
    models = S.renderer_models(cfg, **runner.model_shardings(), bn_axis_name=runner.bn_axis_name)
    init_fn = functools.partial(
      S.init_renderer_state, models=models, g_tx=g_tx, d_tx=d_tx, seq_len=4, image_size=64,
      expression_dim=16, audio_window=20, n_mels=80)
    abstract = runner.abstract_state(init_fn, init_key, run_key, stats)
    if host_state is None:
      host_state = jax.device_get(runner.get_state(runner.init(init_fn, init_key, run_key, stats)))
    st = runner.put_state(host_state)
    steps = {
      n: runner.step(functools.partial(
        St.renderer_train_step, models=models, g_tx=g_tx, d_tx=d_tx, hp=hp, stage=n), abstract)
      for n in set(stages)
    }
    metrics, states = [], []
    for i, (b, stage) in enumerate(zip(batches, stages)):
      if stage == 2 and stages[i - 1] == 1:
        st = runner.state_fn(functools.partial(St.enter_stage2, g_tx=g_tx), abstract)(st)
      st, m = steps[stage](st, runner.put_batch(b), None)
      metrics.append(fetch(m))
      states.append(jax.device_get(runner.get_state(st)))
    return states, metrics

  def rel(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-12)) if x.size else 0.0

  def norm_rel(xs, ys):
    pairs = [(np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel())
             for x, y in zip(xs, ys) if np.issubdtype(np.asarray(x).dtype, np.floating)]
    num = sum(float(np.sum((x - y) ** 2)) for x, y in pairs)
    den = sum(float(np.sum(x**2)) for x, _ in pairs)
    return (num / den) ** 0.5

  def compare(a, b):
    (sa, ma), (sb, mb) = a, b
    sa, sb = sa[len(mb) - 1], sb[-1]
    return {
      "steps": [int(sa.step), int(sb.step)],
      # Adam's moments of all gradients: difference relative to their size, as one vector
      # (entries that are 0 in exact arithmetic, e.g. the attention key bias, hold rounding
      # noise only and have no meaningful per-entry relative error)
      "opt": norm_rel(jax.tree.leaves((sa.g_opt, sa.d_opt)), jax.tree.leaves((sb.g_opt, sb.d_opt))),
      "params": max(rel(x, y) for x, y in zip(jax.tree.leaves((sa.g_params, sa.d_params)),
                                              jax.tree.leaves((sb.g_params, sb.d_params)))),
      "stats": max([0.0] + [rel(x, y) for x, y in zip(jax.tree.leaves(sa.g_stats),
                                                      jax.tree.leaves(sb.g_stats))]),
      "loss": max(abs(p[k] - q[k]) / max(1.0, abs(p[k])) for p, q in zip(ma, mb)
                  for k in ("loss_g", "loss_d", "l1", "g_grad_norm", "d_grad_norm")),
    }

  cfg1 = load_config("tiny", base)
  single = Runner.create(cfg1, "jit", devices=jax.devices()[:1])
  cfg8 = load_config("tiny", base + ["train.mesh_seq=2"])
  r8 = Runner.create(cfg8, "jit")
  assert dict(r8.mesh.shape) == {"data": 4, "seq": 2}, r8.mesh.shape
  cfgp = load_config("tiny", base + ["train.parallel='pmap'"])
  pm = Runner.create(cfgp, "pmap", devices=jax.devices()[:4])
  # stage 1 on the 4 x 2 mesh; stage 1, the switch and stage 2 (BatchNorm synced over
  # devices) on the pmap path
  ref = run(cfg1, single, [1, 1, 2])
  result = {
    "sharded": compare(ref, run(cfg8, r8, [1, 1])),
    "pmap": compare(ref, run(cfgp, pm, [1, 1, 2])),
  }

  # The same with learning rates > 0: on the mesh the parameters must move, and move by the Adam
  # step that the gradients call for. Adam's first update, in NumPy from the single-device first
  # step's moment estimates (taken at the same initial parameters, learning rates 0):
  # -lr * (mu / (1 - b1)) / (sqrt(nu / (1 - b2)) + eps), about lr * sign(g) per entry. The mesh's
  # update must equal it on (nearly) every entry; only entries whose gradient is rounding noise
  # may flip their sign.
  lr = 1e-3
  trained = [b for b in base if "lr=" not in b] + [
    f"train.lr={lr}", f"train.smooth_lr={lr}", f"train.disc_lr={lr}"]
  cfg8t = load_config("tiny", trained + ["train.mesh_seq=2"])
  (s8, m8) = run(cfg8t, Runner.create(cfg8t, "jit"), [1])

  def update(st):
    new = jax.tree.leaves((st.g_params, st.d_params))
    old = jax.tree.leaves((host_state.g_params, host_state.d_params))
    return np.concatenate([(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
                           for a, b in zip(new, old)])

  def moments(st, name):
    # g_opt holds one Adam state per parameter subtree (renderer, smoothing), each over its own
    # leaves: in that order they are g_params's leaves, then d_opt's are d_params's
    return np.concatenate([np.asarray(x, np.float64).ravel() for opt in (st.g_opt, st.d_opt)
                           for _, tree in optax.tree_utils.tree_get_all_with_path(opt, name)
                           for x in jax.tree.leaves(tree)])

  first, ref_metrics = ref[0][0], ref[1][0]  # the state and metrics after the first step
  b1, b2 = cfg1.train.adam_b1, cfg1.train.adam_b2
  mu, nu = moments(first, "mu"), moments(first, "nu")
  adam = -lr * (mu / (1 - b1)) / (np.sqrt(nu / (1 - b2)) + 1e-8)
  u8 = update(s8[0])
  assert u8.shape == adam.shape, (u8.shape, adam.shape)
  result["trained"] = {
    "moved": float(np.mean(np.abs(u8) > 0.5 * lr)),
    "max_update": float(np.abs(u8).max()),
    "same_update": float(np.mean(np.abs(u8 - adam) <= 0.01 * lr)),
    "loss": abs(ref_metrics["loss_g"] - m8[0]["loss_g"]) / abs(ref_metrics["loss_g"]),
  }
  json.dump(result, open(out, "w"))
  """
)


def test_sharded_and_pmap_steps_equal_the_single_device_step(tmp_path, child_env):
  data = write_synthetic_dataset(tmp_path / "ds", n_clips=2, n_frames=12, size=64,
                                 expression_dim=16, n_points=18)  # fmt: skip
  script = tmp_path / "parallel.py"
  script.write_text(SCRIPT)
  out = tmp_path / "out.json"
  proc = subprocess.run(
    [sys.executable, str(script), str(data), str(out)], env=child_env, capture_output=True,
    text=True, timeout=600,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(out.read_text())
  assert r["sharded"]["steps"] == [2, 2] and r["pmap"]["steps"] == [3, 3]
  t = r["trained"]
  # lr 1e-3: one Adam step on the mesh moves the parameters by ~lr (not a no-op), entry by entry
  # as Adam's formula says from one device's gradients (rounding-noise gradients may flip the
  # sign of a few entries)
  assert t["moved"] > 0.5 and 0.5e-3 < t["max_update"] < 2e-3, t
  assert t["same_update"] > 0.99 and t["loss"] < 1e-5, t
  for path in ("sharded", "pmap"):
    c = r[path]
    # losses and gradient norms of every step, Adam's moment estimates of the gradients, and
    # the BatchNorm running statistics (pmean'd over devices on the pmap path): the same to
    # float32 rounding (shards add partial sums in another order)
    assert c["loss"] < 1e-5, (path, c)
    # measured: 1.4e-5 (4 x 2 mesh, 2 steps), 5.8e-5 (pmap, 3 steps through stage 2): instance
    # norms over small-variance features amplify the last-bit differences of the partial sums
    assert c["opt"] < 5e-4, (path, c)
    assert c["stats"] < 1e-4, (path, c)


class _State(NamedTuple):
  key: np.ndarray
  step: np.ndarray
  w: np.ndarray


def test_pmap_runner_traces_its_step_once():
  """Runner.put_state lays the state out as pmap lays out its outputs, so feeding a step's
  output state to the next step (every training step) neither traces nor compiles it again;
  and each step computes what it should (a one-device pmap: the layout, not the device count,
  is under test)."""
  runner = Runner.create(
    load_config("tiny", ["train.parallel='pmap'"]), "pmap", devices=jax.devices()[:1]
  )
  traces = []

  def fn(state, batch, rng, frozen, axis_name=None):
    traces.append(axis_name)
    return state._replace(step=state.step + 1, w=state.w + batch["x"].sum()), {"n": state.step}

  key = np.asarray(jax.random.key_data(jax.random.key(0)))
  state = runner.put_state(_State(key, np.int32(0), np.zeros(3, np.float32)))
  step = runner.step(fn)
  for i in range(3):
    state, metrics = step(state, runner.put_batch({"x": np.full((2, 4), i, np.float32)}), None)
    assert metrics["n"] == i
  assert traces == [PMAP_AXIS]
  single = runner.get_state(state)
  assert int(single.step) == 3
  np.testing.assert_array_equal(single.w, np.full(3, 8 * (0 + 1 + 2), np.float32))
