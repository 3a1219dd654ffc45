"""landmark3d: the embedded face model (template, pose, frontalisation, PCA expression basis,
rendering from parameters alone) and its fit quality on real GRID landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtalk.face import landmark3d as l3
from jaxtalk.face.mask import rasterize_polygon

SIZE = 256


def test_template_frame_and_symmetry():
  t = l3.TEMPLATE
  assert t.shape == (68, 3)
  np.testing.assert_allclose(t[list(l3.MIRROR)] * [-1, 1, 1], t)
  np.testing.assert_allclose(t[36], [-45, 0, 14])  # outer eye corners define the frame
  np.testing.assert_allclose(t[45], [45, 0, 14])
  assert t[30, 2] == t[27:36, 2].min()  # the nose tip is closest to the camera (z away)
  assert t[8, 1] == t[:, 1].max()  # y down: the chin is lowest


def test_triangulation():
  tris = l3.TRIANGLES
  assert tris.min() == 0 and tris.max() == l3.NUM_VERTICES - 1
  verts = l3.FaceModel(
    identity=np.array(l3.TEMPLATE),
    components=np.zeros((66, 4)),
    std=np.zeros(4),
    explained_variance_ratio=np.zeros(4),
    extra_vertices=np.array(l3.EXTRA_VERTICES),
  ).vertices(np.zeros(4))
  v = verts[tris]
  normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
  assert np.all(normals[:, 2] < 0)  # wound to face the camera, none degenerate
  edges = {}
  for a, b, c in tris:
    for e in ((a, b), (b, c), (c, a)):
      edges[tuple(sorted(e))] = edges.get(tuple(sorted(e)), 0) + 1
  assert max(edges.values()) <= 2  # a surface, no fins
  for ring in (range(48, 60), range(60, 68), range(36, 42), range(42, 48)):
    ring = list(ring)
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
      assert tuple(sorted((a, b))) in edges, (a, b)  # contours are mesh edges
  mouth = tris[-l3.MOUTH_TRIANGLES :]
  assert np.all((mouth >= 60) & (mouth < 68))


def test_project_frontalise_roundtrip_and_pose():
  pose = np.array([0.1, -0.2, 0.05, 3.0, -20.0, 600.0])
  pts = l3.project(l3.TEMPLATE, pose, SIZE)
  back = l3.frontalise(pts, pose, l3.TEMPLATE[:, 2], SIZE)
  np.testing.assert_allclose(back, l3.TEMPLATE, atol=1e-6)
  rigid = list(l3.RIGID_POINTS)
  est = l3.solve_pose(l3.TEMPLATE[rigid], pts[rigid], SIZE)
  np.testing.assert_allclose(est, pose, atol=1e-4)
  # The camera: a centred pinhole with focal length FOCAL_SCALE * size.
  k = l3.camera_matrix(SIZE)
  assert k[0, 0] == l3.FOCAL_SCALE * SIZE and k[0, 2] == SIZE / 2


def _synthetic_landmarks(n: int, rng: np.random.Generator, modes: int = 3) -> np.ndarray:
  """Template faces with `modes` random mouth/jaw deformations, seen under random poses."""
  idx = list(l3.EXPRESSION_POINTS)
  dirs = rng.normal(size=(modes, len(idx), 2))
  out = []
  for _ in range(n):
    shape = np.array(l3.TEMPLATE)
    shape[idx, :2] += np.tensordot(rng.normal(size=modes) * [3.0, 1.5, 0.7][:modes], dirs, 1)
    pose = np.concatenate([rng.normal(scale=0.08, size=3), [0, -25, 600] + rng.normal(size=3)])
    out.append(l3.project(shape, pose, SIZE))
  return np.stack(out)


def test_learn_pads_missing_components_and_is_deterministic():
  rng = np.random.default_rng(0)
  lms = _synthetic_landmarks(40, rng, modes=3)
  model = l3.learn_face_model([lms[:25], lms[25:]], SIZE, expression_dim=8)
  assert model.components.shape == (66, 8) and model.expression_dim == 8
  assert np.sum(model.std > 1e-6) == 3  # three real modes, the rest padding
  np.testing.assert_allclose(model.explained_variance_ratio[:3].sum(), 1.0, atol=1e-6)
  assert np.all(model.components[:, 3:] == 0) and np.all(model.std[3:] == 0)
  # Sign convention: the largest-magnitude entry of every real component is positive.
  for j in range(3):
    c = model.components[:, j]
    assert c[np.argmax(np.abs(c))] > 0
  fit = l3.fit_frames(model, lms, SIZE)
  assert np.all(fit.expression_te[:, 3:] == 0)
  assert fit.error_t.max() < 1e-3  # noise-free data is reproduced exactly
  np.testing.assert_allclose(fit.expression_te[:, :3].std(axis=0), 1.0, atol=0.05)  # unit variance
  again = l3.learn_face_model([lms[:25], lms[25:]], SIZE, expression_dim=8)
  for k, v in model.to_arrays().items():
    np.testing.assert_array_equal(v, again.to_arrays()[k])
  restored = l3.FaceModel.from_arrays(model.to_arrays())
  np.testing.assert_array_equal(
    restored.shape(fit.expression_te[3]), model.shape(fit.expression_te[3])
  )


def test_render_from_parameters():
  rng = np.random.default_rng(1)
  model = l3.learn_face_model([_synthetic_landmarks(30, rng)], SIZE, expression_dim=4)
  pose = np.array([0.0, 0.15, 0.0, 0.0, -25.0, 600.0])
  neutral = l3.render(model, np.zeros(4), pose, SIZE)
  assert neutral.shape == (SIZE, SIZE, 3) and neutral.dtype == np.uint8
  assert neutral[0, 0].sum() == 0 and neutral[SIZE // 2, SIZE // 2].sum() > 0
  np.testing.assert_array_equal(neutral, model.render(np.zeros(4), pose, SIZE))  # deterministic
  # The rendered face covers the projected landmarks' outline.
  outline = model.project(np.zeros(4), pose, SIZE)[list(range(17)) + [26, 24, 19, 17]]
  inside = rasterize_polygon(outline, SIZE).astype(bool)
  assert (neutral[inside].sum(axis=1) > 0).mean() > 0.98
  # Other expressions change the picture around the mouth only.
  other = l3.render(model, np.array([2.5, -2.0, 1.0, 0.0]), pose, SIZE)
  changed = np.argwhere(np.any(other != neutral, axis=-1))
  assert len(changed) > 50
  mouth_y = model.project(np.zeros(4), pose, SIZE)[48:68, 1].mean()
  eye_y = model.project(np.zeros(4), pose, SIZE)[36:48, 1].mean()
  assert np.median(changed[:, 0]) > (mouth_y + eye_y) / 2
  small = l3.render(model, np.zeros(4), pose, 64)
  assert abs((small.sum(-1) > 0).mean() - (neutral.sum(-1) > 0).mean()) < 0.02  # size-independent


@pytest.fixture(scope="module")
def grid_landmarks_256(grid_clips, tmp_path_factory):
  from jaxtalk.config import load_config
  from jaxtalk.face.cache import video_track
  from jaxtalk.face.crop import stable_crop_box, to_crop_coords

  config = load_config("grid")
  cache = tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"
  out = {}
  for path in grid_clips[:2]:
    track = video_track(path, "dlib", config.track, fps=25.0, cache_dir=cache)
    box = stable_crop_box(track.boxes_t4, track.found_t, config.data.crop_scale)
    out[path.stem] = to_crop_coords(track.landmarks_tn2[track.found_t], box, SIZE)
  return out


@pytest.mark.parametrize("dim", [53, 16])
def test_reprojection_error_on_grid(grid_landmarks_256, dim):
  """project(fit(frame)) lands on the detected landmarks. Measured at 256x256 on
  bbaf2n/brbk7n: mean 0.36/0.29 px (E=53), 0.43/0.36 px (E=16); max 6.5 px (eyelids in a
  blink: eyes are not part of the mouth/jaw expression); mouth/jaw points max 0.11 px (E=53),
  0.64 px (E=16)."""
  expr_idx = list(l3.EXPRESSION_POINTS)
  for name, lms in grid_landmarks_256.items():
    model = l3.learn_face_model([lms], SIZE, dim)
    fit = l3.fit_frames(model, lms, SIZE)
    proj = np.stack(
      [model.project(e, p, SIZE) for e, p in zip(fit.expression_te, fit.pose_t6, strict=True)]
    )
    err = np.linalg.norm(proj - lms, axis=-1)
    np.testing.assert_allclose(err.mean(axis=1), fit.error_t, rtol=1e-4, atol=1e-4)
    assert err.mean() < 0.6, name
    assert err.max() < 8.0, name
    assert err[:, expr_idx].max() < (0.25 if dim == 53 else 1.0), name
    assert model.explained_variance_ratio.sum() > (0.999 if dim == 53 else 0.97)
