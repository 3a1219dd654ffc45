"""Landmarks, MSI and slices on the real GRID clips (skipped without ../shared)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.face.landmarks import DlibBackend
from jaxtalk.face.track import track_faces
from jaxtalk.io.video import read_frames, write_video
from jaxtalk.metrics import msi as M
from jaxtalk.metrics.slice import slice_image


@pytest.fixture(scope="module")
def backend():
  return DlibBackend()


@pytest.fixture(scope="module")
def clip(grid_clip):
  return read_frames(grid_clip)


@pytest.fixture(scope="module")
def track(clip, backend):
  return track_faces(clip, backend)


def test_landmarks_plausible_on_every_frame(grid_clips, backend):
  for path in grid_clips[:4]:
    tr = track_faces(read_frames(path), backend)
    assert tr.found_t.all(), f"{path.name}: face lost"
    z, boxes = tr.landmarks_tn2, tr.boxes_t4
    # Inside the detector box (grown by 15%: the chin may sit just under a HOG box).
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    assert (z[..., 0] >= boxes[:, :1] - 0.15 * w).all() and (
      z[..., 0] <= boxes[:, 2:3] + 0.15 * w
    ).all()
    assert (z[..., 1] >= boxes[:, 1:2] - 0.15 * h).all() and (
      z[..., 1] <= boxes[:, 3:4] + 0.25 * h
    ).all()
    mouth_y = z[:, 48:68, 1].mean(1)
    nose_y = z[:, 27:36, 1].mean(1)
    eyes_y = z[:, 36:48, 1].mean(1)
    chin_y = z[:, 8, 1]
    assert (mouth_y > nose_y).all() and (nose_y > eyes_y).all()
    assert (z[:, 0:17, 1].max(1) > eyes_y).all() and (chin_y > mouth_y).all()
    # Left eye (36-41) is left of the right eye (42-47) in the image; mouth corners likewise.
    assert (z[:, 36:42, 0].mean(1) < z[:, 42:48, 0].mean(1)).all()
    assert (z[:, 48, 0] < z[:, 54, 0]).all()


def test_landmark_jitter_lowers_msi(track):
  base = M.msi(track.landmarks_tn2)
  rng = np.random.default_rng(0)
  noisy = M.msi(track.landmarks_tn2 + rng.normal(scale=0.5, size=track.landmarks_tn2.shape))
  for k in base:
    assert noisy[k] < base[k]


def test_subpixel_shake_of_the_video_lowers_msi(clip, track, backend):
  rng = np.random.default_rng(1)
  shifts = rng.uniform(-0.7, 0.7, size=(len(clip), 2))
  h, w = clip.shape[1:3]
  shaken = np.stack(
    [
      cv2.warpAffine(
        f,
        np.float32([[1, 0, dx], [0, 1, dy]]),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
      )
      for f, (dx, dy) in zip(clip, shifts)
    ]
  )
  base, shaken_msi = M.msi(track.landmarks_tn2), M.msi(track_faces(shaken, backend).landmarks_tn2)
  for k in base:
    assert shaken_msi[k] < base[k]


def test_scaling_the_video_2x_keeps_msi(clip, track, backend):
  big = np.stack([cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) for f in clip])
  tr2 = track_faces(big, backend)
  # Same points at twice the size, to within detector noise (sub-pixel prediction).
  assert np.abs(tr2.landmarks_tn2 / 2 - track.landmarks_tn2).mean() < 1.0
  base, scaled = M.msi(track.landmarks_tn2), M.msi(tr2.landmarks_tn2)
  raw, raw2 = M.msi(track.landmarks_tn2, normalise=False), M.msi(tr2.landmarks_tn2, normalise=False)
  for k in base:
    ratio = scaled[k] / base[k]
    # Measured on GRID: 0.72-1.1 with normalisation; 2x without (accelerations double).
    assert 0.6 < ratio < 1.6, (k, ratio)
    assert abs(np.log(ratio)) < abs(np.log(raw2[k] / raw[k]))


def test_slice_image_shape_and_content(clip, track):
  box = M.msi_crop_box(track.landmarks_tn2)
  picture = slice_image(clip, box, size=256, x=128)
  assert picture.shape == (256, len(clip), 3)
  # Column t is column 128 of frame t's crop: check one frame against a direct crop.
  x0, y0, side = box
  m = np.array([[256 / side, 0, -x0 * 256 / side], [0, 256 / side, -y0 * 256 / side]])
  crop = cv2.warpAffine(
    clip[10], m, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
  )
  np.testing.assert_array_equal(picture[:, 10], crop[:, 128])
  rows = slice_image(clip, box, size=256, y=200)
  assert rows.shape == (256, len(clip), 3)


def run_cli(*args, cwd=None):
  return subprocess.run(
    [sys.executable, "-m", "jaxtalk.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
  )


def test_msi_cli_json_equals_library(grid_clips, tmp_path):
  paths = grid_clips[:2]
  out = tmp_path / "msi.json"
  r = run_cli("msi", *paths, "--json", out)
  assert r.returncode == 0, r.stderr
  payload = json.loads(out.read_text())
  assert payload["backend"] == "dlib" and payload["eps"] == 1e-5
  backend = DlibBackend()
  for path, rec in zip(paths, payload["videos"]):
    assert set(rec) >= {"video", "frames", "backend", "msi_lip", "msi_jaw", "msi_all", "crop_box"}
    # Independent reference: the tracked landmarks through Eq. 2-4 written as loops, with the
    # crop normalisation worked out here (side = mean mouth width / 0.25 over 5 frames, 256 px)
    z = track_faces(read_frames(path), backend).landmarks_tn2.astype(np.float64)
    width = np.mean([np.hypot(*(z[t, 54] - z[t, 48])) for t in range(5)])
    z = (z - z[:5].reshape(-1, 2).mean(0)) * (256 / (width / 0.25))
    assert rec["frames"] == len(z)
    for key, points in (("msi_lip", range(48, 68)), ("msi_jaw", range(17)), ("msi_all", range(68))):
      assert rec[key] == pytest.approx(naive_msi(z, points), rel=1e-9), key
    assert f"{rec['msi_lip']:.4f}" in r.stdout


def naive_msi(z_tn2: np.ndarray, points, eps: float = 1e-5) -> float:
  """Eq. 2-4 as loops over points and interior frames (the paper's symbols)."""
  total = 0.0
  for i in points:
    acc = np.array([(z_tn2[t + 1, i] - z_tn2[t, i]) - (z_tn2[t, i] - z_tn2[t - 1, i])
                    for t in range(1, len(z_tn2) - 1)])  # fmt: skip
    sigma = np.sum((acc - acc.mean(0)) ** 2) / (len(acc) - 1)
    total += 1.0 / (sigma + eps)
  return total / len(points)


def test_landmarks_agree_with_plain_dlib(clip, track):
  """The backend predicts on a resampled face crop (sub-pixel rounding); dlib's detector and
  predictor run straight on the frame must give the same points to within dlib's 1 px rounding
  plus predictor noise."""
  import dlib
  import face_recognition_models

  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
  diffs = []
  for t in range(0, len(clip), 15):
    rects = detector(np.ascontiguousarray(clip[t]), 0)
    assert len(rects) >= 1
    rect = max(rects, key=lambda r: r.width() * r.height())
    plain = np.array([[p.x, p.y] for p in predictor(clip[t], rect).parts()], np.float64)
    diffs.append(np.abs(plain - track.landmarks_tn2[t]).mean())
  # the face box is ~ 60 px wide in GRID (360x288): 1.5 px is ~2.5 % of the face
  assert np.mean(diffs) < 1.5, diffs


def test_msi_cache_hit_skips_detection(grid_clip, tmp_path, monkeypatch):
  from jaxtalk.face import cache

  config = load_config("grid")
  first = cache.video_track(grid_clip, "dlib", config.track, cache_dir=tmp_path)
  assert len(list(tmp_path.glob("*.npz"))) == 1

  def fail(*a, **k):
    raise AssertionError("re-detected despite a cached track")

  monkeypatch.setattr(cache, "track_faces", fail)
  second = cache.video_track(grid_clip, "dlib", config.track, cache_dir=tmp_path)
  np.testing.assert_array_equal(first.landmarks_tn2, second.landmarks_tn2)


def test_slice_and_landmarks_cli(grid_clips, tmp_path):
  out = tmp_path / "slice.png"
  r = run_cli("slice", grid_clips[0], grid_clips[1], "-o", out)
  assert r.returncode == 0, r.stderr
  picture = cv2.imread(str(out))
  assert picture.shape[0] >= 256 and picture.shape[1] >= 2 * 75
  npz, overlay = tmp_path / "lm.npz", tmp_path / "overlay.mp4"
  r = run_cli("landmarks", grid_clips[0], "-o", npz, "--overlay", overlay)
  assert r.returncode == 0, r.stderr
  data = np.load(npz)
  assert data["landmarks"].shape == (75, 68, 2) and data["found"].all()
  assert read_frames(overlay).shape[0] == 75


def test_cli_user_errors(grid_clip, tmp_path):
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
  blank = tmp_path / "blank.mp4"
  write_video(blank, np.full((12, 96, 128, 3), 90, np.uint8), 25)
  short = tmp_path / "short.mp4"
  write_video(short, read_frames(grid_clip)[:3], 25)
  audio_only = tmp_path / "audio.m4a"
  import av

  with av.open(str(audio_only), "w") as c:
    s = c.add_stream("aac", rate=16000)
    frame = av.AudioFrame.from_ndarray(
      np.zeros((1, 16000), np.float32), format="flt", layout="mono"
    )
    frame.sample_rate = 16000
    for p in [*s.encode(frame), *s.encode()]:
      c.mux(p)
  cases = {
    corrupt: "cannot be read",
    blank: "no face found in the first 5 frames (frames 0-4)",
    short: "at least 4 frames",
    audio_only: "no video stream",
    tmp_path / "missing.mp4": "no such file",
  }
  for path, message in cases.items():
    r = run_cli("msi", path)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr, (path, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
  r = run_cli("msi", grid_clip, "--backend", "nope")
  assert r.returncode == 2 and "unknown landmark backend 'nope'" in r.stderr
  r = run_cli("slice", grid_clip, "-o", tmp_path / "s.png", "--x", "400")
  assert r.returncode == 2 and "outside" in r.stderr and "Traceback" not in r.stderr
