"""Augmented erosion on device (StableFace Sec. III-C.2), inside the jitted train step.

The paper erodes the mouth of the background frame with a mask that does not quite match the
frame, to simulate at training time what happens at inference (the background frame's mouth
and the new shape render disagree). It does it two ways; both run here, per sample, from the
step's RNG:

1. Noise on the mouth: the paper adds noise to the mouth expression and re-draws the mask from
   it. The mask of the dataset is a polygon (`mask_points`, crop pixels) rasterised by
   `jaxtalk.face.mask.rasterize_polygon`; we add noise to the polygon points and rasterise the
   noised polygon here, on device, with the same rule (pixel centres at (x + 0.5, y + 0.5),
   even-odd). The noise is a normal of std `train.erosion_point_noise` (pixels at 256x256,
   scaled to the crop), clipped at 2 std so the eroded region has a hard bound. With zero
   noise the mask is the stored one, bit for bit. The shape render itself is precomputed and is
   not redrawn (there is no rasteriser on device), so `train.erosion_expr_noise` is not used by
   this module: moving the polygon is what the expression noise does to the mask.
2. Random erosion or dilation of the mask by r pixels, r uniform in [-R, R]
   (`erosion_max_morph`, square structuring element, min/max pooling with
   `lax.reduce_window`), then a random rotation (uniform in +-`erosion_max_rotate` degrees) about
   the mouth centre and a random shift (uniform in +-`erosion_max_shift` pixels per axis),
   resampled with nearest-neighbour so the mask stays binary.

Morphology, rotation and shift are drawn once per window (all T frames move together, as a
background video that systematically disagrees with the new mouth would) unless
`train.erosion_per_frame`; the point noise is drawn per frame and point.

The background frame is then eroded: pixels inside the mask are set to 0 in the model's [-1, 1]
range, i.e. mid-gray. The same mask weights the L1 loss (`train.mouth_weight` inside).

`train.erosion = False` (the "w/o augmented erosion" ablation of Table V) skips all of this and
erodes with the stored mask.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# erode (the background input) is needed at inference too: it lives in the neutral module
from jaxtalk.model_io import FILL_VALUE, erode  # noqa: F401

POINT_NOISE_TRUNCATION = 2.0  # the point noise is a normal clipped at this many std


@dataclasses.dataclass(frozen=True)
class ErosionParams:
  """The augmentation at one crop size; lengths in pixels of that crop."""

  enabled: bool = True
  point_noise: float = 0.0
  max_morph: int = 0
  max_shift: float = 0.0
  max_rotate_deg: float = 0.0
  per_frame: bool = False

  @classmethod
  def from_config(cls, cfg: Any, image_size: int | None = None) -> ErosionParams:
    """Reads train.erosion*; the pixel lengths are given at 256x256 and scaled to the crop."""
    t = cfg.train
    size = image_size or cfg.data.image_size
    scale = size / 256.0
    return cls(
      enabled=bool(t.erosion),
      point_noise=float(t.erosion_point_noise) * scale,
      max_morph=int(round(t.erosion_max_morph * scale)),
      max_shift=float(t.erosion_max_shift) * scale,
      max_rotate_deg=float(t.erosion_max_rotate),
      per_frame=bool(t.get("erosion_per_frame", False)),
    )

  @property
  def is_identity(self) -> bool:
    return (
      not self.enabled
      or (self.point_noise == 0 and self.max_morph == 0 and self.max_shift == 0
          and self.max_rotate_deg == 0)
    )  # fmt: skip

  def bound_radius(self, mouth_radius: float) -> float:
    """How far (Euclidean pixels) an augmented mask can reach outside the stored mask, for a
    mouth whose mask lies within `mouth_radius` of its centre: clipped point noise, the
    dilation's square reach, the shift, the rotation's arc, plus 1.5 px of rasterisation."""
    if not self.enabled:
      return 0.0
    noise = POINT_NOISE_TRUNCATION * self.point_noise * math.sqrt(2)
    morph = self.max_morph * math.sqrt(2)
    shift = self.max_shift * math.sqrt(2)
    rho = mouth_radius + noise + morph
    rot = rho * math.radians(self.max_rotate_deg)
    return noise + morph + shift + rot + 1.5


# ----------------------------------------------------------------------------------------------
# Rasterisation (the rule of jaxtalk.face.mask.rasterize_polygon, on device).


def rasterize_many(points_np2: jax.Array, size: int) -> jax.Array:
  """(N, P, 2) polygons -> (N, S, S) bool masks.

  Pixel (row i, col j) is inside when its centre (j + 0.5, i + 0.5) is inside the closed
  polygon of (x, y) points by the even-odd rule: a ray from the centre towards +x crosses edge
  (p_e, p_e+1) when the edge straddles the centre's y (one end strictly below it, the other
  not) and the crossing lies strictly right of the centre. The arithmetic is the float32
  sequence of jaxtalk.face.mask.rasterize_polygon, op for op (two subtractions, a multiply, a
  divide, an add: nothing XLA could fuse into an FMA), so both round identically. The edges
  are a lax.scan (one (N, S, S) parity carry, a small program whatever P).
  """
  pts = points_np2.astype(jnp.float32)
  n = pts.shape[0]
  x1, y1 = pts[..., 0], pts[..., 1]  # (N, P)
  x2, y2 = jnp.roll(x1, -1, axis=1), jnp.roll(y1, -1, axis=1)
  centres = jnp.arange(size, dtype=jnp.float32) + 0.5
  cy = centres[None, :]  # (1, S): rows
  cx = centres[None, None, :]  # (1, 1, S): columns

  def edge(inside, e):
    ex1, ey1, ex2, ey2 = (a[:, None] for a in e)  # (N, 1) each
    straddle = (ey1 > cy) != (ey2 > cy)  # (N, S)
    dy = jnp.where(straddle, ey2 - ey1, jnp.float32(1.0))
    x_cross = ex1 + (cy - ey1) * (ex2 - ex1) / dy  # (N, S)
    hit = straddle[:, :, None] & (cx < x_cross[:, :, None])  # (N, S, S)
    return inside ^ hit, None

  inside0 = jnp.zeros((n, size, size), jnp.bool_)
  inside, _ = lax.scan(edge, inside0, (x1.T, y1.T, x2.T, y2.T))
  return inside


def rasterize_polygon(points_p2: jax.Array, size: int) -> jax.Array:
  """(S, S) bool mask of one (P, 2) polygon (see rasterize_many)."""
  return rasterize_many(points_p2[None], size)[0]


# ----------------------------------------------------------------------------------------------
# Morphology and warps on (N, S, S) float {0, 1} masks.


def _pool3(x_nhw: jax.Array, op, init: float) -> jax.Array:
  return lax.reduce_window(x_nhw, init, op, (1, 3, 3), (1, 1, 1), "SAME")


def morph(mask_nhw: jax.Array, radius_n: jax.Array, max_radius: int) -> jax.Array:
  """Dilation (radius > 0) or erosion (radius < 0) by a (2|r|+1)^2 square, per mask.

  Iterated 3x3 max/min pooling; the level counts (how many of the nested dilations/erosions
  hold a pixel) give any radius up to max_radius with two running sums, not 2R+1 masks.
  """
  if max_radius == 0:
    return mask_nhw
  dil_count = jnp.zeros_like(mask_nhw)
  ero_count = jnp.zeros_like(mask_nhw)
  d = e = mask_nhw
  for _ in range(max_radius):
    d = _pool3(d, lax.max, -jnp.inf)
    e = _pool3(e, lax.min, jnp.inf)
    dil_count = dil_count + d
    ero_count = ero_count + e
  r = radius_n.astype(mask_nhw.dtype)[:, None, None]
  # pixel in dilation_r <=> it is in dilations r..R, i.e. dil_count >= R - r + 1
  dilated = (dil_count >= max_radius - r + 1).astype(mask_nhw.dtype)
  eroded = (ero_count >= -r).astype(mask_nhw.dtype)
  return jnp.where(r > 0, dilated, jnp.where(r < 0, eroded, mask_nhw))


def warp_nearest(
  mask_nhw: jax.Array, angle_n: jax.Array, shift_n2: jax.Array, centre_n2: jax.Array
) -> jax.Array:
  """Rotates each mask by angle (radians, counter-clockwise in image x-right/y-down axes)
  about centre (x, y) and shifts it by (dx, dy), nearest-neighbour; outside is 0."""
  n, h, w = mask_nhw.shape
  ys = jnp.arange(h, dtype=jnp.float32) + 0.5
  xs = jnp.arange(w, dtype=jnp.float32) + 0.5
  gx, gy = jnp.meshgrid(xs, ys)  # (H, W)

  def one(m, a, s, c):
    # inverse map: the output pixel p takes the input at R(-a) (p - c - s) + c
    px, py = gx - c[0] - s[0], gy - c[1] - s[1]
    cos, sin = jnp.cos(a), jnp.sin(a)
    qx = cos * px + sin * py + c[0]
    qy = -sin * px + cos * py + c[1]
    j = jnp.floor(qx).astype(jnp.int32)
    i = jnp.floor(qy).astype(jnp.int32)
    ok = (i >= 0) & (i < h) & (j >= 0) & (j < w)
    v = m[jnp.clip(i, 0, h - 1), jnp.clip(j, 0, w - 1)]
    return jnp.where(ok, v, 0.0)

  return jax.vmap(one)(mask_nhw, angle_n, shift_n2, centre_n2)


# ----------------------------------------------------------------------------------------------
# The augmentation.


def augment_masks(
  key: jax.Array,
  mask_points_btp2: jax.Array,
  stored_mask_bthw: jax.Array,
  params: ErosionParams,
  sample_ids: jax.Array | None = None,
) -> jax.Array:
  """The erosion masks (B, T, S, S) float32 in {0, 1} for one batch.

  Each sample's draws come from fold_in(key, sample_ids[b]), so a sample gets the same mask
  whichever device or batch position it sits on (the pmap and jit paths agree). sample_ids
  defaults to arange(B). With `params.enabled` False the stored mask is returned.
  """
  stored = stored_mask_bthw.astype(jnp.float32)
  if not params.enabled:
    return stored
  b, t, s = stored.shape[:3]
  p = mask_points_btp2.shape[2]
  if sample_ids is None:
    sample_ids = jnp.arange(b)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(sample_ids)
  pts = mask_points_btp2.astype(jnp.float32)

  n_draw = t if params.per_frame else 1
  # one uniform draw per sample feeds everything (threefry is slow to compile on CPU; one call
  # instead of five saves seconds per compiled step): Box-Muller for the point noise
  n_noise = t * p  # pairs of uniforms -> pairs of normals (x, y)
  need = 2 * n_noise + 4 * n_draw

  def draws(k):
    u = jax.random.uniform(k, (need,))
    u1, u2 = u[:n_noise], u[n_noise : 2 * n_noise]
    rest = u[2 * n_noise :].reshape(4, n_draw)
    rad = jnp.sqrt(-2.0 * jnp.log1p(-u1))  # 1 - u1 in (0, 1]
    normal = jnp.stack([rad * jnp.cos(2 * jnp.pi * u2), rad * jnp.sin(2 * jnp.pi * u2)], -1)
    # clipped (not resampled) normal: bounded like a truncated one
    noise = params.point_noise * jnp.clip(
      normal.reshape(t, p, 2), -POINT_NOISE_TRUNCATION, POINT_NOISE_TRUNCATION
    )
    m = params.max_morph
    radius = jnp.clip(jnp.floor(rest[0] * (2 * m + 1)).astype(jnp.int32) - m, -m, m)
    angle = jnp.deg2rad(params.max_rotate_deg) * (2.0 * rest[1] - 1.0)
    shift = params.max_shift * (2.0 * jnp.stack([rest[2], rest[3]], -1) - 1.0)
    return (
      noise,
      jnp.broadcast_to(radius, (t,)),
      jnp.broadcast_to(angle, (t,)),
      jnp.broadcast_to(shift, (t, 2)),
    )

  noise, radius, angle, shift = jax.vmap(draws)(keys)  # (B,T,P,2) (B,T) (B,T) (B,T,2)
  if params.point_noise > 0:
    noised = pts + noise
  else:
    noised = pts
  # the polygon's vertex mean: the mouth centre the rotation turns about
  centre = jnp.mean(pts, axis=2).reshape(b * t, 2)
  m = rasterize_many(noised.reshape(b * t, p, 2), s).astype(jnp.float32)
  m = morph(m, radius.reshape(b * t), params.max_morph)
  if params.max_rotate_deg > 0 or params.max_shift > 0:
    m = warp_nearest(m, angle.reshape(b * t), shift.reshape(b * t, 2), centre)
  return m.reshape(b, t, s, s)
