"""MSI math (Sec. III-D, Eq. 2-4) against hand-worked cases and a naive loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk.errors import JaxtalkError
from jaxtalk.metrics import msi as M


def naive_msi(z_tn2: np.ndarray, points, eps=1e-5) -> float:
  """Eq. 2-4 written as loops, straight from the paper's symbols (interior accelerations)."""
  T = z_tn2.shape[0]
  total = 0.0
  for i in points:
    acc = []
    for t in range(1, T - 1):
      v_t = z_tn2[t + 1, i] - z_tn2[t, i]
      v_prev = z_tn2[t, i] - z_tn2[t - 1, i]
      acc.append(v_t - v_prev)
    acc = np.array(acc)
    mean = acc.mean(axis=0)
    sigma = sum(float(np.sum((a - mean) ** 2)) for a in acc) / (len(acc) - 1)
    total += 1.0 / (sigma + eps)
  return total / len(points)


def integrate(acc_tn2: np.ndarray, z0=None, v0=None) -> np.ndarray:
  """Positions whose interior second differences are exactly `acc_tn2`."""
  n, N, _ = acc_tn2.shape
  z = np.zeros((n + 2, N, 2))
  z[0] = 0 if z0 is None else z0
  z[1] = z[0] + (0 if v0 is None else v0)
  for t in range(n):
    z[t + 2] = 2 * z[t + 1] - z[t] + acc_tn2[t]
  return z


def test_constant_velocity_is_perfectly_stable():
  t = np.arange(30, dtype=np.float64)[:, None, None]
  z = np.random.default_rng(0).normal(size=(1, 68, 2)) * 50 + t * np.array([1.5, -0.7])
  var = M.acceleration_variance(z)
  np.testing.assert_allclose(var, 0.0, atol=1e-18)
  scores = M.msi(z, normalise=False)
  for v in scores.values():
    assert v == pytest.approx(1e5)


def test_known_acceleration_variance_closed_form():
  # Accelerations alternate +c, -c in x and are 0 in y: mean 0, so
  # sigma = 1/(n-1) * sum_t c^2 = n c^2 / (n-1).
  n, c = 10, 0.3
  acc = np.zeros((n, 68, 2))
  acc[:, :, 0] = c * (-1.0) ** np.arange(n)[:, None]
  z = integrate(acc, v0=np.array([2.0, 1.0]))
  expected_sigma = n * c**2 / (n - 1)
  np.testing.assert_allclose(M.acceleration_variance(z), expected_sigma, rtol=1e-12)
  scores = M.msi(z, normalise=False, eps=1e-5)
  assert scores["lip"] == pytest.approx(1.0 / (expected_sigma + 1e-5), rel=1e-12)


def test_matches_naive_loops_and_groups():
  rng = np.random.default_rng(1)
  z = np.cumsum(rng.normal(size=(25, 68, 2)), axis=0) + 100
  scores = M.msi(z, normalise=False)
  assert scores["lip"] == pytest.approx(naive_msi(z, range(48, 68)), rel=1e-10)
  assert scores["jaw"] == pytest.approx(naive_msi(z, range(0, 17)), rel=1e-10)
  assert scores["all"] == pytest.approx(naive_msi(z, range(68)), rel=1e-10)


def test_translation_changes_nothing_and_scale_is_normalised():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(1, 68, 2)) * 40 + 150 + np.cumsum(rng.normal(size=(20, 68, 2)), axis=0)
  base = M.msi(z)
  shifted = M.msi(z + np.array([37.25, -12.5]))
  # A per-frame translation that is itself smooth (constant velocity) also changes nothing.
  drift = M.msi(z + np.arange(20)[:, None, None] * np.array([0.5, 0.25]))
  scaled = M.msi(z * 2.0)
  for k in base:
    assert shifted[k] == pytest.approx(base[k], rel=1e-9)
    assert drift[k] == pytest.approx(base[k], rel=1e-9)
    assert scaled[k] == pytest.approx(base[k], rel=1e-9)
  # Without crop normalisation, doubling the face quarters MSI-relevant variance's inverse.
  raw, raw2 = M.msi(z, normalise=False), M.msi(z * 2.0, normalise=False)
  assert raw2["all"] < raw["all"] / 3


def test_crop_box_mouth_is_quarter_width():
  z = np.zeros((5, 68, 2))
  z[:, 48] = [100.0, 200.0]
  z[:, 54] = [140.0, 200.0]
  x0, y0, side = M.msi_crop_box(z)
  assert side == pytest.approx(160.0)
  normed = M.normalise_landmarks(z, (x0, y0, side), 256)
  assert normed[0, 54, 0] - normed[0, 48, 0] == pytest.approx(0.25 * 256)


def test_too_few_frames_and_nan_are_user_errors():
  z = np.random.default_rng(3).normal(size=(3, 68, 2))
  with pytest.raises(JaxtalkError, match="at least 4 frames"):
    M.msi(z, normalise=False)
  z = np.random.default_rng(3).normal(size=(6, 68, 2))
  z[4, 3] = np.nan
  with pytest.raises(JaxtalkError, match="missing"):
    M.msi(z, normalise=False)


def test_added_jitter_lowers_msi_strictly():
  rng = np.random.default_rng(4)
  t = np.linspace(0, 2 * np.pi, 50)[:, None, None]
  z = 120 + 30 * rng.normal(size=(1, 68, 2)) + 4 * np.sin(t) * rng.normal(size=(1, 68, 2))
  previous = M.msi(z)
  for scale in (0.05, 0.2, 1.0):
    jittered = M.msi(z + scale * rng.normal(size=z.shape))
    for k in previous:
      assert jittered[k] < previous[k]
    previous = jittered
