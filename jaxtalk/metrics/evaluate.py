"""Evaluation of generated talking-face videos (StableFace Sec. IV, Tables II, III, V).

`evaluate(pred, ref, config)` gives one record per predicted video:
  with a reference (ground-truth) video: SSIM, PSNR, LMD and NLMD on the mouth;
  always (reference-free): CPBD, MSI lip / jaw / all, and Sync-C / Sync-D when SyncNet weights
  are given (reported as unavailable, with the reason, otherwise).

Pairing rules. Frame i of the prediction is compared with frame i of the reference, frames as
stored (no resampling). Different frame counts are an error unless `align="trim"`, which
compares the first min(n_pred, n_ref) frames and records both counts in `trimmed_from`; the
reference-free metrics always use the whole prediction. A prediction of another resolution is
resized to the reference's (cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging) for
SSIM and PSNR, and its landmarks are scaled by the same factors for LMD; CPBD is measured on the
prediction as stored.

Per-video aggregation: SSIM, PSNR and CPBD are means over frames. PSNR of identical frames is
infinite; each frame's PSNR is capped at PSNR_CAP_DB (100 dB, far above any lossy result) so a
video's mean stays finite and the JSON valid: a video compared with itself scores 100.
See docs/evaluation.md for every metric's definition.
"""

from __future__ import annotations

import itertools
import math
import os

import cv2
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxtalk.errors import AudioReadError, JaxtalkError
from jaxtalk.face.cache import require_all_frames, video_track
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import iter_frames, probe_video
from jaxtalk.metrics.cpbd import cpbd
from jaxtalk.metrics.image import psnr, ssim
from jaxtalk.metrics.landmark_distance import landmark_distance
from jaxtalk.metrics.lpips import FaceMouthLpips
from jaxtalk.metrics.msi import msi_from_config
from jaxtalk.metrics.sync import SYNC_FPS, SYNC_SAMPLE_RATE, VSHIFT, SyncNetScorer, sync_metrics

PSNR_CAP_DB = 100.0
ALIGN_MODES = ("strict", "trim")
NO_WEIGHTS = "unavailable: no SyncNet weights given (--syncnet)"

# (record key, column title, format) of the table, in the paper's order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
  ("ssim", "SSIM ↑", "{:.4f}"),
  ("psnr", "PSNR ↑", "{:.2f}"),
  ("lmd", "LMD ↓", "{:.3f}"),
  ("nlmd", "NLMD ↓", "{:.4f}"),
  ("cpbd", "CPBD ↑", "{:.3f}"),
  ("msi_lip", "MSI-Lip ↑", "{:.3f}"),
  ("msi_jaw", "MSI-Jaw ↑", "{:.3f}"),
  ("sync_c", "Sync-C ↑", "{:.2f}"),
  ("sync_d", "Sync-D ↓", "{:.2f}"),
)


def _resize(frame_hwc: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  if frame_hwc.shape[:2] == tuple(hw):
    return frame_hwc
  shrink = hw[0] * hw[1] < frame_hwc.shape[0] * frame_hwc.shape[1]
  interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
  return cv2.resize(frame_hwc, (hw[1], hw[0]), interpolation=interp)


def _scorer(syncnet_weights) -> SyncNetScorer | None:
  if syncnet_weights is None or isinstance(syncnet_weights, SyncNetScorer):
    return syncnet_weights
  return SyncNetScorer.from_file(syncnet_weights)


def _sync(
  path: str,
  info,
  track,
  config: ml_collections.ConfigDict,
  backend: str,
  scorer: SyncNetScorer | None,
  vshift: int,
  cache_dir,
  use_cache: bool,
) -> dict:
  empty = {"sync_c": None, "sync_d": None, "sync_offset": None}
  if scorer is None:
    return {**empty, "sync_status": NO_WEIGHTS}
  try:
    audio = read_audio(path, SYNC_SAMPLE_RATE)
  except AudioReadError as e:
    return {**empty, "sync_status": f"unavailable: {e}"}
  # SyncNet is trained on 25 fps video; other rates are resampled (and tracked again).
  fps = None
  if abs(info.fps - SYNC_FPS) > 1e-3 or info.variable_frame_rate:
    fps = SYNC_FPS
    track = video_track(path, backend, config.track, fps, cache_dir=cache_dir, use_cache=use_cache)
    require_all_frames(track, path)
  scores = sync_metrics(iter_frames(path, fps), track.boxes_t4, audio, scorer, vshift)
  return {**scores, "sync_status": "ok"}


def evaluate(
  pred_path: str | os.PathLike,
  ref_path: str | os.PathLike | None,
  config: ml_collections.ConfigDict,
  *,
  syncnet_weights: str | os.PathLike | SyncNetScorer | None = None,
  backend: str | None = None,
  align: str = "strict",
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
  vshift: int = VSHIFT,
  progress: bool = False,
) -> dict:
  """The metrics record of one predicted video (against `ref_path` when given).

  `syncnet_weights`: a weights file (loaded here; missing or wrong -> WeightsError) or a loaded
  SyncNetScorer (to share one across videos); None reports Sync as unavailable. Raises
  JaxtalkError subclasses for unreadable videos, missing faces and mismatched frame counts.
  """
  if align not in ALIGN_MODES:
    raise JaxtalkError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
  backend = backend or config.data.landmark_backend
  scorer = _scorer(syncnet_weights)
  pred, ref = str(pred_path), None if ref_path is None else str(ref_path)
  pred_info = probe_video(pred)
  if ref is not None:
    probe_video(ref)  # fail fast on a missing or corrupt reference, before any tracking

  def track_of(path: str):
    track = video_track(
      path, backend, config.track, cache_dir=cache_dir, use_cache=use_cache, progress=progress
    )
    require_all_frames(track, path)
    return track

  pred_track = track_of(pred)
  ref_track = track_of(ref) if ref is not None else None
  n_pred = pred_track.num_frames
  n_paired, trimmed = 0, None
  if ref_track is not None:
    n_ref = ref_track.num_frames
    n_paired = min(n_pred, n_ref)
    if n_pred != n_ref:
      if align == "strict":
        raise JaxtalkError(
          f"frame counts differ: {pred} has {n_pred} frames, {ref} has {n_ref}; "
          "frames must correspond one to one (use --align trim to compare the first "
          f"{n_paired})"
        )
      trimmed = {"pred": n_pred, "ref": n_ref}

  record: dict = {
    "pred": pred,
    "ref": ref,
    "backend": backend,
    "frames": n_pred,
    "paired_frames": n_paired if ref is not None else None,
    "trimmed_from": trimmed,
    "fps": pred_info.fps,
    "size_hw": list(pred_track.image_hw),
    "ref_size_hw": list(ref_track.image_hw) if ref_track is not None else None,
  }

  # One decoding pass over both videos: paired metrics on the first n_paired frames, CPBD on
  # every predicted frame.
  ssims, psnrs, sharpness = [], [], []
  lp = FaceMouthLpips(n_paired if ref_track is not None else 0)  # LPIPS, face crop + mouth box
  ref_frames = iter_frames(ref) if ref is not None else iter(())
  pairs = itertools.zip_longest(iter_frames(pred), itertools.islice(ref_frames, n_paired))
  for p, r in tqdm(pairs, total=n_pred, disable=not progress, desc="metrics"):
    if p is None:
      break
    sharpness.append(cpbd(p))
    if r is not None:
      p_r = _resize(p, r.shape[:2])
      ssims.append(ssim(p_r, r))
      psnrs.append(min(psnr(p_r, r), PSNR_CAP_DB))
      lp.add(p_r, r, ref_track.landmarks_tn2[lp.index])
  record["ssim"] = float(np.mean(ssims)) if ssims else None
  record["psnr"] = float(np.mean(psnrs)) if psnrs else None
  record.update(lp.result())

  if ref_track is not None:
    (ph, pw), (rh, rw) = pred_track.image_hw, ref_track.image_hw
    pred_lm = pred_track.landmarks_tn2[:n_paired].astype(np.float64) * np.array([rw / pw, rh / ph])
    dist = landmark_distance(
      pred_lm,
      ref_track.landmarks_tn2[:n_paired],
      crop_size=int(config.msi.crop_size),
      crop_frames=int(config.msi.crop_frames),
      mouth_ratio=float(config.msi.mouth_ratio),
    )
    record.update(lmd=dist["lmd"], nlmd=dist["nlmd"], lmd_crop_box=dist["crop_box"])
  else:
    record.update(lmd=None, nlmd=None, lmd_crop_box=None)

  record["cpbd"] = float(np.mean(sharpness))
  msi = msi_from_config(pred_track.landmarks_tn2, config.msi)
  record.update(msi_lip=msi["lip"], msi_jaw=msi["jaw"], msi_all=msi["all"])
  record.update(
    _sync(pred, pred_info, pred_track, config, backend, scorer, vshift, cache_dir, use_cache)
  )
  return record


def _cell(value, fmt: str) -> str:
  if value is None:
    return "–"
  if isinstance(value, float) and math.isinf(value):
    return "inf"
  return fmt.format(value)


def to_markdown(records: list[dict]) -> str:
  """A markdown table, one row per record (`–`: not measured), with notes under it."""
  head = ["video", *(title for _, title, _ in COLUMNS)]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
  notes = []
  for r in records:
    name = os.path.basename(r.get("pred", "?"))
    if "error" in r:
      lines.append(f"| {name} | " + " | ".join(["error"] + [""] * (len(COLUMNS) - 1)) + " |")
      notes.append(f"{name}: error: {r['error']}")
      continue
    lines.append(f"| {name} | " + " | ".join(_cell(r.get(k), f) for k, _, f in COLUMNS) + " |")
    if r.get("ref"):
      notes.append(f"{name}: reference {os.path.basename(r['ref'])}")
    if r.get("trimmed_from"):
      t = r["trimmed_from"]
      notes.append(
        f"{name}: trimmed to {r['paired_frames']} frames (pred {t['pred']}, ref {t['ref']})"
      )
    if r.get("lpips_vgg_face") is not None:
      notes.append(
        f"{name}: LPIPS VGG/Alex face {r['lpips_vgg_face']:.3f}/{r['lpips_alex_face']:.3f}, "
        f"mouth {r['lpips_vgg_mouth']:.3f}/{r['lpips_alex_mouth']:.3f} ({r['lpips_frames']} frames)"
      )
    status = r.get("sync_status")
    if status and status != "ok":
      notes.append(f"{name}: Sync {status}")
    elif status == "ok":
      notes.append(f"{name}: AV offset {r['sync_offset']} frames")
  if notes:
    lines.append("")
    lines.extend(f"- {n}" for n in notes)
  return "\n".join(lines)
