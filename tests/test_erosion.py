"""Augmented erosion on device (jaxtalk/train/erosion.py, StableFace Sec. III-C2)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxtalk.face.mask import rasterize_polygon
from jaxtalk.train import erosion as E

S = 64


def _mouths(rng, n, p=18, size=S):
  """Mouth-like polygons: noisy ellipses around the lower centre of the crop."""
  ang = np.linspace(0, 2 * np.pi, p, endpoint=False)
  cx = rng.uniform(0.4, 0.6, (n, 1)) * size
  cy = rng.uniform(0.6, 0.75, (n, 1)) * size
  rx = rng.uniform(0.1, 0.2, (n, 1)) * size
  ry = rng.uniform(0.05, 0.12, (n, 1)) * size
  x = cx + rx * np.cos(ang) + rng.normal(0, 0.7, (n, p))
  y = cy + ry * np.sin(ang) + rng.normal(0, 0.7, (n, p))
  return np.stack([x, y], -1).astype(np.float32)


def test_device_rasteriser_equals_the_preprocessing_mask_bit_for_bit():
  rng = np.random.default_rng(0)
  polys = [
    rng.uniform(-8, S + 8, (300, 18, 2)).astype(np.float32),  # self-intersecting, off-image
    _mouths(rng, 300),
    # vertices on pixel centres and edges through them: the tie cases of the rule
    (rng.integers(0, S, (100, 18, 2)) + 0.5).astype(np.float32),
    rng.integers(0, S, (100, 18, 2)).astype(np.float32),
  ]
  raster = jax.jit(lambda p: E.rasterize_many(p, S))
  for pts in polys:
    want = np.stack([rasterize_polygon(p, S) for p in pts]).astype(bool)
    got = np.asarray(raster(pts))
    assert (got == want).all(), f"{(got != want).sum()} pixels differ"
    assert want.any()


def test_no_augmentation_gives_the_stored_mask():
  rng = np.random.default_rng(1)
  pts = _mouths(rng, 6).reshape(2, 3, 18, 2)
  stored = np.stack([rasterize_polygon(p, S) for p in pts.reshape(-1, 18, 2)]).reshape(2, 3, S, S)
  zero = E.ErosionParams(enabled=True)  # all magnitudes 0: noise, morph, shift, rotation
  assert zero.is_identity
  got = jax.jit(lambda k: E.augment_masks(k, pts, stored, zero))(jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(got), stored)
  off = E.ErosionParams(
    enabled=False, point_noise=3.0, max_morph=3, max_shift=4.0, max_rotate_deg=9
  )
  garbage = np.full_like(pts, 1e3)  # the stored mask is used as it is; the points are not read
  got = E.augment_masks(jax.random.key(3), garbage, stored, off)
  np.testing.assert_array_equal(np.asarray(got), stored)


def test_morphology_matches_scipy():
  rng = np.random.default_rng(2)
  masks = np.stack([rasterize_polygon(p, S) for p in _mouths(rng, 7)]).astype(np.float32)
  radii = np.array([-3, -2, -1, 0, 1, 2, 3], np.int32)
  got = np.asarray(jax.jit(lambda m, r: E.morph(m, r, 3))(masks, radii))
  for m, r, g in zip(masks, radii, got, strict=True):
    se = np.ones((2 * abs(r) + 1,) * 2, bool)
    if r > 0:
      want = ndimage.binary_dilation(m > 0, se)
    elif r < 0:
      want = ndimage.binary_erosion(m > 0, se, border_value=1)
    else:
      want = m > 0
    np.testing.assert_array_equal(g > 0, want, err_msg=f"radius {r}")


def test_warp_integer_shift_is_a_roll_and_rotation_keeps_the_centre():
  m = np.zeros((1, S, S), np.float32)
  m[0, 30:36, 20:40] = 1
  shifted = np.asarray(
    E.warp_nearest(m, jnp.zeros(1), jnp.array([[3.0, -2.0]]), jnp.array([[30.0, 33.0]]))
  )
  want = np.zeros_like(m)
  want[0, 28:34, 23:43] = 1
  np.testing.assert_array_equal(shifted, want)
  rot = np.asarray(
    E.warp_nearest(m, jnp.array([math.pi / 2]), jnp.zeros((1, 2)), jnp.array([[30.0, 33.0]]))
  )
  assert rot[0, 33, 30] == 1 and rot[0, 20:46, 27:34].sum() == rot.sum()  # now vertical


def test_augmentation_stays_in_the_dilated_mouth_region():
  """Point noise (clipped), morphology, shift and rotation together never reach farther from
  the stored mask than ErosionParams.bound_radius; and they do move the mask."""
  params = E.ErosionParams(
    enabled=True, point_noise=1.5, max_morph=3, max_shift=4.0, max_rotate_deg=10.0
  )
  rng = np.random.default_rng(3)
  b, t = 4, 3
  pts = _mouths(rng, b * t).reshape(b, t, 18, 2)
  stored = np.stack([rasterize_polygon(p, S) for p in pts.reshape(-1, 18, 2)]).reshape(b, t, S, S)
  aug_fn = jax.jit(lambda k: E.augment_masks(k, pts, stored, params))
  changed = 0
  for seed in range(10):
    aug = np.asarray(aug_fn(jax.random.key(seed))) > 0
    for i in range(b):
      for j in range(t):
        poly = pts[i, j]
        radius = float(np.max(np.linalg.norm(poly - poly.mean(0), axis=1)))
        bound = params.bound_radius(radius)
        dist = ndimage.distance_transform_edt(stored[i, j] == 0)
        outside = aug[i, j] & (dist > bound)
        assert not outside.any(), f"seed {seed}: {outside.sum()} pixels beyond {bound:.1f} px"
        changed += int((aug[i, j] != (stored[i, j] > 0)).any())
  assert changed > 0.9 * 10 * b * t


def test_draws_are_per_sample_and_reproducible():
  params = E.ErosionParams(
    enabled=True, point_noise=1.0, max_morph=2, max_shift=3.0, max_rotate_deg=8
  )
  rng = np.random.default_rng(4)
  pts = np.repeat(_mouths(rng, 1)[None], 2, axis=0).reshape(2, 1, 18, 2)  # the same mouth twice
  stored = np.stack([rasterize_polygon(pts[0, 0], S)] * 2)[:, None]
  key = jax.random.key(0)
  aug = jax.jit(lambda k, p, m, ids: E.augment_masks(k, p, m, params, sample_ids=ids))
  a = np.asarray(aug(key, pts, stored, jnp.arange(2)))
  b = np.asarray(aug(key, pts, stored, jnp.arange(2)))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a[0], a[1])  # two samples, two draws
  # a sample's draw depends on its global id only (what makes pmap and jit agree)
  c = np.asarray(aug(key, pts[::-1], stored[::-1], jnp.array([1, 0])))
  np.testing.assert_array_equal(c[0], a[1])
  np.testing.assert_array_equal(c[1], a[0])


def test_erode_sets_the_mask_to_mid_gray_and_leaves_the_rest():
  rng = np.random.default_rng(5)
  frames = rng.uniform(-1, 1, (1, 2, S, S, 3)).astype(np.float32)
  mask = np.zeros((1, 2, S, S), np.float32)
  mask[..., 40:50, 20:44] = 1
  out = np.asarray(E.erode(frames, mask))
  np.testing.assert_array_equal(out[mask > 0], 0.0)
  np.testing.assert_array_equal(out[mask == 0], frames[mask == 0])


def test_params_from_config_scale_with_the_crop():
  from jaxtalk.config import load_config

  cfg = load_config("grid")
  p256 = E.ErosionParams.from_config(cfg, 256)
  p64 = E.ErosionParams.from_config(cfg, 64)
  assert p256.max_morph == cfg.train.erosion_max_morph
  assert p64.point_noise == pytest.approx(cfg.train.erosion_point_noise / 4)
  assert p64.max_rotate_deg == p256.max_rotate_deg
  cfg.train.erosion = False
  assert not E.ErosionParams.from_config(cfg).enabled
