"""Sequence-sharded inference (infer.mesh_seq): a window's frames split over the `seq` axis of 8
fake CPU devices, with ring attention over the renderer's tokens, give the frames of one device.

JAX fixes its device count when it starts and other tests start it with one device, so the
comparison runs in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
  """
  import functools, json, sys
  import jax, numpy as np
  jax.config.update("jax_num_cpu_devices", 8)
  from jaxtalk import infer, model_io
  from jaxtalk.config import load_config
  from jaxtalk.errors import ConfigError

  T = 32  # one window of 32 frames = 128 tokens of the tiny renderer (2x2 patches)

  def config(seq):
    return load_config("tiny", [f"infer.window={T}", f"infer.mesh_seq={seq}"])

  cfg = config(1)
  init_key, run_key = model_io.make_keys(0)
  # jitted: eagerly, op by op, the init took 28 s
  state = jax.jit(functools.partial(model_io.init_renderer_state,
    models=model_io.renderer_models(cfg), g_tx=model_io.generator_tx(cfg),
    d_tx=model_io.discriminator_tx(cfg), seq_len=4, image_size=64, expression_dim=16,
    audio_window=20, n_mels=80))(init_key, run_key)
  rng = np.random.default_rng(0)
  crops = rng.integers(0, 256, (1, T, 64, 64, 3), dtype=np.uint8)
  shapes = rng.integers(0, 256, (1, T, 64, 64, 3), dtype=np.uint8)
  masks = np.zeros((1, T, 64, 64), np.uint8)
  masks[:, :, 32:, 16:48] = 1
  expression = rng.normal(size=(1, T, 16)).astype(np.float32)
  audio = rng.normal(size=(1, T, 20, 80)).astype(np.float32)
  args = (state, crops, shapes, masks, expression, audio)

  def models(seq):
    return infer.Models(config=config(seq), face_model=None, renderer_state=state,
                        a2e_state=None, folder=None)

  out = {}
  one = np.asarray(infer.make_generate(models(1))(*args), np.int64)
  for seq in (2, 8):
    gen = infer.make_generate(models(seq))
    frames = gen(*args)
    hlo = gen.lower(*args).compile().as_text()
    out[seq] = {
      "max_diff": int(np.abs(np.asarray(frames, np.int64) - one).max()),
      "frac_diff": float(np.mean(np.asarray(frames, np.int64) != one)),
      "devices": len(frames.sharding.device_set),
      "ring": "collective-permute" in hlo,
    }
  try:
    infer.make_generate(models(3))
  except ConfigError as e:
    out["error"] = str(e)
  json.dump(out, open(sys.argv[1], "w"))
  """
)


def test_seq_sharded_inference_equals_one_device(tmp_path, child_env):
  out = tmp_path / "out.json"
  proc = subprocess.run(
    [sys.executable, "-c", CHILD, str(out)],
    env=child_env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  r = json.loads(out.read_text())
  for seq in ("2", "8"):
    c = r[seq]
    # the frames live on `seq` devices, the attention passes K/V around the ring instead of
    # gathering the sequence, and the uint8 frames equal one device's up to the rounding of a
    # few values that sit on a .5 boundary (sums in another order)
    assert c["devices"] == int(seq) and c["ring"], c
    assert c["max_diff"] <= 1 and c["frac_diff"] < 1e-3, c
  assert "infer.window=32 must be a multiple of infer.mesh_seq=3" in r["error"]
