"""The DECA face fitter for `jaxtalk.data.preprocess` (the `FaceFitter` protocol there).

jaxtalk's passes 1 and 3 do the rest (tracking, the stable crop, landmarks, masks, audio, the
writer), so a DECA dataset differs from a landmark3d one only in these fields:

  expression.npy  (T, 53)  FLAME expression (50) then jaw pose (3, axis-angle)
  pose.npy        (T, 6)   FLAME global head rotation (3, axis-angle), then DECA's
                           orthographic camera (scale, tx, ty) for the 224x224 crop
  shape.npy       (T, S, S, 3) DECA's `render_shape` of the fitted mesh, resized to S
  flame_shape.npy (T, 100) FLAME identity (shape) parameters per frame (extra field)
  face_model.npz  kind "deca" (no renderable model: shapes come from DECA itself)

No DECA code is copied here: DECA is imported from the user's checkout at run time.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from jaxtalk.errors import ConfigError, JaxtalkError, WeightsError

FLAME_EXPRESSION_DIM = 50
JAW_POSE_DIM = 3
EXPRESSION_DIM = FLAME_EXPRESSION_DIM + JAW_POSE_DIM  # the paper's 53
FLAME_SHAPE_DIM = 100
DECA_SIZE = 224
BATCH = 16

DECA_URL = "https://github.com/yfeng95/DECA"
FLAME_URL = "https://flame.is.tue.mpg.de"
# File -> where it comes from. DECA's fetch_data.sh downloads the FLAME-licensed ones after you
# register at the FLAME site; the others ship in the DECA repository's data/ folder.
REQUIRED_FILES = {
  "deca_model.tar": f"DECA weights (DECA's fetch_data.sh, needs a {FLAME_URL} account)",
  "generic_model.pkl": f"FLAME 2020 model ({FLAME_URL}, registration required)",
  "texture_data_256.npy": f"FLAME texture data (DECA's fetch_data.sh / {FLAME_URL})",
  "landmark_embedding.npy": "DECA repository data/",
  "head_template.obj": "DECA repository data/",
  "fixed_displacement_256.npy": "DECA repository data/",
  "uv_face_eye_mask.png": "DECA repository data/",
  "uv_face_mask.png": "DECA repository data/",
  "mean_texture.jpg": "DECA repository data/",
}


def locate_deca(
  deca_dir: str | os.PathLike | None, data_dir: str | os.PathLike | None
) -> tuple[pathlib.Path, pathlib.Path]:
  """Checks PyTorch, the DECA checkout and its data files; JaxtalkError naming what is missing."""
  if importlib.util.find_spec("torch") is None:
    raise JaxtalkError(
      "--face-model deca needs PyTorch: pip install torch torchvision (https://pytorch.org), then"
      " DECA's requirements; or use --face-model landmark3d, which needs nothing else"
    )
  if not deca_dir:
    raise JaxtalkError(
      f"--face-model deca needs --deca-dir: a checkout of DECA (git clone {DECA_URL}) with its"
      f" data fetched (FLAME model from {FLAME_URL}, registration required)"
    )
  root = pathlib.Path(deca_dir).expanduser().resolve()
  if not (root / "decalib" / "deca.py").is_file():
    raise JaxtalkError(f"{root}: not a DECA checkout (no decalib/deca.py); git clone {DECA_URL}")
  data = pathlib.Path(data_dir).expanduser().resolve() if data_dir else root / "data"
  missing = [
    f"{name} ({origin})" for name, origin in REQUIRED_FILES.items() if not (data / name).is_file()
  ]
  if missing:
    raise WeightsError(
      f"{data}: missing DECA/FLAME files: {'; '.join(missing)}. Register at {FLAME_URL}, run"
      f" DECA's fetch_data.sh, or pass --deca-data with the folder that holds them"
    )
  return root, data


class DecaRunner:
  """DECA on a batch of face crops -> FLAME parameters and shape renders (numpy).

  Imports torch and decalib on construction (in the worker process that uses it).
  """

  def __init__(self, deca_dir: str | os.PathLike, data_dir: str | os.PathLike, device: str = "cpu"):
    import torch

    root, data = locate_deca(deca_dir, data_dir)
    if str(root) not in sys.path:
      sys.path.insert(0, str(root))
    try:
      from decalib.deca import DECA
      from decalib.utils.config import cfg
    except ImportError as e:
      raise JaxtalkError(
        f"DECA could not be imported from {root} ({e}); install its requirements"
      ) from e
    cfg = cfg.clone()
    cfg.pretrained_modelpath = str(data / "deca_model.tar")
    m = cfg.model
    m.topology_path = str(data / "head_template.obj")
    m.dense_template_path = str(data / "texture_data_256.npy")
    m.fixed_displacement_path = str(data / "fixed_displacement_256.npy")
    m.flame_model_path = str(data / "generic_model.pkl")
    m.flame_lmk_embedding_path = str(data / "landmark_embedding.npy")
    m.face_mask_path = str(data / "uv_face_mask.png")
    m.face_eye_mask_path = str(data / "uv_face_eye_mask.png")
    m.mean_tex_path = str(data / "mean_texture.jpg")
    m.use_tex = False
    # DECA's "standard" rasteriser is a CUDA extension; pytorch3d also runs on the CPU.
    has_p3d = importlib.util.find_spec("pytorch3d") is not None
    if not has_p3d and not str(device).startswith("cuda"):
      raise JaxtalkError(
        "DECA on the CPU renders with pytorch3d: pip install pytorch3d (or use --deca-device cuda)"
      )
    cfg.rasterizer_type = "pytorch3d" if has_p3d else "standard"
    cfg.device = device
    self.torch = torch
    self.device = device
    self.deca = DECA(config=cfg, device=device)

  def __call__(self, crops_bhwc: np.ndarray) -> dict[str, np.ndarray]:
    torch = self.torch
    images = np.stack(
      [cv2.resize(c, (DECA_SIZE, DECA_SIZE), interpolation=cv2.INTER_AREA) for c in crops_bhwc]
    )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(self.device)
    with torch.no_grad():
      code = self.deca.encode(x, use_detail=False)
      op = self.deca.decode(
        code, rendering=False, vis_lmk=False, return_vis=False, use_detail=False
      )
      shape = self.deca.render.render_shape(op["verts"], op["trans_verts"])
    lmk = (op["landmarks2d"].cpu().numpy() + 1.0) * DECA_SIZE / 2.0  # [-1, 1] -> pixels
    return {
      "exp": code["exp"].cpu().numpy(),
      "pose": code["pose"].cpu().numpy(),
      "shape": code["shape"].cpu().numpy(),
      "cam": code["cam"].cpu().numpy(),
      "render": shape.permute(0, 2, 3, 1).cpu().numpy(),
      "landmarks2d": lmk,
    }


def flame_to_dataset(flame: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """DECA outputs for T frames -> jaxtalk fields (expression (T,53), pose (T,6), shape
  (T,S,S,3) uint8, flame_shape (T,100)); renders in [0,1] floats or uint8 of any square size."""
  exp = np.asarray(flame["exp"], np.float32)
  pose = np.asarray(flame["pose"], np.float32)
  cam = np.asarray(flame["cam"], np.float32)
  if exp.shape[1:] != (FLAME_EXPRESSION_DIM,) or pose.shape[1:] != (6,) or cam.shape[1:] != (3,):
    raise ValueError(f"unexpected FLAME shapes exp {exp.shape}, pose {pose.shape}, cam {cam.shape}")
  render = np.asarray(flame["render"])
  if render.dtype != np.uint8:
    render = np.clip(np.round(render * 255.0), 0, 255).astype(np.uint8)
  if render.shape[1] != size:
    interp = cv2.INTER_AREA if render.shape[1] > size else cv2.INTER_LINEAR
    render = np.stack([cv2.resize(r, (size, size), interpolation=interp) for r in render])
  return {
    "expression": np.concatenate([exp, pose[:, 3:6]], axis=1),
    "pose": np.concatenate([pose[:, :3], cam], axis=1),
    "shape": render,
    "flame_shape": np.asarray(flame["shape"], np.float32),
  }


class DecaFitter:
  """`FaceFitter` backed by DECA. `runner` replaces DECA (a callable like `DecaRunner`) in tests."""

  name = "deca"

  def __init__(
    self,
    deca_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    runner: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
  ):
    self.deca_dir, self.data_dir, self.device = deca_dir, data_dir, device
    self._runner = runner

  def __getstate__(self) -> dict[str, Any]:
    # A worker process builds its own DECA; a test runner (a plain function) travels along.
    state = dict(self.__dict__)
    if isinstance(state["_runner"], DecaRunner):
      state["_runner"] = None
    return state

  def check(self, settings) -> None:
    if settings.expression_dim != EXPRESSION_DIM:
      raise ConfigError(
        f"DECA gives {EXPRESSION_DIM} expression parameters (FLAME 50 + jaw 3); set"
        f" --set data.expression_dim={EXPRESSION_DIM} (the config has {settings.expression_dim})"
      )
    if self._runner is None:
      locate_deca(self.deca_dir, self.data_dir)

  def extra_fields(self, settings) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {"flame_shape": ("float32", (FLAME_SHAPE_DIM,))}

  def learn(self, landmarks: list[np.ndarray], settings) -> tuple[dict[str, np.ndarray], dict]:
    # DECA is a generic model: nothing person-specific to learn before fitting.
    arrays = {
      "kind": np.asarray("deca"),
      "version": np.asarray(1, np.int32),
      "flame_expression_dim": np.asarray(FLAME_EXPRESSION_DIM, np.int32),
      "jaw_pose_dim": np.asarray(JAW_POSE_DIM, np.int32),
    }
    frames = int(sum(len(x) for x in landmarks))
    return arrays, {"kind": "deca", "frames": frames, "expression": "FLAME exp 50 + jaw pose 3"}

  def _runner_fn(self) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    if self._runner is None:
      self._runner = DecaRunner(self.deca_dir, self.data_dir, self.device)
    return self._runner

  def fit_clip(self, model, frames_thwc, landmarks_tn2, settings, out) -> dict[str, Any]:
    run = self._runner_fn()
    size = settings.image_size
    errors = []
    for start in range(0, len(frames_thwc), BATCH):
      stop = min(start + BATCH, len(frames_thwc))
      flame = run(np.asarray(frames_thwc[start:stop]))
      fields = flame_to_dataset(flame, size)
      for name, value in fields.items():
        out[name][start:stop] = value
      if "landmarks2d" in flame:  # DECA's own 68 landmarks vs the detected ones, in crop pixels
        lmk = np.asarray(flame["landmarks2d"], np.float64) * size / DECA_SIZE
        errors.append(np.linalg.norm(lmk - landmarks_tn2[start:stop], axis=-1))
    if not errors:
      return {}
    err = np.concatenate(errors)
    to256 = 256.0 / size
    return {
      "landmark_error_mean_px": round(float(err.mean()), 4),
      "landmark_error_max_px": round(float(err.max()), 4),
      "landmark_error_mean_px_at_256": round(float(err.mean()) * to256, 4),
    }
