"""landmark3d: the embedded person-specific 3D face model (no downloads, no licensed assets).

StableFace fits DECA/FLAME to every training frame (Sec. III-A) to get pose, identity and a
53-dim expression, and draws shape renders from them. This module gives the same three things
from the 68 iBUG landmarks alone, so `jaxtalk preprocess` runs from `pip install` (the DECA
path lives in third_party/deca_bridge for users who have it).

**Template and coordinate frame.** `TEMPLATE` is a generic adult mean face, 68 points in
millimetres, written by hand: x and y from mean adult proportions (biocular width 90 mm,
intercanthal 37 mm, nose 50 mm below the eye line, mouth width 52 mm, eye-line to chin
127 mm; the dlib/iBUG point definitions follow the visible jaw contour, not bony landmarks),
depth from typical facial profile (nose tip 32 mm in front of the inner eye corners, lips
14-18 mm, ear-level jaw points 70 mm behind). The frame is OpenCV's camera frame for a face
looking straight into the camera: x to the image right (the subject's left), y down, z away from
the camera; origin at the midpoint of the outer eye corners' line projected onto the plane of the
inner eye corners (points 36, 45 lie at (+-45, 0, 14)). The template is left-right symmetric.

**Camera.** A pinhole at the crop's centre with focal length `FOCAL_SCALE * size` pixels
(2.0: a 28 degree field of view, about a webcam at 0.6 m for a face that fills the crop).
The true focal length of a video is unknown; a moderate one keeps perspective mild and makes
the fit independent of the resolution: poses are in millimetres, images of any `size` scale
the intrinsics together.

**Fit.** Pose per frame: perspective PnP (cv2 SQPnP, refined by Levenberg-Marquardt) of the
rigid points (`RIGID_POINTS`: upper jaw line, nose, eye corners: they move with the head, not
with the mouth, so speaking never tilts the fitted head). Frontalisation: each detected
landmark is back-projected along its camera ray to the depth its model point has, giving the
frame's shape in the model frame. Identity: the mean frontalised shape of all the person's
frames (x, y; depth from the template), two rounds of pose + frontalisation. Expression: PCA
of the frontalised mouth and jaw offsets from the identity (`EXPRESSION_POINTS`, 33 points,
66 dims) over all the person's frames. A frame's expression is its offset projected onto the E
leading components and divided by each component's standard deviation (unit variance over the
training frames). Components beyond the data's rank are zero (and their coefficient is always
0); `explained_variance_ratio` records how much each one explains. Signs are fixed: the entry
of largest magnitude of every component is positive.

**Render.** `render(model, expression, pose, size)` draws the face from parameters alone (no
landmarks): the 68 model points plus `EXTRA_VERTICES` (forehead and temples, attached to the
identity by a fitted scale), a fixed triangulation (`TRIANGLES`), Lambert shading with Gouraud
interpolation and a z-buffer (`jaxtalk.face.render`), the inside of the mouth drawn dark.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from jaxtalk.errors import JaxtalkError
from jaxtalk.face import render as mesh_render

FOCAL_SCALE = 2.0
KIND = "landmark3d"
MODEL_VERSION = 1

# Left half of the face in the image (the subject's right) and the midline: index -> (x, y, z)
# in mm. The other half is the mirror image (x -> -x) through `MIRROR`.
_HALF: dict[int, tuple[float, float, float]] = {
  # jaw contour, ear level to chin
  0: (-72.0, 4.0, 72.0),
  1: (-70.5, 24.0, 66.0),
  2: (-68.0, 44.0, 58.0),
  3: (-65.0, 64.0, 48.0),
  4: (-59.5, 83.0, 36.0),
  5: (-50.0, 99.5, 22.0),
  6: (-36.0, 113.0, 8.0),
  7: (-19.5, 123.5, -3.0),
  8: (0.0, 127.0, -8.0),
  # right brow (image left), outer to inner
  17: (-60.0, -16.0, 10.0),
  18: (-51.0, -25.0, 2.0),
  19: (-38.0, -27.0, -4.0),
  20: (-25.0, -24.5, -7.0),
  21: (-12.5, -19.0, -7.0),
  # nose bridge and tip
  27: (0.0, -4.0, -10.0),
  28: (0.0, 8.5, -16.0),
  29: (0.0, 21.0, -23.0),
  30: (0.0, 33.5, -32.0),
  # nose bottom
  31: (-14.5, 45.5, -10.0),
  32: (-7.5, 48.0, -15.0),
  33: (0.0, 50.0, -17.0),
  # right eye (image left): outer corner, upper lid, inner corner, lower lid
  36: (-45.0, 0.0, 14.0),
  37: (-37.0, -4.5, 5.0),
  38: (-27.5, -4.5, 2.0),
  39: (-18.5, 1.0, 0.0),
  40: (-27.8, 3.6, 2.0),
  41: (-37.5, 3.8, 5.0),
  # outer lips: corner, upper lip, cupid's bow
  48: (-26.3, 76.0, -3.0),
  49: (-17.0, 70.0, -12.0),
  50: (-7.0, 66.3, -16.0),
  51: (0.0, 68.0, -18.0),
  57: (0.0, 89.3, -15.0),
  58: (-7.5, 88.5, -14.0),
  59: (-17.0, 84.6, -10.0),
  # inner lips (slightly parted, 3 mm)
  60: (-21.5, 76.0, -6.0),
  61: (-7.0, 74.5, -14.0),
  62: (0.0, 75.0, -15.0),
  66: (0.0, 78.0, -15.0),
  67: (-7.0, 77.5, -14.0),
}

MIRROR: tuple[int, ...] = tuple(
  [16 - i for i in range(17)]
  + [26 - i for i in range(10)]
  + [27, 28, 29, 30]
  + [35, 34, 33, 32, 31]
  + [45, 44, 43, 42, 47, 46]
  + [39, 38, 37, 36, 41, 40]
  + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
  + [64, 63, 62, 61, 60, 67, 66, 65]
)


def _build_template() -> np.ndarray:
  points = np.full((68, 3), np.nan)
  for i, xyz in _HALF.items():
    points[i] = xyz
    j = MIRROR[i]
    points[j] = (-xyz[0], xyz[1], xyz[2])
  assert not np.isnan(points).any()
  return points


TEMPLATE: np.ndarray = _build_template()
TEMPLATE.setflags(write=False)

# Points that move with the head but not with speech: the jaw line at ear level (0, 1, 15, 16),
# the nose (27-35) and the eye corners (36, 39, 42, 45). Brows and eyelids move on their own.
RIGID_POINTS: tuple[int, ...] = (0, 1, 15, 16, *range(27, 36), 36, 39, 42, 45)
# What speech moves: the jaw below the ears (2-14) and the lips (48-67).
EXPRESSION_POINTS: tuple[int, ...] = (*range(2, 15), *range(48, 68))

# Render-only vertices above the brows (forehead, two rows) and at the temples, in the template
# frame. They complete the face the way a FLAME render does; nothing is fitted to them.
EXTRA_VERTICES: np.ndarray = np.array(
  [
    (-58.0, -52.0, 24.0),
    (-40.0, -56.0, 8.0),
    (-20.0, -58.0, -1.0),
    (0.0, -58.0, -3.0),
    (20.0, -58.0, -1.0),
    (40.0, -56.0, 8.0),
    (58.0, -52.0, 24.0),
    (-48.0, -82.0, 32.0),
    (-24.0, -86.0, 12.0),
    (0.0, -87.0, 6.0),
    (24.0, -86.0, 12.0),
    (48.0, -82.0, 32.0),
    (-70.0, -20.0, 52.0),
    (70.0, -20.0, 52.0),
  ]
)
EXTRA_VERTICES.setflags(write=False)

INNER_LIPS: tuple[int, ...] = tuple(range(60, 68))

# Render-only vertices interpolated from landmarks (so they follow the mouth and jaw): the
# mean of each group, on the cheeks between the jaw line, the eyes, the nose and the mouth.
CHEEK_GROUPS: tuple[tuple[int, ...], ...] = (
  (1, 2, 41, 31),
  (15, 14, 46, 35),
  (3, 4, 48, 31),
  (13, 12, 54, 35),
)
NUM_VERTICES = 68 + len(EXTRA_VERTICES) + len(CHEEK_GROUPS)

# The fixed triangulation of the render mesh (vertex indices: 0-67 landmarks, 68-81
# EXTRA_VERTICES, 82-85 cheeks), wound so every normal faces the camera in the template. Made
# once from a Delaunay triangulation of the template's (x, y) without the inner lips, the inside
# of the outer lip contour removed, and the lips and mouth written by hand so that the lip
# contours are always mesh edges. The last `MOUTH_TRIANGLES` triangles fill the inner lip contour
# (the mouth opening) and are drawn in `MOUTH_COLOR`.
TRIANGLES: np.ndarray = np.array(
  [
    (0, 1, 36), (0, 17, 80), (0, 36, 17), (1, 2, 82), (1, 82, 36), (2, 3, 84), (2, 84, 82),
    (3, 4, 84), (4, 5, 84), (5, 6, 59), (5, 48, 84), (5, 59, 48), (6, 7, 58), (6, 58, 59),
    (7, 8, 58), (8, 9, 56), (8, 56, 57), (8, 57, 58), (9, 10, 56), (10, 11, 55), (10, 55, 56),
    (11, 12, 85), (11, 54, 55), (11, 85, 54), (12, 13, 85), (13, 14, 85), (14, 15, 83),
    (14, 83, 85), (15, 16, 45), (15, 45, 83), (16, 26, 45), (16, 81, 26), (17, 18, 80),
    (17, 36, 18), (18, 19, 68), (18, 36, 37), (18, 37, 19), (18, 68, 80), (19, 20, 70),
    (19, 37, 20), (19, 69, 68), (19, 70, 69), (20, 21, 70), (20, 37, 38), (20, 38, 21),
    (21, 22, 71), (21, 27, 22), (21, 38, 39), (21, 39, 27), (21, 71, 70), (22, 23, 72),
    (22, 27, 42), (22, 42, 43), (22, 43, 23), (22, 72, 71), (23, 24, 72), (23, 43, 44),
    (23, 44, 24), (24, 25, 74), (24, 44, 25), (24, 73, 72), (24, 74, 73), (25, 26, 81),
    (25, 44, 45), (25, 45, 26), (25, 81, 74), (27, 28, 42), (27, 39, 28), (28, 29, 42),
    (28, 39, 29), (29, 30, 35), (29, 31, 30), (29, 35, 47), (29, 39, 40), (29, 40, 31),
    (29, 47, 42), (30, 31, 32), (30, 32, 33), (30, 33, 34), (30, 34, 35), (31, 40, 82),
    (31, 49, 50), (31, 50, 32), (31, 82, 84), (31, 84, 49), (32, 50, 33), (33, 50, 51),
    (33, 51, 52), (33, 52, 34), (34, 52, 35), (35, 52, 53), (35, 53, 85), (35, 83, 47),
    (35, 85, 83), (36, 41, 37), (36, 82, 41), (37, 40, 38), (37, 41, 40), (38, 40, 39),
    (40, 41, 82), (42, 47, 43), (43, 47, 44), (44, 46, 45), (44, 47, 46), (45, 46, 83),
    (46, 47, 83), (48, 49, 84), (48, 59, 60), (48, 60, 49), (49, 60, 61), (49, 61, 50),
    (50, 61, 62), (50, 62, 51), (51, 62, 52), (52, 62, 63), (52, 63, 53), (53, 54, 85),
    (53, 63, 64), (53, 64, 54), (54, 64, 55), (55, 64, 65), (55, 65, 56), (56, 65, 66),
    (56, 66, 57), (57, 66, 58), (58, 66, 67), (58, 67, 59), (59, 67, 60), (68, 69, 75),
    (68, 75, 80), (69, 70, 76), (69, 76, 75), (70, 71, 77), (70, 77, 76), (71, 72, 77),
    (72, 73, 78), (72, 78, 77), (73, 74, 79), (73, 79, 78), (74, 81, 79),
    # the mouth opening
    (60, 67, 61), (61, 66, 62), (61, 67, 66), (62, 66, 63), (63, 65, 64), (63, 66, 65),
  ],
  np.int32,
)  # fmt: skip
TRIANGLES.setflags(write=False)
MOUTH_TRIANGLES = 6
# Triangles with all corners on the lip contours, between the outer and the inner lip line.
LIP_TRIANGLES: np.ndarray = np.all(TRIANGLES >= 48, axis=1) & np.all(TRIANGLES < 68, axis=1)
LIP_TRIANGLES[len(TRIANGLES) - MOUTH_TRIANGLES :] = False
LIP_TRIANGLES.setflags(write=False)
# Albedos: grey skin, lips a little darker and redder, the mouth opening dark, so the lip
# contours read clearly in the shape render (where the renderer needs them most).
SKIN_COLOR = np.array([0.85, 0.85, 0.85])
LIP_COLOR = np.array([0.80, 0.55, 0.55])
MOUTH_COLOR = np.array([0.35, 0.10, 0.10])


def _triangle_albedo() -> np.ndarray:
  albedo = np.tile(SKIN_COLOR, (len(TRIANGLES), 1))
  albedo[LIP_TRIANGLES] = LIP_COLOR
  albedo[len(TRIANGLES) - MOUTH_TRIANGLES :] = MOUTH_COLOR
  return albedo


TRIANGLE_ALBEDO: np.ndarray = _triangle_albedo()
TRIANGLE_ALBEDO.setflags(write=False)


# ----------------------------------------------------------------------------------- camera


def camera_matrix(size: int, focal_scale: float = FOCAL_SCALE) -> np.ndarray:
  """Intrinsics `(3, 3)` for a `size` x `size` image in continuous pixel coordinates."""
  f = focal_scale * size
  c = size / 2.0
  return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def rotation(pose_6: np.ndarray) -> np.ndarray:
  return cv2.Rodrigues(np.asarray(pose_6[:3], np.float64).reshape(3, 1))[0]


def to_camera(points_n3: np.ndarray, pose_6: np.ndarray) -> np.ndarray:
  """Model-frame points -> camera frame (mm)."""
  pose = np.asarray(pose_6, np.float64)
  return np.asarray(points_n3, np.float64) @ rotation(pose).T + pose[3:]


def project(
  points_n3: np.ndarray, pose_6: np.ndarray, size: int, focal_scale: float = FOCAL_SCALE
) -> np.ndarray:
  """Model-frame points -> continuous pixel coordinates `(n, 2)` of a `size` image."""
  cam = to_camera(points_n3, pose_6)
  k = camera_matrix(size, focal_scale)
  return cam[:, :2] / cam[:, 2:3] * k[0, 0] + k[:2, 2]


def solve_pose(
  model_n3: np.ndarray, image_n2: np.ndarray, size: int, focal_scale: float = FOCAL_SCALE
) -> np.ndarray:
  """Head pose `(6,)`: rotation vector and translation (mm) that project model onto image."""
  obj = np.ascontiguousarray(model_n3, np.float64)
  img = np.ascontiguousarray(image_n2, np.float64)
  k = camera_matrix(size, focal_scale)
  ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
  if not ok:
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_EPNP)
  if not ok:
    raise JaxtalkError("head pose estimation failed (degenerate landmarks)")
  rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, None, rvec, tvec)
  return np.concatenate([rvec.reshape(3), tvec.reshape(3)])


def frontalise(
  image_n2: np.ndarray,
  pose_6: np.ndarray,
  depth_n: np.ndarray,
  size: int,
  focal_scale: float = FOCAL_SCALE,
) -> np.ndarray:
  """Back-projects image points to the model frame, each at the model depth `depth_n` (z).

  The camera ray of pixel p is X_cam = s K^-1 (p, 1); in the model frame X = R^T (X_cam - t);
  requiring X.z = depth fixes s, so the result reprojects exactly onto p.
  """
  pose = np.asarray(pose_6, np.float64)
  r = rotation(pose)
  k = camera_matrix(size, focal_scale)
  pts = np.asarray(image_n2, np.float64)
  rays = np.stack(
    [(pts[:, 0] - k[0, 2]) / k[0, 0], (pts[:, 1] - k[1, 2]) / k[1, 1], np.ones(len(pts))], axis=1
  )
  rays_m = rays @ r  # R^T applied to each ray
  origin_m = -(r.T @ pose[3:])  # the camera centre in the model frame
  s = (np.asarray(depth_n, np.float64) - origin_m[2]) / rays_m[:, 2]
  return origin_m + s[:, None] * rays_m


# ----------------------------------------------------------------------------------- model


@dataclasses.dataclass
class FaceModel:
  """A person's landmark3d model: identity shape and expression basis (see module docstring)."""

  identity: np.ndarray  # (68, 3) mean frontalised shape, mm, model frame
  components: np.ndarray  # (2K, E) orthonormal PCA directions over EXPRESSION_POINTS' (x, y)
  std: np.ndarray  # (E,) standard deviation along each direction (0 for padding)
  explained_variance_ratio: np.ndarray  # (E,)
  extra_vertices: np.ndarray  # (len(EXTRA_VERTICES), 3) forehead/temples fitted to identity
  focal_scale: float = FOCAL_SCALE
  num_frames: int = 0

  @property
  def expression_dim(self) -> int:
    return int(self.components.shape[1])

  def shape(self, expression_e: np.ndarray) -> np.ndarray:
    """The 68 model points `(68, 3)` for an expression vector."""
    e = np.asarray(expression_e, np.float64)
    offset = self.components @ (e * self.std)
    shape = self.identity.copy()
    shape[list(EXPRESSION_POINTS), :2] += offset.reshape(-1, 2)
    return shape

  def vertices(self, expression_e: np.ndarray) -> np.ndarray:
    """All `NUM_VERTICES` render vertices `(V, 3)` for an expression."""
    shape = self.shape(expression_e)
    cheeks = np.stack([shape[list(g)].mean(axis=0) for g in CHEEK_GROUPS])
    return np.concatenate([shape, self.extra_vertices, cheeks])

  def project(self, expression_e: np.ndarray, pose_6: np.ndarray, size: int) -> np.ndarray:
    """The 68 landmarks `(68, 2)` the parameters put in a `size` image."""
    return project(self.shape(expression_e), pose_6, size, self.focal_scale)

  def expression_of(self, frontal_n3: np.ndarray) -> np.ndarray:
    """Expression coefficients `(E,)` of a frontalised shape."""
    idx = list(EXPRESSION_POINTS)
    d = (frontal_n3[idx, :2] - self.identity[idx, :2]).reshape(-1)
    proj = self.components.T @ d
    return np.divide(proj, self.std, out=np.zeros_like(proj), where=self.std > 0)

  def render(
    self, expression_e: np.ndarray, pose_6: np.ndarray, size: int, out: np.ndarray | None = None
  ) -> np.ndarray:
    return render(self, expression_e, pose_6, size, out)

  def to_arrays(self) -> dict[str, np.ndarray]:
    """The face_model.npz contents (plain arrays; strings as numpy unicode scalars)."""
    return {
      "kind": np.asarray(KIND),
      "version": np.asarray(MODEL_VERSION, np.int32),
      "template": np.asarray(TEMPLATE, np.float64),
      "identity": self.identity.astype(np.float64),
      "expression_points": np.asarray(EXPRESSION_POINTS, np.int32),
      "rigid_points": np.asarray(RIGID_POINTS, np.int32),
      "components": self.components.astype(np.float64),
      "std": self.std.astype(np.float64),
      "explained_variance_ratio": self.explained_variance_ratio.astype(np.float64),
      "extra_vertices": self.extra_vertices.astype(np.float64),
      "cheek_groups": np.asarray(CHEEK_GROUPS, np.int32),
      "triangles": np.asarray(TRIANGLES, np.int32),
      "mouth_triangles": np.asarray(MOUTH_TRIANGLES, np.int32),
      "focal_scale": np.asarray(self.focal_scale, np.float64),
      "num_frames": np.asarray(self.num_frames, np.int64),
    }

  @classmethod
  def from_arrays(cls, arrays) -> FaceModel:
    kind = str(arrays["kind"]) if "kind" in arrays else "?"
    if kind != KIND:
      raise JaxtalkError(f"face model is {kind!r}, not {KIND!r}")
    version = int(arrays["version"])
    if version != MODEL_VERSION:
      raise JaxtalkError(
        f"landmark3d face model version {version}; this jaxtalk reads {MODEL_VERSION}"
      )
    return cls(
      identity=np.asarray(arrays["identity"], np.float64),
      components=np.asarray(arrays["components"], np.float64),
      std=np.asarray(arrays["std"], np.float64),
      explained_variance_ratio=np.asarray(arrays["explained_variance_ratio"], np.float64),
      extra_vertices=np.asarray(arrays["extra_vertices"], np.float64),
      focal_scale=float(arrays["focal_scale"]),
      num_frames=int(arrays["num_frames"]),
    )


def _attach_extra_vertices(identity_n3: np.ndarray) -> np.ndarray:
  """EXTRA_VERTICES moved with the per-axis scale and shift that maps the template's upper face
  (brows, eyes, nose bridge, jaw at ear level) onto the identity's."""
  idx = [0, 16, *range(17, 28), 36, 39, 42, 45]
  out = np.array(EXTRA_VERTICES, np.float64)
  for axis in (0, 1):
    a = np.stack([TEMPLATE[idx, axis], np.ones(len(idx))], axis=1)
    scale, shift = np.linalg.lstsq(a, identity_n3[idx, axis], rcond=None)[0]
    out[:, axis] = out[:, axis] * scale + shift
  return out


def _pca(data_nd: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(components (D, dim), std (dim,), explained variance ratio (dim,)), zero-padded."""
  n, d = data_nd.shape
  cov = data_nd.T @ data_nd / max(n, 1)
  eigval, eigvec = np.linalg.eigh(cov)
  order = np.argsort(-eigval, kind="stable")
  eigval, eigvec = np.maximum(eigval[order], 0.0), eigvec[:, order]
  total = float(eigval.sum())
  # Directions with (numerically) no variance carry no expression: drop them, pad with zeros.
  rank = int(np.sum(eigval > 1e-9 * max(total, 1e-300))) if n > 1 else 0
  keep = min(dim, rank)
  components = np.zeros((d, dim))
  std = np.zeros(dim)
  ratio = np.zeros(dim)
  for j in range(keep):
    v = eigvec[:, j]
    # Deterministic sign: the largest-magnitude entry is positive.
    v = v if v[np.argmax(np.abs(v))] > 0 else -v
    components[:, j] = v
    std[j] = np.sqrt(eigval[j])
    ratio[j] = eigval[j] / total
  return components, std, ratio


def learn_face_model(
  landmarks: list[np.ndarray], size: int, expression_dim: int, rounds: int = 2
) -> FaceModel:
  """The person's model from the crop landmarks `(T_i, 68, 2)` of all their clips (valid
  frames only), in a `size` crop."""
  frames = np.concatenate([np.asarray(x, np.float64).reshape(-1, 68, 2) for x in landmarks])
  frames = frames[np.all(np.isfinite(frames), axis=(1, 2))]
  if len(frames) < 2:
    raise JaxtalkError(
      f"need at least 2 frames with a face to fit the face model, got {len(frames)}"
    )
  identity = np.array(TEMPLATE, np.float64)
  rigid = list(RIGID_POINTS)
  for _ in range(rounds):
    frontal = np.stack(
      [
        frontalise(lm, solve_pose(identity[rigid], lm[rigid], size), identity[:, 2], size)
        for lm in frames
      ]
    )
    identity[:, :2] = frontal[:, :, :2].mean(axis=0)
  idx = list(EXPRESSION_POINTS)
  offsets = (frontal[:, idx, :2] - identity[idx, :2]).reshape(len(frames), -1)
  components, std, ratio = _pca(offsets, expression_dim)
  return FaceModel(
    identity=identity,
    components=components,
    std=std,
    explained_variance_ratio=ratio,
    extra_vertices=_attach_extra_vertices(identity),
    num_frames=len(frames),
  )


@dataclasses.dataclass
class Fit:
  expression_te: np.ndarray  # (T, E) float32
  pose_t6: np.ndarray  # (T, 6) float32
  error_t: np.ndarray  # (T,) mean reprojection error of the 68 points, pixels
  max_error_t: np.ndarray  # (T,) largest point error, pixels


def fit_frames(model: FaceModel, landmarks_tn2: np.ndarray, size: int) -> Fit:
  """Pose and expression of every frame from its crop landmarks `(T, 68, 2)` (all finite)."""
  rigid = list(RIGID_POINTS)
  lms = np.asarray(landmarks_tn2, np.float64)
  expr, poses, err, err_max = [], [], [], []
  for lm in lms:
    pose = solve_pose(model.identity[rigid], lm[rigid], size, model.focal_scale)
    e = model.expression_of(frontalise(lm, pose, model.identity[:, 2], size, model.focal_scale))
    dist = np.linalg.norm(model.project(e, pose, size) - lm, axis=1)
    expr.append(e)
    poses.append(pose)
    err.append(dist.mean())
    err_max.append(dist.max())
  e_dim = model.expression_dim
  return Fit(
    expression_te=np.asarray(expr, np.float32).reshape(-1, e_dim),
    pose_t6=np.asarray(poses, np.float32).reshape(-1, 6),
    error_t=np.asarray(err, np.float64),
    max_error_t=np.asarray(err_max, np.float64),
  )


def render(
  model: FaceModel,
  expression_e: np.ndarray,
  pose_6: np.ndarray,
  size: int,
  out: np.ndarray | None = None,
) -> np.ndarray:
  """The shape render `(size, size, 3)` uint8 of the model's face for an expression and pose
  (written into `out` when given: a view, e.g. channels of a larger array).

  Parameters only: no landmarks or images, so inference can draw predicted expressions.
  """
  cam = to_camera(model.vertices(expression_e), pose_6)
  k = camera_matrix(size, model.focal_scale)
  points = cam[:, :2] / cam[:, 2:3] * k[0, 0] + k[:2, 2]
  shade = mesh_render.lambert(mesh_render.vertex_normals(cam, TRIANGLES))
  image = mesh_render.rasterize(points, cam[:, 2], TRIANGLES, shade, TRIANGLE_ALBEDO, size)
  return mesh_render.to_uint8(image, out)
