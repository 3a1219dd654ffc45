"""The figures of `jaxtalk bench a2e` (jaxtalk.bench.a2e.heldout_figures) on constructed
predictions with a known answer: perfect, frozen, and late by 3 frames."""

from __future__ import annotations

import numpy as np

from jaxtalk.bench.a2e import HeldOut, heldout_figures
from jaxtalk.face.landmark3d import FaceModel
from jaxtalk.metrics.articulation import mouth_aperture

E, N, SIZE = 4, 120, 64


def _face_model() -> FaceModel:
  rng = np.random.default_rng(0)
  identity = rng.normal(size=(68, 3)) * 20
  identity[:, 2] = 0
  identity[48], identity[54] = (-25, 30, 0), (25, 30, 0)
  identity[[61, 62, 63]] = [(-8, 27, 0), (0, 26, 0), (8, 27, 0)]
  identity[[67, 66, 65]] = [(-8, 33, 0), (0, 34, 0), (8, 33, 0)]
  comps, _ = np.linalg.qr(rng.normal(size=(66, E)))
  return FaceModel(
    identity=identity,
    components=comps,
    std=np.array([2.0, 1.5, 1.0, 0.5]),
    explained_variance_ratio=np.full(E, 0.25),
    extra_vertices=np.zeros((0, 3)),
  )


def _smooth_expressions(seed: int, n: int = N) -> np.ndarray:
  rng = np.random.default_rng(seed)
  kernel = np.hanning(7) / np.hanning(7).sum()
  return np.stack(
    [np.convolve(rng.normal(size=n + 6), kernel, "valid") * 3 for _ in range(E)], axis=1
  )


def test_heldout_figures_known_answers():
  fm = _face_model()
  pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 500.0], (N, 1))
  fit = _smooth_expressions(1)
  real_ap = mouth_aperture(np.stack([fm.project(e, p, SIZE) for e, p in zip(fit, pose)]))
  env = np.log(real_ap - real_ap.min() + 0.01)  # an "audio envelope" the real mouth follows

  def figures(pred):
    return heldout_figures([HeldOut("c", 100, pred, fit, pose, env)], fm, SIZE, 25.0, 10)

  perfect = figures(fit.copy())
  for c in perfect["components"]:
    np.testing.assert_allclose([c["std_ratio"], c["corr"]], [1.0, 1.0], atol=1e-9)
  np.testing.assert_allclose([perfect["aperture_ratio"], perfect["aperture_corr"]], [1, 1])
  assert perfect["sync_offset_frames"] == perfect["real_sync_offset_frames"] == 0
  assert perfect["heldout_frames"] == N and perfect["clips"][0]["first_heldout_frame"] == 100
  np.testing.assert_allclose(perfect["aperture_fit"], real_ap)

  frozen = figures(np.tile(fit.mean(0), (N, 1)))
  assert frozen["aperture_ratio"] == 0.0 and frozen["leading_mean_corr"] == 0.0

  # The prediction moves 3 frames after the real mouth (and the sound): offset +3.
  late = np.concatenate([np.tile(fit[:1], (3, 1)), fit[:-3]])
  assert figures(late)["sync_offset_frames"] == 3
  half = figures(0.5 * (fit - fit.mean(0)) + fit.mean(0))
  np.testing.assert_allclose(half["leading_mean_std_ratio"], 0.5, atol=1e-9)
