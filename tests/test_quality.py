"""Honest evaluation (issue 9 items 4-5, issue 13): face-crop image metrics, mouth sharpness,
articulation beside MSI, the crop-size rule, previews at >= 256 px, the time budget, and
`jaxtalk bench quality` end to end on a short real clip (held-out frames never trained on)."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxtalk.checkpoints import Checkpoints
from jaxtalk.commands.dataset import panel_scale, sample_row
from jaxtalk.config import load_config
from jaxtalk.errors import JaxtalkError
from jaxtalk.face.crop import CropBox, image_size_for
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import read_frames, write_video
from jaxtalk.metrics.evaluate import evaluate
from jaxtalk.metrics.sharpness import box_pixels, laplacian_variance, mouth_box, ratio
from jaxtalk.train.train import out_of_time

# ---- mouth box and Laplacian variance ----------------------------------------------------------


def test_mouth_box_on_hand_placed_landmarks():
  # Mouth points 48-67 on a circle of radius 20 around (100, 150), corners 48 and 54 at
  # x = 80 and x = 120: centre (100, 150), width 40 -> side 1.6 * 40 = 64.
  lm = np.full((3, 68, 2), 7.0)
  ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
  mouth = np.stack([100 + 20 * np.cos(ang + np.pi), 150 + 20 * np.sin(ang + np.pi)], -1)
  lm[:, 48:68] = mouth
  lm[:, 48] = (80.0, 150.0)
  lm[:, 54] = (120.0, 150.0)
  # the mean of the 20 points moves a little because 48 and 54 were overwritten
  cx, cy = lm[0, 48:68].mean(axis=0)
  box = mouth_box(lm)
  assert box.side == 64
  # the box's continuous centre x0 + side/2 - 0.5 (pixel centre at i) is the mouth centre
  assert abs(box.x0 + 32 - 0.5 - cx) <= 0.5 and abs(box.y0 + 32 - 0.5 - cy) <= 0.5
  # one frame without a face (NaN) changes nothing; the median ignores one wild frame
  lm2 = np.concatenate([lm, np.full((1, 68, 2), np.nan)])
  assert mouth_box(lm2) == box


def _numpy_laplacian_var(grey: np.ndarray) -> float:
  g = np.pad(grey.astype(np.float64), 1, mode="reflect")  # = cv2.BORDER_REFLECT_101
  lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
  return float(lap.var())


def test_laplacian_variance_matches_numpy_and_drops_with_blur():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
  grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
  assert laplacian_variance(img) == pytest.approx(_numpy_laplacian_var(grey), rel=1e-12)
  assert laplacian_variance(grey) == laplacian_variance(img)
  # a hand-worked case: one bright pixel of 10 in a 5x5 zero image (away from the border):
  # Laplacian -40 at it, +10 at its 4 neighbours, 0 elsewhere: mean 0, var (1600 + 400) / 25
  one = np.zeros((5, 5), np.uint8)
  one[2, 2] = 10
  assert laplacian_variance(one) == pytest.approx(2000 / 25)
  blurred = ndimage.gaussian_filter(grey.astype(float), 1.5).astype(np.uint8)
  assert laplacian_variance(blurred) < 0.2 * laplacian_variance(grey)
  assert ratio(2.0, 4.0) == 0.5 and ratio(1.0, 0.0) is None and ratio(None, 1.0) is None


def test_box_pixels_inside_and_at_the_edge():
  frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
  np.testing.assert_array_equal(box_pixels(frame, CropBox(5, 4, 8)), frame[4:12, 5:13])
  edge = box_pixels(frame, CropBox(-2, 15, 8))  # leaves the frame left and bottom
  assert edge.shape == (8, 8, 3)
  np.testing.assert_array_equal(edge[:5, 2:], frame[15:20, 0:6])
  np.testing.assert_array_equal(edge[:, 0], edge[:, 2])  # left columns repeat column 0
  np.testing.assert_array_equal(edge[7], edge[4])  # rows past the bottom repeat row 19


# ---- crop-size rule, preview, time budget -----------------------------------------------------


def test_image_size_rule():
  assert image_size_for(306, (128, 256)) == 256  # Ted Lieu: face ~170 px x crop_scale 1.8
  assert image_size_for(230, (128, 256)) == 224  # rounded down: never finer than the source
  assert image_size_for(90, (128, 256)) == 128  # never below lo
  assert image_size_for(306, (128, 128)) == 128  # configs/cpu.py's budget cap
  with pytest.raises(ValueError):
    image_size_for(100, (256, 128))
  assert tuple(load_config("cpu").data.image_size_range) == (128, 128)


def test_preview_row_shows_every_crop_pixel_at_least_256_wide():
  rng = np.random.default_rng(0)
  s = 64
  clip = {
    "frames": rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8),
    "shape": rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8),
    "mask": np.zeros((2, s, s), np.uint8),
    "landmarks": np.full((2, 68, 2), 10.5, np.float32),
  }
  k = panel_scale(s)
  assert k == 4 and panel_scale(128) == 2 and panel_scale(256) == 1 and panel_scale(300) == 1
  row = sample_row(clip, 1, k)
  assert row.shape == (s * k, 4 * s * k, 3)
  # each stored pixel becomes a k x k block: sampling the block corners gives the crop back
  np.testing.assert_array_equal(row[::k, : s * k : k], clip["frames"][1])
  np.testing.assert_array_equal(row[::k, s * k : 2 * s * k : k], clip["shape"][1])
  # the landmark (10.5, 10.5) -> pixel 10 of the crop -> drawn around pixel 42 of the panel
  marks = row[:, 3 * s * k :]
  assert np.array_equal(marks[42, 42], [0, 255, 0])


def test_out_of_time():
  now = time.perf_counter()
  assert not out_of_time(now, 0.0)  # 0: no budget
  assert not out_of_time(now, 60.0)
  assert out_of_time(now - 5.0, 1.0)


# ---- evaluate on real frames with known answers -------------------------------------------------


@pytest.fixture(scope="module")
def known(grid_clip, tmp_path_factory) -> dict:
  """Real GRID frames written losslessly (crf 0) as ref, and predictions whose differences from
  it are placed on purpose."""
  from jaxtalk.face.cache import video_track
  from jaxtalk.face.crop import stable_crop_box

  cfg = load_config(None, [])
  folder = tmp_path_factory.mktemp("known")
  frames = read_frames(grid_clip)[:40]
  audio = read_audio(grid_clip, 16000)[: 40 * 640]
  ref = folder / "ref.mp4"
  write_video(ref, frames, 25.0, audio, 16000, crf=0)
  track = video_track(ref, "dlib", cfg.track)
  box = stable_crop_box(track.boxes_t4, track.found_t, cfg.data.crop_scale)
  # background: outside the face box grown by 8 px (so no 2x2 chroma block straddles it),
  # pixels are inverted; the crop itself stays bit-identical
  h, w = frames.shape[1:3]
  outside = np.ones((h, w), bool)
  outside[
    max(0, box.y0 - 8) : box.y0 + box.side + 8, max(0, box.x0 - 8) : box.x0 + box.side + 8
  ] = 0
  bg = frames.copy()
  bg[:, outside] = 255 - bg[:, outside]
  write_video(folder / "bg.mp4", bg, 25.0, audio, 16000, crf=0)
  # a frozen mouth: the first frame repeated
  write_video(folder / "frozen.mp4", np.repeat(frames[:1], 40, 0), 25.0, audio, 16000, crf=0)
  return {"cfg": cfg, "folder": folder, "ref": ref, "box": box}


def test_crop_metrics_ignore_the_background(known):
  cfg, folder, box = known["cfg"], known["folder"], known["box"]
  rec = evaluate(folder / "bg.mp4", known["ref"], cfg)
  assert rec["face_crop_box"] == box.to_list()
  # the face crop is untouched: perfect crop scores; the whole frame is not
  assert rec["ssim"] == pytest.approx(1.0, abs=1e-9) and rec["psnr"] == 100.0
  assert rec["frame_ssim"] < 0.9 and rec["frame_psnr"] < 20
  # independent computation of the whole-frame numbers (scikit-image on the decoded frames)
  p, r = read_frames(folder / "bg.mp4"), read_frames(known["ref"])
  want_psnr = np.mean([peak_signal_noise_ratio(r[i], p[i], data_range=255) for i in range(len(p))])
  want_ssim = np.mean(
    [
      structural_similarity(
        r[i], p[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1,
      )
      for i in range(len(p))
    ]
  )  # fmt: skip
  assert rec["frame_psnr"] == pytest.approx(want_psnr, abs=1e-9)
  assert rec["frame_ssim"] == pytest.approx(want_ssim, abs=1e-9)
  # the mouth moved exactly as in the reference
  assert rec["aperture_ratio"] == pytest.approx(1.0, abs=1e-6)
  assert rec["aperture_corr"] == pytest.approx(1.0, abs=1e-6)
  assert rec["mouth_lapvar_ratio"] == pytest.approx(1.0, abs=1e-9)
  assert rec["msi_lip_ratio"] == pytest.approx(1.0, rel=1e-6)


def test_frozen_mouth_is_not_rewarded(known):
  cfg, folder = known["cfg"], known["folder"]
  rec = evaluate(folder / "frozen.mp4", known["ref"], cfg)
  # A frozen mouth has a "perfect" MSI, far above the real clip's ...
  assert rec["msi_lip_ratio"] > 2
  # ... and articulation beside it says the mouth does not move (what is left is the tracker's
  # landmark noise on identical frames, ~8 % of the real clip's aperture std).
  assert rec["aperture_ratio"] < 0.2
  assert abs(rec["aperture_corr"] or 0.0) < 0.2
  # The crop box is the reference's, so the frozen frame scores below 1 inside it.
  assert rec["ssim"] < 0.99


# ---- bench quality end to end -------------------------------------------------------------------


def test_bench_quality_end_to_end(grid_clip, tmp_path):
  from jaxtalk.bench.quality import run_quality, training_extent
  from jaxtalk.data.dataset import open_dataset

  cfg = load_config("tiny")
  out = tmp_path / "q"
  result = run_quality(grid_clip, out, cfg, holdout=0.2, minutes=0.2, progress=False,
                       say=lambda _: None)  # fmt: skip
  for name in ("generated.mp4", "real.mp4", "slice.png", "frames.png", "quality.json"):
    assert (out / name).is_file(), name
  q = json.loads((out / "quality.json").read_text())
  assert q == json.loads(json.dumps(result))
  for key in ("msi_lip_ratio", "msi_jaw_ratio", "aperture_ratio", "aperture_corr", "lip_lmd",
              "crop_ssim", "crop_psnr", "sync_offset_frames", "mouth_lapvar_ratio",
              "mouth_cpbd_ratio"):  # fmt: skip
    assert key in q, key
  assert 0 < q["crop_ssim"] < 1 and q["lip_lmd"] > 0
  # LPIPS on the face crop and the mouth box (issue 14): distances, the mouth's the larger (the
  # face crop outside the mouth is the real frame's, eroded and re-rendered)
  for net in ("vgg", "alex"):
    face, mouth = q[f"lpips_{net}_face"], q[f"lpips_{net}_mouth"]
    assert 0 < face < mouth < 1, (net, face, mouth)
  # The held-out split: the dataset records it, real.mp4 is exactly its frames, and no
  # training or validation window can reach it.
  ds = open_dataset(out / "dataset")
  src = read_frames(grid_clip, cfg.data.fps)
  n = len(src)
  cut = n - int(np.floor(0.2 * n + 0.5))
  assert ds.holdout == 0.2 and q["split"]["heldout_frames"] == [cut, n]
  assert sum(ds.train_frames(c) for c in ds.clip_names) <= cut
  assert training_extent(out / "dataset", cfg.train.seq_len, cfg.train.val_fraction) <= cut
  assert training_extent(out / "dataset", cfg.a2e_train.seq_len, cfg.train.val_fraction) <= cut
  real = read_frames(out / "real.mp4")
  assert len(real) >= n - cut - 1  # the audio may end a frame early
  assert np.abs(real[0].astype(int) - src[cut].astype(int)).mean() < 3  # the same frame
  assert len(read_frames(out / "generated.mp4")) == len(real)
  # The budget stopped training (a few steps at most in 12 s); resuming redoes nothing.
  state = json.loads((out / "quality_state.json").read_text())["done"]
  assert state["renderer2"]["steps"] >= state["renderer1"]["steps"] >= 1
  again = run_quality(grid_clip, out, cfg, holdout=0.2, minutes=0.2, progress=False,
                      say=lambda _: None)  # fmt: skip
  assert again["renderer_steps"] == result["renderer_steps"]
  # One Table V variant beside the finished full run: trained with its modules off at the same
  # budget, on the full run's a2e, scored the same way.
  with pytest.raises(JaxtalkError, match="unknown variant"):
    run_quality(grid_clip, out, cfg, minutes=0.2, variants="baseline,no_such", progress=False,
                say=lambda _: None)  # fmt: skip
  run_quality(grid_clip, out, cfg, holdout=0.2, minutes=0.2, variants="baseline", progress=False,
              say=lambda _: None)  # fmt: skip
  rows = json.loads((out / "variants.json").read_text())
  assert [r["variant"] for r in rows] == ["full", "baseline"]
  assert rows[1]["renderer_steps"] >= 1 and 0 < rows[1]["crop_ssim"] < 1
  saved = Checkpoints(out / "variants/baseline/renderer", 2, async_save=False).read_meta()["config"]
  assert saved["model"]["renderer"]["dependency"] is False
  assert saved["model"]["smoothing"]["kind"] == "none" and saved["train"]["erosion"] is False
  assert "| baseline |" in (out / "variants.md").read_text()
