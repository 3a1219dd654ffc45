"""Evaluation of generated talking-face videos (StableFace Sec. IV, Tables II, III, V).

`evaluate(pred, ref, config)` gives one record per predicted video:
  with a reference (ground-truth) video: SSIM, PSNR on the FACE CROP (`ssim`, `psnr`; the
  whole-frame values, background included, only as `frame_ssim`, `frame_psnr`), LMD and NLMD on
  the mouth, mouth articulation against the reference (`aperture_ratio`, `aperture_corr`), MSI
  generated / real (`msi_lip_ratio`, `msi_jaw_ratio`) and mouth sharpness generated / real
  (`mouth_lapvar_ratio`, `mouth_cpbd_ratio`);
  always (reference-free): CPBD on the face crop (`frame_cpbd`: whole frame), MSI lip / jaw /
  all, the weight-free lip-sync offset (`sync_offset_frames`, `sync_confidence`: mouth aperture
  against the audio envelope), and Sync-C / Sync-D when SyncNet weights are given (reported as
  unavailable, with the reason, otherwise).

Boxes. One stable face-crop box per video (jaxtalk.face.crop.config_crop_box on the reference's
track, `data.crop_scale` x the median face box, moved down by `data.crop_shift`) and one mouth
box (jaxtalk.metrics.sharpness) from the reference's landmarks; the prediction is scored inside
the very same boxes, at the reference's resolution and without resampling the crop. Without a
reference, the prediction's own track places them.

Pairing rules. Frame i of the prediction is compared with frame i of the reference, frames as
stored (no resampling). Different frame counts are an error unless `align="trim"`, which
compares the first min(n_pred, n_ref) frames and records both counts in `trimmed_from`; the
reference-free metrics always use the whole prediction. A prediction of another resolution is
resized to the reference's (cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging) for
every image metric, and its landmarks are scaled by the same factors for LMD; `frame_cpbd` is
measured on the prediction as stored.

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
from jaxtalk.face.crop import config_crop_box
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import iter_frames, probe_video
from jaxtalk.metrics.articulation import articulation, audio_envelope, mouth_aperture, sync_offset
from jaxtalk.metrics.cpbd import cpbd
from jaxtalk.metrics.image import psnr, ssim
from jaxtalk.metrics.landmark_distance import landmark_distance
from jaxtalk.metrics.lpips import FaceMouthLpips
from jaxtalk.metrics.msi import msi_from_config
from jaxtalk.metrics.seams import (
  LIP_POINTS,
  frame_jumps,
  jump_summary,
  landmark_jumps,
  seam_frames,
)
from jaxtalk.metrics.sharpness import box_pixels, laplacian_variance, mouth_box, ratio
from jaxtalk.metrics.sync import SYNC_FPS, SYNC_SAMPLE_RATE, VSHIFT, SyncNetScorer, sync_metrics

PSNR_CAP_DB = 100.0
SYNC_MAX_SHIFT = 10  # frames searched either way by the weight-free lip-sync offset
# Per-frame values averaged into the record (ssim/psnr/cpbd: face crop; frame_*: whole frame).
METRIC_LISTS = (
  "ssim", "psnr", "cpbd", "frame_ssim", "frame_psnr", "frame_cpbd",
  "mouth_lapvar", "mouth_cpbd", "ref_mouth_lapvar", "ref_mouth_cpbd",
)  # fmt: skip
ALIGN_MODES = ("strict", "trim")
NO_WEIGHTS = "unavailable: no SyncNet weights given (--syncnet)"

# (record key, column title, format) of the table, in the paper's order, then articulation and
# mouth sharpness: MSI is never shown without them (a frozen mouth scores a perfect MSI).
COLUMNS: tuple[tuple[str, str, str], ...] = (
  ("ssim", "SSIM (crop) ↑", "{:.4f}"),
  ("psnr", "PSNR (crop) ↑", "{:.2f}"),
  ("lmd", "LMD ↓", "{:.3f}"),
  ("nlmd", "NLMD ↓", "{:.4f}"),
  ("cpbd", "CPBD (crop) ↑", "{:.3f}"),
  ("msi_lip", "MSI-Lip ↑", "{:.3f}"),
  ("msi_jaw", "MSI-Jaw ↑", "{:.3f}"),
  ("aperture_ratio", "Aperture ratio →1", "{:.3f}"),
  ("aperture_corr", "Aperture corr ↑", "{:.3f}"),
  ("sync_offset_frames", "Sync offset (frames) →0", "{:d}"),
  ("mouth_lapvar_ratio", "Mouth LapVar ratio →1", "{:.3f}"),
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


def _lip_sync(path: str, landmarks_tn2: np.ndarray, fps: float, config) -> dict:
  """The weight-free lip-sync offset of one video: its mouth aperture against its own audio."""
  try:
    samples = read_audio(path, int(config.data.sample_rate))
  except AudioReadError as e:
    return {"offset": None, "confidence": None, "status": f"unavailable: {e}"}
  aperture_t = mouth_aperture(landmarks_tn2)
  envelope_t = audio_envelope(samples, int(config.data.sample_rate), fps, len(aperture_t))
  try:
    offset, confidence = sync_offset(aperture_t, envelope_t, max_shift=SYNC_MAX_SHIFT)
  except JaxtalkError as e:  # e.g. a clip too short for the lags searched
    return {"offset": None, "confidence": None, "status": f"unavailable: {e}"}
  return {"offset": int(offset), "confidence": float(confidence), "status": "ok"}


def _finite(x) -> float | None:
  """A float for the JSON record; None for NaN (e.g. the ratio to a reference that never moves)."""
  return float(x) if x is not None and np.isfinite(x) else None


def _articulation(pred: str, pred_track, ref: str | None, ref_track, n_paired: int, fps: float,
                  config) -> dict:  # fmt: skip
  """Articulation beside MSI: aperture amplitude ratio and correlation against the reference,
  the lip-sync offsets of prediction and reference, and MSI generated / real."""
  out: dict = {}
  sync = _lip_sync(pred, pred_track.landmarks_tn2, fps, config)
  out.update(sync_offset_frames=sync["offset"], sync_confidence=sync["confidence"],
             lip_sync_status=sync["status"])  # fmt: skip
  keys = ("aperture_ratio", "aperture_corr", "ref_sync_offset_frames", "ref_sync_confidence",
          "ref_msi_lip", "ref_msi_jaw", "msi_lip_ratio", "msi_jaw_ratio")  # fmt: skip
  out.update(dict.fromkeys(keys))
  if ref is None:
    return out
  art = articulation(
    mouth_aperture(pred_track.landmarks_tn2[:n_paired]),
    mouth_aperture(ref_track.landmarks_tn2[:n_paired]),
  )
  out.update(
    aperture_ratio=_finite(art["aperture_ratio"]), aperture_corr=_finite(art["aperture_corr"])
  )
  ref_sync = _lip_sync(ref, ref_track.landmarks_tn2, fps, config)
  out.update(ref_sync_offset_frames=ref_sync["offset"], ref_sync_confidence=ref_sync["confidence"])
  ref_msi = msi_from_config(ref_track.landmarks_tn2, config.msi)
  out.update(ref_msi_lip=ref_msi["lip"], ref_msi_jaw=ref_msi["jaw"])
  return out


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
  seam_windows: tuple[int, int] | None = None,
) -> dict:
  """The metrics record of one predicted video (against `ref_path` when given).

  `syncnet_weights`: a weights file (loaded here; missing or wrong -> WeightsError) or a loaded
  SyncNetScorer (to share one across videos); None reports Sync as unavailable. `seam_windows`:
  (window, overlap) of the windowed inference that made the prediction (with config.infer.seam);
  adds the mouth box's and the lip landmarks' frame-to-frame jumps at the frames where the output
  switched windows (jaxtalk.metrics.seams) and elsewhere. Raises
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
  seams = None if seam_windows is None else seam_frames(n_pred, *seam_windows, config.infer.seam)
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

  # One stable face-crop box and one mouth box per video, both from the reference's track (the
  # prediction's own when there is no reference), used unchanged for the prediction: image
  # metrics are scored where the model works, not on background pixels copied from the input.
  box_track = ref_track if ref_track is not None else pred_track
  box_lm = box_track.landmarks_tn2[: n_paired or None]
  face_box = config_crop_box(box_track.boxes_t4, box_track.found_t, config.data)
  m_box = mouth_box(box_lm)
  record.update(face_crop_box=face_box.to_list(), mouth_box=m_box.to_list())
  ref_hw = tuple(ref_track.image_hw) if ref_track is not None else tuple(pred_track.image_hw)

  # One decoding pass over both videos: paired metrics on the first n_paired frames, CPBD and
  # mouth sharpness on every predicted frame.
  acc: dict[str, list[float]] = {k: [] for k in METRIC_LISTS}
  lp = FaceMouthLpips(n_paired if ref_track is not None else 0)  # LPIPS, face crop + mouth box
  mouth_grey: dict[str, list[np.ndarray]] = {"pred": [], "ref": []}  # for the seam jumps
  ref_frames = iter_frames(ref) if ref is not None else iter(())
  pairs = itertools.zip_longest(iter_frames(pred), itertools.islice(ref_frames, n_paired))
  for p, r in tqdm(pairs, total=n_pred, disable=not progress, desc="metrics"):
    if p is None:
      break
    p_r = _resize(p, ref_hw)  # in the reference's pixels, where both boxes live
    p_crop = box_pixels(p_r, face_box)
    p_mouth = box_pixels(p_r, m_box)
    acc["cpbd"].append(cpbd(p_crop))
    acc["frame_cpbd"].append(cpbd(p))
    acc["mouth_lapvar"].append(laplacian_variance(p_mouth))
    acc["mouth_cpbd"].append(cpbd(p_mouth))
    if seams is not None:
      mouth_grey["pred"].append(p_mouth.astype(np.float32).mean(axis=-1))
    if r is not None:
      r_crop, r_mouth = box_pixels(r, face_box), box_pixels(r, m_box)
      if seams is not None:
        mouth_grey["ref"].append(r_mouth.astype(np.float32).mean(axis=-1))
      acc["ssim"].append(ssim(p_crop, r_crop))
      acc["psnr"].append(min(psnr(p_crop, r_crop), PSNR_CAP_DB))
      acc["frame_ssim"].append(ssim(p_r, r))
      acc["frame_psnr"].append(min(psnr(p_r, r), PSNR_CAP_DB))
      acc["ref_mouth_lapvar"].append(laplacian_variance(r_mouth))
      acc["ref_mouth_cpbd"].append(cpbd(r_mouth))
      lp.add(p_r, r, ref_track.landmarks_tn2[lp.index])
  for key, values in acc.items():
    record[key] = float(np.mean(values)) if values else None
  record["mouth_lapvar_ratio"] = ratio(record["mouth_lapvar"], record["ref_mouth_lapvar"])
  record["mouth_cpbd_ratio"] = ratio(record["mouth_cpbd"], record["ref_mouth_cpbd"])
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

  msi = msi_from_config(pred_track.landmarks_tn2, config.msi)
  record.update(msi_lip=msi["lip"], msi_jaw=msi["jaw"], msi_all=msi["all"])
  record.update(_articulation(pred, pred_track, ref, ref_track, n_paired, pred_info.fps, config))
  record["msi_lip_ratio"] = ratio(record["msi_lip"], record["ref_msi_lip"])
  record["msi_jaw_ratio"] = ratio(record["msi_jaw"], record["ref_msi_jaw"])
  record.update(
    _sync(pred, pred_info, pred_track, config, backend, scorer, vshift, cache_dir, use_cache)
  )
  if seams is not None:
    record.update(_seam_record(seams, mouth_grey, pred_track, ref_track, n_paired))
  return record


def _seam_record(seams, mouth_grey: dict, pred_track, ref_track, n_paired: int) -> dict:
  """Frame-to-frame jumps at the seams and elsewhere: mouth box (grey levels, 0-255) and lip
  landmarks (mean displacement of the 20 lip points, pixels of the prediction), for the
  prediction and, on the same frames, the reference."""
  seams = np.asarray(seams, np.int64)
  out: dict = {"seam_frames": seams.tolist()}
  out.update(jump_summary(frame_jumps(np.stack(mouth_grey["pred"])), seams, "mouth_"))
  lips = pred_track.landmarks_tn2[:, LIP_POINTS].astype(np.float64)
  out.update(jump_summary(landmark_jumps(lips), seams, "lip_"))
  if ref_track is not None and n_paired > 1:
    ref_seams = seams[seams < n_paired]
    out.update(jump_summary(frame_jumps(np.stack(mouth_grey["ref"])), ref_seams, "ref_mouth_"))
    ref_lips = ref_track.landmarks_tn2[:n_paired, LIP_POINTS].astype(np.float64)
    out.update(jump_summary(landmark_jumps(ref_lips), ref_seams, "ref_lip_"))
  return out


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
      notes.append(
        f"{name}: generated / real: MSI-Lip {_cell(r.get('msi_lip_ratio'), '{:.3f}')}, "
        f"MSI-Jaw {_cell(r.get('msi_jaw_ratio'), '{:.3f}')}, mouth CPBD "
        f"{_cell(r.get('mouth_cpbd_ratio'), '{:.3f}')}; real's own lip-sync offset "
        f"{_cell(r.get('ref_sync_offset_frames'), '{:d}')} frames; whole frame (background "
        f"included): SSIM {_cell(r.get('frame_ssim'), '{:.4f}')}, "
        f"PSNR {_cell(r.get('frame_psnr'), '{:.2f}')}"
      )
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
