"""Evaluation metrics (SSIM, PSNR, LMD/NLMD, CPBD) against references, and `jaxtalk eval` end to
end on real GRID clips. scikit-image is the reference for SSIM, PSNR and Canny (test-only)."""

from __future__ import annotations

import json
from math import atan2, pi

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import canny as sk_canny
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxtalk import cli
from jaxtalk.config import load_config
from jaxtalk.errors import JaxtalkError, NoFaceError, VideoReadError
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import read_frames, write_video
from jaxtalk.metrics import cpbd as C
from jaxtalk.metrics.evaluate import PSNR_CAP_DB, evaluate, to_markdown
from jaxtalk.metrics.image import psnr, ssim
from jaxtalk.metrics.landmark_distance import landmark_distance, mean_point_distance
from jaxtalk.metrics.video_msi import video_msi

# ---- SSIM / PSNR -------------------------------------------------------------------------------


def _sk_ssim(a, b, channel_axis=None):
  return structural_similarity(
    a,
    b,
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
    data_range=255,
    channel_axis=channel_axis,
  )


@pytest.mark.parametrize("shape", [(48, 64), (37, 53, 3)])
def test_ssim_and_psnr_match_scikit_image(shape):
  rng = np.random.default_rng(0)
  for _ in range(3):
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    # A correlated second image (blurred copy plus noise) gives SSIM well inside (0, 1).
    noisy = ndimage.gaussian_filter(a.astype(float), 1.0) + rng.normal(0, 12, shape)
    b = np.clip(noisy, 0, 255).astype(np.uint8)
    axis = -1 if len(shape) == 3 else None
    want = _sk_ssim(a, b, axis)
    assert 0.05 < want < 0.95
    assert ssim(a, b) == pytest.approx(want, abs=1e-12)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-10)
  # float inputs in 0..255 give the same numbers
  af, bf = a.astype(np.float64), b.astype(np.float64)
  assert ssim(af, bf) == pytest.approx(_sk_ssim(af, bf, axis), abs=1e-12)


def test_identical_images():
  a = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
  assert psnr(a, a) == float("inf")
  with pytest.raises(ValueError, match="same shape"):
    ssim(a, a[:-1])


# ---- LMD / NLMD --------------------------------------------------------------------------------


def _face_landmarks(mouth_width: float = 40.0) -> np.ndarray:
  """68 points with the mouth corners 48 and 54 `mouth_width` apart, centred at (100, 100)."""
  lm = np.zeros((68, 2))
  lm[:, 0] = 100 + np.linspace(-1, 1, 68)
  lm[:, 1] = 100
  lm[48] = [100 - mouth_width / 2, 100]
  lm[54] = [100 + mouth_width / 2, 100]
  lm[:, :] += -lm.mean(axis=0) + 100  # centre of all points at (100, 100)
  return lm


def test_lmd_on_hand_placed_landmarks():
  ref = np.tile(_face_landmarks(40.0), (6, 1, 1))
  pred = ref.copy()
  # Move all 20 mouth points by (3, 4) = 5 px in frames 0-2, nothing in frames 3-5; move a
  # non-mouth point a lot (must not count).
  pred[:3, 48:68] += [3.0, 4.0]
  pred[:, 30] += 50.0
  # Crop box: side = mouth width / 0.25 = 160 px; 256 / 160 = 1.6 crop pixels per image pixel.
  out = landmark_distance(pred, ref)
  assert out["crop_box"][2] == pytest.approx(160.0)
  assert out["lmd"] == pytest.approx(0.5 * 5.0 * 1.6)  # half the frames at 5 px * 1.6
  assert out["nlmd"] == pytest.approx(0.5 * 5.0 / 160.0)
  assert out["nlmd"] == pytest.approx(out["lmd"] / 256)
  # An explicit box, crop size 128: box side 100 -> 1.28 crop pixels per image pixel.
  out = landmark_distance(pred, ref, box=np.array([0.0, 0.0, 100.0]), crop_size=128)
  assert out["lmd"] == pytest.approx(2.5 * 1.28)
  assert out["nlmd"] == pytest.approx(2.5 / 100.0)
  # Half of the mouth points off by 2 px: mean over points is 1 px.
  pred2 = ref.copy()
  pred2[:, 48:58, 0] += 2.0
  assert mean_point_distance(pred2, ref) == pytest.approx(1.0)
  assert landmark_distance(ref, ref)["lmd"] == 0.0
  bad = ref.copy()
  bad[2, 50] = np.nan
  with pytest.raises(JaxtalkError, match="NaN"):
    mean_point_distance(bad, ref)


# ---- CPBD --------------------------------------------------------------------------------------


def reference_cpbd(image: np.ndarray) -> float:
  """python-cpbd's compute() (github.com/0x64746b/python-cpbd), as written there: loops."""
  image = image.astype(np.float64)
  edges = sk_canny(image)
  mag = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
  mag *= 255.0 / np.max(mag)
  mag[mag <= np.mean(mag)] = 0
  zc, zr = np.zeros((mag.shape[0], 1)), np.zeros((1, mag.shape[1]))
  sob = ((mag > np.c_[zc, mag[:, :-1]]) & (mag > np.c_[mag[:, 1:], zc])) | (
    (mag > np.r_[zr, mag[:-1, :]]) & (mag > np.r_[mag[1:, :], zr])
  )
  h, w = image.shape
  widths = np.zeros(image.shape)
  gy, gx = np.gradient(image)
  angles = np.zeros(image.shape)
  for r in range(h):
    for c in range(w):
      if gx[r, c] != 0:
        angles[r, c] = atan2(gy[r, c], gx[r, c]) * (180 / pi)
  q = 45 * np.round(angles / 45)
  for r in range(1, h - 1):
    for c in range(1, w - 1):
      if not sob[r, c] or q[r, c] not in (0, 180, -180):
        continue
      falling = q[r, c] != 0
      for m in range(101):
        o, i = c - 2 - m, c - 1 - m
        if o < 0 or (
          (image[r, o] - image[r, i]) <= 0 if falling else (image[r, o] - image[r, i]) >= 0
        ):
          break
      left = m + 1
      for m in range(101):
        o, i = c + 2 + m, c + 1 + m
        if o >= w or (
          (image[r, o] - image[r, i]) >= 0 if falling else (image[r, o] - image[r, i]) <= 0
        ):
          break
      widths[r, c] = left + m + 1
  hist, total = np.zeros(101), 0
  for bi in range(h // 64):
    for bj in range(w // 64):
      rows, cols = slice(64 * bi, 64 * bi + 64), slice(64 * bj, 64 * bj + 64)
      if np.count_nonzero(edges[rows, cols]) > 64 * 64 * 0.002:
        bw = widths[rows, cols]
        bw = bw[bw != 0]
        contrast = int(np.max(image[rows, cols]) - np.min(image[rows, cols]))
        jnb = 5 if contrast <= 50 else 3
        for p in 1 - np.exp(-(abs(bw / jnb) ** 3.6)):
          hist[int(round(p * 100))] += 1
          total += 1
  return float(np.sum(hist[:64] / total)) if total else 0.0


@pytest.fixture(scope="module")
def grid_frame(grid_clip) -> np.ndarray:
  return read_frames(grid_clip)[10]


def test_canny_matches_scikit_image(grid_frame):
  rng = np.random.default_rng(2)
  images = [C.grey_pil(grid_frame), rng.random((70, 90)) * 255]
  images.append(ndimage.gaussian_filter(images[1], 2.0))
  for image in images:
    np.testing.assert_array_equal(C.canny(image), sk_canny(image))


def test_cpbd_matches_the_reference_implementation(grid_frame):
  grey = C.grey_pil(grid_frame)
  crop = grey[60:252, 80:272]  # 3x3 blocks around the face keeps the loop reference quick
  blurred = np.round(ndimage.gaussian_filter(crop, 1.5))
  for image in (crop, blurred):
    assert C.cpbd(image) == pytest.approx(reference_cpbd(image), abs=1e-12)
  assert C.cpbd(np.full((128, 128), 90.0)) == 0.0


def test_cpbd_prefers_sharp_frames(grid_frame):
  scores = [C.cpbd(grid_frame)]
  for sigma in (1, 2, 3):
    scores.append(C.cpbd(cv2.GaussianBlur(grid_frame, (0, 0), sigma)))
  assert scores[0] > scores[1] > scores[2] > scores[3], scores
  assert 0.2 < scores[0] < 0.6  # GRID frames: ~0.35 (StableFace Table II)


# ---- evaluate / jaxtalk eval -------------------------------------------------------------------

CLIP_FRAMES = 20


@pytest.fixture(scope="module")
def clips(grid_clip, tmp_path_factory) -> dict[str, str]:
  """Short real clips (20 frames of a GRID video, with audio) and degraded variants."""
  root = tmp_path_factory.mktemp("eval")
  frames = read_frames(grid_clip)[:CLIP_FRAMES]
  audio = read_audio(grid_clip, 16000)[: CLIP_FRAMES * 640]
  paths = {k: str(root / f"{k}.mp4") for k in ("ref", "blur", "short", "small", "blank")}
  write_video(paths["ref"], frames, 25, audio, 16000)
  blurred = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames]
  write_video(paths["blur"], blurred, 25, audio, 16000)
  write_video(paths["short"], frames[:15], 25)
  write_video(
    paths["small"], [cv2.resize(f, (270, 216), interpolation=cv2.INTER_AREA) for f in frames], 25
  )
  write_video(paths["blank"], np.full((8, 64, 64, 3), 128, np.uint8), 25)
  paths["corrupt"] = str(root / "corrupt.mp4")
  with open(paths["corrupt"], "wb") as f:
    f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  return paths


@pytest.fixture(scope="module")
def config():
  return load_config(None, [])


def _eval_cli(capsys, *argv) -> tuple[int, str, str]:
  code = cli.main(["eval", *argv])
  out = capsys.readouterr()
  return code, out.out, out.err


def test_cli_video_against_itself(clips, config, tmp_path, capsys):
  js, md = tmp_path / "out.json", tmp_path / "out.md"
  code, out, _ = _eval_cli(
    capsys, "--pred", clips["ref"], "--ref", clips["ref"], "--json", str(js), "--markdown", str(md)
  )
  assert code == 0
  rec = json.loads(js.read_text())["videos"][0]
  assert rec["frames"] == rec["paired_frames"] == CLIP_FRAMES
  assert rec["ssim"] == pytest.approx(1.0, abs=1e-12)
  assert rec["psnr"] == PSNR_CAP_DB
  assert rec["lmd"] == 0.0 and rec["nlmd"] == 0.0
  assert 0.2 < rec["cpbd"] < 0.6
  assert rec["sync_c"] is None and rec["sync_status"].startswith("unavailable")
  assert "| ref.mp4 | 1.0000 | 100.00 | 0.000 | 0.0000 |" in out
  assert md.read_text().strip() == out.strip()
  # MSI is video_msi's.
  msi = video_msi(clips["ref"], config)
  assert (rec["msi_lip"], rec["msi_jaw"], rec["msi_all"]) == (
    msi["msi_lip"],
    msi["msi_jaw"],
    msi["msi_all"],
  )


def test_cli_degraded_copy_equals_library_call(clips, config, tmp_path, capsys):
  js = tmp_path / "out.json"
  code, _, _ = _eval_cli(capsys, "--pred", clips["blur"], "--ref", clips["ref"], "--json", str(js))
  assert code == 0
  rec = json.loads(js.read_text())["videos"][0]
  for key in ("ssim", "psnr", "lmd", "nlmd", "cpbd", "msi_lip", "msi_jaw", "sync_c", "sync_d"):
    assert key in rec
  assert 0.5 < rec["ssim"] < 0.99
  assert 20 < rec["psnr"] < 45
  assert rec["lmd"] > 0 and rec["nlmd"] == pytest.approx(rec["lmd"] / 256)
  assert rec["nlmd"] < 0.05  # blur moves the detected landmarks only a little
  same = evaluate(clips["ref"], clips["ref"], config)
  assert rec["cpbd"] < same["cpbd"]
  lib = evaluate(clips["blur"], clips["ref"], config)
  assert json.loads(json.dumps(lib)) == rec


def test_cli_reference_free(clips, tmp_path, capsys):
  js = tmp_path / "out.json"
  code, out, _ = _eval_cli(capsys, "--pred", clips["ref"], clips["blur"], "--json", str(js))
  assert code == 0
  recs = json.loads(js.read_text())["videos"]
  assert [r["pred"] for r in recs] == [clips["ref"], clips["blur"]]
  for r in recs:
    assert r["ref"] is None and r["ssim"] is None and r["psnr"] is None and r["lmd"] is None
    assert r["cpbd"] > 0 and r["msi_lip"] > 0 and r["msi_jaw"] > 0
  assert recs[0]["cpbd"] > recs[1]["cpbd"]
  rows = [line for line in out.splitlines() if line.startswith(("| ref.mp4 ", "| blur.mp4 "))]
  assert len(rows) == 2
  for line in rows:  # SSIM, PSNR, LMD, NLMD and the articulation against a reference: not measured
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:5] == ["–"] * 4 and cells[8:10] == ["–"] * 2
  assert "Sync unavailable: no SyncNet weights given" in out


def test_resolution_mismatch_resizes_pred(clips, config):
  rec = evaluate(clips["small"], clips["ref"], config)
  assert rec["size_hw"] == [216, 270] and rec["ref_size_hw"] == [288, 360]
  assert rec["ssim"] > 0.8
  assert rec["nlmd"] < 0.02


def test_frame_count_mismatch(clips, config, capsys):
  code, _, err = _eval_cli(capsys, "--pred", clips["short"], "--ref", clips["ref"])
  assert code == 2
  assert "15 frames" in err and f"has {CLIP_FRAMES}" in err and "--align trim" in err
  assert "Traceback" not in err
  rec = evaluate(clips["short"], clips["ref"], config, align="trim")
  assert rec["paired_frames"] == 15 and rec["trimmed_from"] == {"pred": 15, "ref": CLIP_FRAMES}
  assert rec["ssim"] > 0.95  # the same frames, encoded separately
  assert "trimmed to 15 frames" in to_markdown([rec])


def test_bad_inputs(clips, config, tmp_path, capsys):
  code, _, err = _eval_cli(capsys, "--pred", str(tmp_path / "missing.mp4"))
  assert code == 2 and "no such file" in err
  code, _, err = _eval_cli(capsys, "--pred", clips["corrupt"], "--ref", clips["ref"])
  assert code == 2 and "corrupt.mp4" in err and "Traceback" not in err
  with pytest.raises(VideoReadError):
    evaluate(clips["ref"], clips["corrupt"], config)
  with pytest.raises(NoFaceError, match="blank.mp4"):
    evaluate(clips["blank"], None, config)
  code, _, err = _eval_cli(capsys, "--pred", clips["ref"], "--syncnet", str(tmp_path / "w.npz"))
  assert code == 2 and "SyncNet weights not found" in err and "w.npz" in err
  # Several predictions: the failing row records its error, the others are measured.
  js = tmp_path / "rows.json"
  code, out, _ = _eval_cli(capsys, "--pred", clips["blank"], clips["ref"], "--json", str(js))
  assert code == 1
  recs = json.loads(js.read_text())["videos"]
  assert "no face" in recs[0]["error"] and recs[1]["cpbd"] > 0
  assert "blank.mp4: error:" in out


def test_cli_sync_with_created_weights(clips, tmp_path, capsys):
  from test_syncnet import make_state_dict  # tests/ is on sys.path (pytest rootdir-less)

  weights = tmp_path / "syncnet.npz"
  np.savez(weights, **make_state_dict())
  js = tmp_path / "out.json"
  code, out, _ = _eval_cli(
    capsys, "--pred", clips["ref"], "--syncnet", str(weights), "--vshift", "3", "--json", str(js)
  )
  assert code == 0
  rec = json.loads(js.read_text())["videos"][0]
  assert rec["sync_status"] == "ok"
  assert rec["sync_windows"] == CLIP_FRAMES - 5
  assert np.isfinite(rec["sync_d"]) and rec["sync_c"] >= 0
  assert -3 <= rec["sync_offset"] <= 3
  assert "AV offset" in out


def test_cli_seam_jumps_find_the_window_seams(clips, tmp_path, capsys):
  # 20 frames inferred in windows of 8 overlapping by 4 switch windows at frames 6, 10 and 14
  # (tests/test_seams.py works them out by hand). A copy of the real clip that brightens by 24
  # grey levels from each seam on must show jumps of ~24 there and the real clip's elsewhere.
  frames = read_frames(clips["ref"])
  offset = np.zeros(len(frames))
  for seam in (6, 10, 14):
    offset[seam:] += 24.0
  seamed = [
    np.clip(f.astype(np.float64) + o, 0, 255).astype(np.uint8) for f, o in zip(frames, offset)
  ]
  pred = tmp_path / "seamed.mp4"
  write_video(pred, seamed, 25, read_audio(clips["ref"], 16000), 16000)
  js = tmp_path / "seams.json"
  code, _, _ = _eval_cli(capsys, "--pred", str(pred), "--ref", clips["ref"], "--seams", "8,4",
                         "--json", str(js))  # fmt: skip
  assert code == 0
  r = json.loads(js.read_text())["videos"][0]
  assert r["seam_frames"] == [6, 10, 14]
  assert r["mouth_seam_jump_mean"] > r["ref_mouth_seam_jump_mean"] + 15
  assert abs(r["mouth_other_jump_mean"] - r["ref_mouth_other_jump_mean"]) < 2.0
  # the lips do not move because of a brightness step (landmarks found either way)
  assert r["lip_seam_jump_max"] < 2.0 + 2 * r["ref_lip_seam_jump_max"]
  code, _, err = _eval_cli(capsys, "--pred", clips["ref"], "--seams", "8")
  assert code == 2 and "--seams takes W,O" in err
