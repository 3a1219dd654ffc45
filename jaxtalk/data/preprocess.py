"""Preprocessing: a person's raw videos -> a dataset folder (docs/dataset_format.md).

Three passes, because the person's face model needs every clip before any expression exists:

1. per clip, in parallel: decode, track the face (landmark cache), one stable crop box,
   landmarks in crop coordinates, audio checks, the usable frame runs (`ClipPlan`);
2. once: the person's face model from all clips' crop landmarks (`FaceFitter.learn`),
   written to face_model.npz;
3. per clip, in parallel: decode again, crop, fit (pose, expression), shape renders, masks,
   audio features, written through `ClipWriter` (atomic per clip); manifest.json is rewritten
   after every finished clip.

Resuming: the output folder's manifest records the settings and the inputs' content hashes; a
re-run with the same ones skips finished clips and redoes anything half-written (it only ever
exists as clips/<name>.partial/). Different settings or inputs are an error, not a mix.

Decisions on imperfect input (each reported in the manifest's `sources` entry):
* no face in a frame: with data.no_face "drop" the frames are dropped; with "fail" a clip
  missing more than data.max_missing_fraction of its frames is an error (below that, dropped).
  Frames whose box the tracker only held (`Track.held_t`) count as missing when the face is
  still lost after the hold: the tracker kept a stale box on a frame without a face.
* dropped frames split a clip: each run of consecutive usable frames becomes a dataset clip of
  its own (`<source>@<first frame:05d>` when there are several), so training windows never
  straddle a gap; runs shorter than data.min_clip_frames are dropped.
* audio shorter than video: frames from the audio's end on are dropped; if the audio ends more
  than data.max_audio_shortfall_s before the video, the clip is an error (wrong or broken file).
* no audio track, silent audio (data.silence_db), unreadable or corrupt file: an error.
* variable or different frame rate: resampled to data.fps by timestamp, reported.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import pathlib
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import ml_collections
import numpy as np
from tqdm import tqdm

import jaxtalk
from jaxtalk.audio.features import frame_windows, log_mel
from jaxtalk.data.dataset import (
  CLIPS_DIR,
  FACE_MODEL,
  FORMAT_NAME,
  FORMAT_VERSION,
  MANIFEST,
  PARTIAL_SUFFIX,
  DatasetError,
)
from jaxtalk.data.writer import ClipWriter, npz_bytes, write_bytes_atomic, write_json_atomic
from jaxtalk.errors import AudioReadError, ConfigError, JaxtalkError, NoFaceError, VideoReadError
from jaxtalk.face import landmark3d
from jaxtalk.face.cache import file_digest, video_track
from jaxtalk.face.crop import CropBox, crop_frame, stable_crop_box, to_crop_coords
from jaxtalk.face.mask import MASK_POINTS
from jaxtalk.face.track_filter import TrackFilter, filter_pose, track_masks
from jaxtalk.io.audio import is_silent, read_audio
from jaxtalk.io.video import iter_frames, probe_video

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv")
FACE_MODELS = ("landmark3d", "deca")


# ------------------------------------------------------------------------------ settings


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that decides a dataset's content (compared on resume; picklable for workers)."""

  fps: float
  image_size: int
  sample_rate: int
  n_mels: int
  hop_ms: float
  win_ms: float
  mel_floor: float
  audio_window: int
  landmark_backend: str
  face_model: str
  expression_dim: int
  crop_scale: float
  no_face: str
  max_missing_fraction: float
  max_audio_shortfall_s: float
  min_clip_frames: int
  silence_db: float
  track: dict[str, float | int]
  holdout: float = 0.0
  crop_shift: float = 0.0
  track_filter: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def filter(self) -> TrackFilter:
    return TrackFilter(**self.track_filter) if self.track_filter else TrackFilter(kind="none")

  @classmethod
  def from_config(
    cls, config: ml_collections.ConfigDict, face_model: str | None = None
  ) -> Settings:
    d = config.data
    settings = cls(
      fps=float(d.fps),
      image_size=int(d.image_size),
      sample_rate=int(d.sample_rate),
      n_mels=int(d.n_mels),
      hop_ms=float(d.hop_ms),
      win_ms=float(d.win_ms),
      mel_floor=float(d.mel_floor),
      audio_window=int(d.audio_window),
      landmark_backend=str(d.landmark_backend),
      face_model=str(face_model or d.face_model),
      expression_dim=int(d.expression_dim),
      crop_scale=float(d.crop_scale),
      crop_shift=float(d.get("crop_shift", 0.0)),
      no_face=str(d.no_face),
      max_missing_fraction=float(d.max_missing_fraction),
      max_audio_shortfall_s=float(d.max_audio_shortfall_s),
      min_clip_frames=int(d.min_clip_frames),
      silence_db=float(d.silence_db),
      track={k: config.track[k] for k in sorted(config.track.keys())},
      holdout=float(d.get("holdout", 0.0)),
      track_filter=TrackFilter.from_config(config).to_json(),
    )
    settings.validate()
    return settings

  def validate(self) -> None:
    if self.no_face not in ("drop", "fail"):
      raise ConfigError(f"data.no_face must be 'drop' or 'fail', got {self.no_face!r}")
    if self.face_model not in FACE_MODELS:
      raise ConfigError(
        f"unknown face model {self.face_model!r}; choose from {', '.join(FACE_MODELS)}"
      )
    if self.fps <= 0 or self.image_size < 16 or self.audio_window < 1 or self.expression_dim < 1:
      raise ConfigError(
        "data.fps, data.image_size (>= 16), data.audio_window, data.expression_dim must be positive"
      )
    if not 0.0 <= self.max_missing_fraction <= 1.0:
      raise ConfigError("data.max_missing_fraction must be in [0, 1]")
    if not 0.0 <= self.holdout < 1.0:
      raise ConfigError(f"data.holdout (--holdout) must be in [0, 1), got {self.holdout}")

  def to_json(self) -> dict[str, Any]:
    out = json.loads(json.dumps(dataclasses.asdict(self)))
    if not self.crop_shift:
      del out["crop_shift"]  # the crop of datasets made before it existed
    if not self.holdout:
      # no split: the settings of datasets made before the split existed (they still resume)
      del out["holdout"]
    if not self.filter.active:
      del out["track_filter"]  # likewise: no filter is what older datasets had
    return out


def holdout_cut(num_frames: int, holdout: float) -> int:
  """The first held-out frame of a source of `num_frames` frames (at data.fps): its last
  round(holdout * num_frames) frames are held out, by time. num_frames when holdout is 0."""
  return int(num_frames) - int(np.floor(holdout * num_frames + 0.5))


def train_frames(first_frame: int, num_frames: int, cut: int) -> int:
  """How many of a clip's first frames lie before its source's holdout cut (0 .. num_frames)."""
  return int(min(num_frames, max(0, cut - first_frame)))


# ------------------------------------------------------------------------------ inputs


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  path: str
  sha256: str


def clip_name(path: pathlib.Path) -> str:
  # "@" separates a source from its segments; keep names portable file names.
  return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem) or "clip"


def collect_inputs(paths: Iterable[str | os.PathLike]) -> list[Source]:
  """Video files, and the video files (by extension, not recursive) of folders, sorted by name."""
  files: list[pathlib.Path] = []
  for p in paths:
    p = pathlib.Path(p)
    if p.is_dir():
      found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
      if not found:
        raise VideoReadError(f"{p}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
      files.extend(found)
    elif p.is_file():
      files.append(p)
    else:
      raise VideoReadError(f"{p}: no such file or folder")
  by_name: dict[str, pathlib.Path] = {}
  for f in files:
    name = clip_name(f)
    if name in by_name and by_name[name].resolve() != f.resolve():
      raise JaxtalkError(
        f"two inputs would both be clip {name!r}: {by_name[name]} and {f}; rename one"
      )
    by_name[name] = f
  if not by_name:
    raise VideoReadError("no input videos")
  return [Source(n, str(by_name[n].resolve()), file_digest(by_name[n])) for n in sorted(by_name)]


# ------------------------------------------------------------------------------ face fitters


class FaceFitter(Protocol):
  """A 3D face model backend: landmark3d here, DECA in third_party/deca_bridge."""

  name: str

  def check(self, settings: Settings) -> None:
    """Raises JaxtalkError for settings it cannot serve or missing dependencies (before pass 1)."""

  def extra_fields(self, settings: Settings) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Additional per-clip fields {name: (dtype, shape after T)} it writes."""

  def learn(
    self, landmarks: list[np.ndarray], settings: Settings
  ) -> tuple[dict[str, np.ndarray], dict]:
    """Pass 2: face_model.npz arrays and a JSON summary, from all clips' usable crop landmarks."""

  def fit_clip(
    self,
    model: dict[str, np.ndarray],
    frames_thwc: np.ndarray,
    landmarks_tn2: np.ndarray,
    settings: Settings,
    out: ClipWriter,
  ) -> dict[str, Any]:
    """Pass 3: fills out["expression"], out["pose"], out["shape"] (and extra fields) for one
    clip from its crops and crop landmarks; returns the fit-quality summary for the manifest."""


class Landmark3dFitter:
  """The embedded model (jaxtalk.face.landmark3d)."""

  name = "landmark3d"

  def check(self, settings: Settings) -> None:
    pass

  def extra_fields(self, settings: Settings) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {}

  def learn(
    self, landmarks: list[np.ndarray], settings: Settings
  ) -> tuple[dict[str, np.ndarray], dict]:
    model = landmark3d.learn_face_model(landmarks, settings.image_size, settings.expression_dim)
    ratio = model.explained_variance_ratio
    info = {
      "kind": landmark3d.KIND,
      "frames": model.num_frames,
      "components": int(np.sum(model.std > 0)),
      "explained_variance": round(float(ratio.sum()), 6),
      "explained_variance_ratio": [round(float(r), 6) for r in ratio],
      "focal_length_px": model.focal_scale * settings.image_size,
    }
    return model.to_arrays(), info

  def fit_clip(
    self,
    model: dict[str, np.ndarray],
    frames_thwc: np.ndarray,
    landmarks_tn2: np.ndarray,
    settings: Settings,
    out: ClipWriter,
  ) -> dict[str, Any]:
    face = landmark3d.FaceModel.from_arrays(model)
    size = settings.image_size
    # expression from the raw landmarks (the real articulation); the pose that places the
    # render filtered over time, exactly as inference does (jaxtalk/face/track_filter.py)
    fit = landmark3d.fit_frames(face, landmarks_tn2, size)
    pose = filter_pose(fit.pose_t6, settings.filter)
    out["expression"] = fit.expression_te
    out["pose"] = pose
    shape = out["shape"]
    for t in range(len(pose)):
      shape[t] = face.render(fit.expression_te[t], pose[t], size)
    return fit_quality(fit.error_t, fit.max_error_t, size)


def fit_quality(error_t: np.ndarray, max_error_t: np.ndarray, size: int) -> dict[str, float]:
  """Reprojection error summary (pixels of the crop, and scaled to a 256 crop)."""
  to256 = 256.0 / size
  return {
    "reproj_mean_px": round(float(np.mean(error_t)), 4),
    "reproj_max_px": round(float(np.max(max_error_t)), 4),
    "reproj_mean_px_at_256": round(float(np.mean(error_t)) * to256, 4),
    "reproj_max_px_at_256": round(float(np.max(max_error_t)) * to256, 4),
  }


def make_fitter(name: str, options: dict[str, Any] | None = None) -> FaceFitter:
  if name == "landmark3d":
    return Landmark3dFitter()
  if name == "deca":
    return _import_deca_bridge().DecaFitter(**(options or {}))
  raise ConfigError(f"unknown face model {name!r}; choose from {', '.join(FACE_MODELS)}")


def _import_deca_bridge():
  try:
    import deca_bridge
  except ImportError:
    # A source checkout: third_party/ sits beside the jaxtalk package.
    here = pathlib.Path(__file__).resolve().parents[2] / "third_party" / "deca_bridge"
    if not (here / "deca_bridge").is_dir():
      raise JaxtalkError(
        "--face-model deca needs the DECA bridge: pip install third_party/deca_bridge from the"
        " jaxtalk source tree (see third_party/deca_bridge/README.md)"
      ) from None
    sys.path.insert(0, str(here))
    import deca_bridge
  return deca_bridge


# ------------------------------------------------------------------------------ pass 1


@dataclasses.dataclass
class ClipPlan:
  """What pass 1 learned about one source clip."""

  source: Source
  num_frames: int  # frames at settings.fps
  box: CropBox
  landmarks_tn2: np.ndarray  # (T, 68, 2) float32 crop coordinates, NaN where unusable
  segments: list[tuple[int, int]]  # usable runs [start, stop)
  dropped: list[dict[str, Any]]  # {"start", "stop", "reason"}
  info: dict[str, Any]  # source facts for the manifest
  cut: int  # first held-out frame (num_frames: nothing held out)

  def train_runs(self) -> list[tuple[int, int]]:
    """The parts of the usable runs before the holdout cut."""
    return [(a, min(b, self.cut)) for a, b in self.segments if a < self.cut]

  def segment_names(self) -> list[str]:
    if len(self.segments) == 1:
      return [self.source.name]
    return [f"{self.source.name}@{start:05d}" for start, _ in self.segments]


def _runs(flags_t: np.ndarray) -> list[tuple[int, int]]:
  """[start, stop) runs where flags_t is True."""
  padded = np.concatenate([[False], np.asarray(flags_t, bool), [False]])
  edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
  return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _stale_holds(found_t: np.ndarray, held_t: np.ndarray) -> np.ndarray:
  """Held frames whose hold ended without the face being found again (or at the clip end)."""
  stale = np.zeros_like(found_t)
  for start, stop in _runs(held_t & found_t):
    if stop >= len(found_t) or not found_t[stop]:
      stale[start:stop] = True
  return stale


def _ranges_text(runs: Sequence[tuple[int, int]]) -> str:
  shown = ", ".join(f"{a}-{b - 1}" for a, b in runs[:6])
  return shown + (" ..." if len(runs) > 6 else "")


def check_audio(path: str, settings: Settings) -> np.ndarray:
  """The clip's mono audio at settings.sample_rate; AudioReadError if absent or silent."""
  samples = read_audio(path, settings.sample_rate)
  if is_silent(samples, settings.silence_db, settings.sample_rate):
    raise AudioReadError(
      f"{path}: the audio is silent (quieter than data.silence_db={settings.silence_db} dBFS"
      " throughout); StableFace learns from speech"
    )
  return samples


def plan_clip(
  source: Source, settings: Settings, cache_dir: str | None = None, use_cache: bool = True
) -> ClipPlan:
  """Pass 1 for one clip (see the module docstring for the decisions taken)."""
  info = probe_video(source.path)
  samples = check_audio(source.path, settings)
  track = video_track(
    source.path,
    settings.landmark_backend,
    ml_collections.ConfigDict(settings.track),
    fps=settings.fps,
    cache_dir=cache_dir,
    use_cache=use_cache,
  )
  n = track.num_frames
  face = track.found_t & ~_stale_holds(track.found_t, track.held_t)
  audio_s = len(samples) / settings.sample_rate
  video_s = n / settings.fps
  if video_s - audio_s > settings.max_audio_shortfall_s:
    raise AudioReadError(
      f"{source.path}: the audio ({audio_s:.2f} s) ends {video_s - audio_s:.2f} s before the video"
      f" ({video_s:.2f} s), more than data.max_audio_shortfall_s={settings.max_audio_shortfall_s}"
    )
  # A frame is shown from t / fps on; it needs audio at that time.
  audible = np.arange(n) / settings.fps < audio_s
  missing = int(np.sum(~face))
  if settings.no_face == "fail" and missing > settings.max_missing_fraction * n:
    raise NoFaceError(
      f"{source.path}: no face in {missing} of {n} frames ({_ranges_text(_runs(~face))}), more"
      f" than data.max_missing_fraction={settings.max_missing_fraction} (data.no_face=fail)"
    )
  dropped = [{"start": a, "stop": b, "reason": "no_face"} for a, b in _runs(~face)]
  dropped += [
    {"start": a, "stop": b, "reason": "after_audio_end"} for a, b in _runs(face & ~audible)
  ]
  segments = []
  for a, b in _runs(face & audible):
    if b - a < settings.min_clip_frames:
      dropped.append({"start": a, "stop": b, "reason": "short_run"})
    else:
      segments.append((a, b))
  dropped.sort(key=lambda d: d["start"])
  if not segments:
    raise NoFaceError(
      f"{source.path}: no run of at least data.min_clip_frames={settings.min_clip_frames} frames"
      f" with a face and audio (dropped: {dropped})"
    )
  usable = np.zeros(n, bool)
  for a, b in segments:
    usable[a:b] = True
  box = stable_crop_box(track.boxes_t4, usable, settings.crop_scale, settings.crop_shift)
  landmarks = to_crop_coords(track.landmarks_tn2, box, settings.image_size)
  landmarks[~usable] = np.nan
  info = {
    "path": source.path,
    "sha256": source.sha256,
    "width": info.width,
    "height": info.height,
    "source_fps": round(info.fps, 6),
    "variable_frame_rate": info.variable_frame_rate,
    "resampled": bool(info.variable_frame_rate or abs(info.fps - settings.fps) > 1e-3),
    "frames": n,
    "audio_s": round(audio_s, 6),
    "crop_box": box.to_list(),
    "missing_face_frames": missing,
    "held_frames": int(np.sum(track.held_t)),
  }
  cut = holdout_cut(n, settings.holdout)
  if settings.holdout:
    info["holdout_cut"] = cut
  return ClipPlan(source, n, box, landmarks, segments, dropped, info, cut)


# ------------------------------------------------------------------------------ pass 3


def write_clip(
  plan: ClipPlan,
  settings: Settings,
  fitter: FaceFitter,
  model: dict[str, np.ndarray],
  out_dir: str,
) -> dict[str, dict[str, Any]]:
  """Pass 3 for one source clip: writes its segments, returns their manifest entries."""
  size = settings.image_size
  samples = check_audio(plan.source.path, settings)
  mel = log_mel(
    samples,
    settings.sample_rate,
    settings.n_mels,
    settings.hop_ms,
    settings.win_ms,
    settings.mel_floor,
  )
  mel_rate = 1000.0 / settings.hop_ms
  extra = fitter.extra_fields(settings)
  writers: list[ClipWriter] = []
  mel_ranges: list[tuple[int, int]] = []
  try:
    for name, (a, b) in zip(plan.segment_names(), plan.segments, strict=True):
      m0 = min(int(np.floor(a * mel_rate / settings.fps + 0.5)), len(mel) - 1)
      m1 = min(max(int(np.floor(b * mel_rate / settings.fps + 0.5)), m0 + 1), len(mel))
      dims = {
        "T": b - a,
        "S": size,
        "P": len(MASK_POINTS),
        "E": settings.expression_dim,
        "W": settings.audio_window,
        "F": settings.n_mels,
        "M": m1 - m0,
      }
      w = ClipWriter(out_dir, name, dims, {k: (d, (b - a, *s)) for k, (d, s) in extra.items()})
      writers.append(w)
      mel_ranges.append((m0, m1))
    # Frames: decoded again (pass 1 kept only landmarks) and streamed into the maps.
    count = 0
    seg = {t: (i, t - a) for i, (a, b) in enumerate(plan.segments) for t in range(a, b)}
    for t, frame in enumerate(iter_frames(plan.source.path, settings.fps)):
      count += 1
      if t in seg:
        i, local = seg[t]
        writers[i]["frames"][local] = crop_frame(frame, plan.box, size)
    if count != plan.num_frames:
      raise VideoReadError(
        f"{plan.source.path}: decoded {count} frames, the first pass saw {plan.num_frames}; is the"
        " file being changed?"
      )
    entries = {}
    for w, (a, b), (m0, m1) in zip(writers, plan.segments, mel_ranges, strict=True):
      lms = plan.landmarks_tn2[a:b]
      w["landmarks"] = lms
      # the mask from the time-filtered track (the same function as inference's background)
      polygons, masks = track_masks(lms, size, settings.filter)
      w["mask_points"] = polygons
      w["mask"] = masks
      w["mel"] = mel[m0:m1]
      w["audio"] = frame_windows(
        mel, b - a, settings.fps, settings.hop_ms, settings.audio_window, a
      )
      quality = fitter.fit_clip(model, w["frames"], lms, settings, w)
      w.finish()
      entries[w.name] = {
        "source": plan.source.name,
        "first_frame": a,
        "num_frames": b - a,
        "mel_offset": m0,
        "mel_frames": m1 - m0,
        "fit": quality,
      }
      if settings.holdout:
        entries[w.name]["train_frames"] = train_frames(a, b - a, plan.cut)
    return entries
  except BaseException:
    for w in writers:
      w.abort()
    raise


# ------------------------------------------------------------------------------ output folder


def _new_manifest(
  settings: Settings, config: ml_collections.ConfigDict, sources: list[Source]
) -> dict:
  return {
    "format": FORMAT_NAME,
    "version": FORMAT_VERSION,
    "status": "incomplete",
    "jaxtalk_version": jaxtalk.__version__,
    "face_model": settings.face_model,
    "landmark_backend": settings.landmark_backend,
    "fps": settings.fps,
    "image_size": settings.image_size,
    "expression_dim": settings.expression_dim,
    "audio_window": settings.audio_window,
    "n_mels": settings.n_mels,
    "mel_hop_ms": settings.hop_ms,
    "sample_rate": settings.sample_rate,
    "mask_points": len(MASK_POINTS),
    "mask_point_indices": list(MASK_POINTS),
    "settings": settings.to_json(),
    "config": json.loads(json.dumps(config.to_dict(), default=str)),
    "inputs": {s.name: {"path": s.path, "sha256": s.sha256} for s in sources},
    "sources": {},
    "clips": {},
    "skipped": {},
  }


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k), new.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      out += _diff(a, b, f"{prefix}{k}.")
    elif a != b:
      out.append(f"{prefix}{k}: {a!r} -> {b!r}")
  return out


def prepare_output(out: pathlib.Path, fresh: dict) -> dict:
  """A new dataset folder, or the manifest of the same dataset to resume; errors otherwise."""
  if out.exists() and not out.is_dir():
    raise DatasetError(f"{out}: exists and is not a folder")
  if out.is_dir() and any(out.iterdir()):
    if not (out / MANIFEST).is_file():
      raise DatasetError(
        f"{out}: not empty and not a jaxtalk dataset (no {MANIFEST}); choose a new or empty folder"
      )
    from jaxtalk.data.dataset import read_manifest

    old = read_manifest(out)  # raises for a foreign manifest or another format version
    problems = _diff(old.get("settings", {}), fresh["settings"])
    problems += [f"input {p}" for p in _diff(old.get("inputs", {}), fresh["inputs"])]
    if problems and not old.get("clips"):
      # Nothing finished yet (e.g. the last run stopped at a bad input): start over.
      write_json_atomic(out / MANIFEST, fresh)
      return fresh
    if problems:
      shown = "; ".join(problems[:8]) + (" ..." if len(problems) > 8 else "")
      raise DatasetError(
        f"{out}: holds a dataset made with other settings or inputs ({shown}); resume with the"
        " same ones or write to a new folder"
      )
    return old
  out.mkdir(parents=True, exist_ok=True)
  write_json_atomic(out / MANIFEST, fresh)
  return fresh


def _source_done(manifest: dict, plan: ClipPlan, out: pathlib.Path) -> bool:
  entry = manifest["sources"].get(plan.source.name)
  return bool(
    entry
    and entry.get("clips") == plan.segment_names()
    and all(n in manifest["clips"] and (out / CLIPS_DIR / n).is_dir() for n in entry["clips"])
  )


# ------------------------------------------------------------------------------ driver


def _since(started: float) -> str:
  return f"{time.perf_counter() - started:.1f} s"


def _worker_init() -> None:
  # One process per core: keep OpenCV from spawning threads of its own.
  import cv2

  cv2.setNumThreads(1)


def _pool(workers: int, jobs: int) -> concurrent.futures.Executor | None:
  """One pool of spawned worker processes for both parallel passes (None: work in-process).

  spawn, not fork: the parent may hold OpenCV/BLAS threads, which forked children inherit
  in an undefined state.
  """
  if workers <= 1 or jobs <= 1:
    return None
  ctx = multiprocessing.get_context("spawn")
  return concurrent.futures.ProcessPoolExecutor(
    min(workers, jobs), mp_context=ctx, initializer=_worker_init
  )


def _map(
  fn: Callable, items: list, pool: concurrent.futures.Executor | None, desc: str, progress: bool
):
  """Yields (item, result or JaxtalkError) as they finish, in `pool` or in this process."""
  bar = tqdm(total=len(items), desc=desc, unit="clip", disable=not progress, leave=False)
  try:
    if pool is None:
      for item in items:
        try:
          result = fn(item)
        except JaxtalkError as e:
          result = e
        bar.update()
        yield item, result
      return
    futures = {pool.submit(fn, item): item for item in items}
    try:
      for fut in concurrent.futures.as_completed(futures):
        try:
          result = fut.result()
        except JaxtalkError as e:
          result = e
        bar.update()
        yield futures[fut], result
    finally:
      for fut in futures:
        fut.cancel()
  finally:
    bar.close()


@dataclasses.dataclass(frozen=True)
class _Plan1:
  settings: Settings
  cache_dir: str | None
  use_cache: bool

  def __call__(self, source: Source) -> ClipPlan:
    return plan_clip(source, self.settings, self.cache_dir, self.use_cache)


@dataclasses.dataclass(frozen=True)
class _Write3:
  settings: Settings
  fitter: Any
  model: dict
  out_dir: str

  def __call__(self, plan: ClipPlan) -> dict:
    return write_clip(plan, self.settings, self.fitter, self.model, self.out_dir)


def preprocess(
  inputs: Sequence[str | os.PathLike],
  out_dir: str | os.PathLike,
  config: ml_collections.ConfigDict,
  *,
  face_model: str | None = None,
  fitter: FaceFitter | None = None,
  fitter_options: dict[str, Any] | None = None,
  workers: int = 1,
  cache_dir: str | os.PathLike | None = None,
  use_cache: bool = True,
  skip_bad: bool = False,
  progress: bool = True,
  log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
  """Builds (or resumes) the dataset at `out_dir` from `inputs`; returns the final manifest.

  skip_bad: a clip that fails with a JaxtalkError (corrupt, no audio, no face, ...) is left out
  and listed in the manifest's "skipped" instead of stopping the run.
  """
  log = log or (lambda msg: print(msg, file=sys.stderr))
  settings = Settings.from_config(config, face_model or (fitter.name if fitter else None))
  fitter = fitter or make_fitter(settings.face_model, fitter_options)
  fitter.check(settings)
  sources = collect_inputs(inputs)
  out = pathlib.Path(out_dir)
  manifest = prepare_output(out, _new_manifest(settings, config, sources))
  cache = str(cache_dir) if cache_dir is not None else None
  pool = _pool(workers, len(sources))
  try:
    # Pass 1: tracking, crop, landmarks (cached per file content).
    started = time.perf_counter()
    plans: list[ClipPlan] = []
    skipped: dict[str, str] = {}
    for source, result in _map(
      _Plan1(settings, cache, use_cache), sources, pool, "1/3 track", progress
    ):
      if isinstance(result, JaxtalkError):
        if not skip_bad:
          raise result
        skipped[source.name] = str(result)
        log(f"skipping {source.name}: {result}")
        continue
      plans.append(result)
    plans.sort(key=lambda p: p.source.name)
    if not plans:
      raise JaxtalkError("no usable clip among the inputs")
    for p in plans:
      if p.dropped:
        log(
          f"{p.source.name}: dropped frames "
          + ", ".join(f"{d['start']}-{d['stop'] - 1} ({d['reason']})" for d in p.dropped)
        )
      if p.info["resampled"]:
        vfr = (
          "variable frame rate"
          if p.info["variable_frame_rate"]
          else f"{p.info['source_fps']:g} fps"
        )
        log(f"{p.source.name}: {vfr} resampled to {settings.fps:g} fps")

    log(f"pass 1/3 (track, crop, landmarks): {len(plans)} clips in {_since(started)}")

    # Pass 2: the person's face model from every usable training frame of every clip (held-out
    # frames must not shape the expression basis or its per-component scale).
    started = time.perf_counter()
    usable = [p.landmarks_tn2[a:b] for p in plans for a, b in p.train_runs()]
    if not usable:
      raise JaxtalkError(
        f"data.holdout={settings.holdout} leaves no usable training frame; lower --holdout"
      )
    model, model_info = fitter.learn(usable, settings)
    blob = npz_bytes(model)
    model_path = out / FACE_MODEL
    if manifest["clips"] and (not model_path.is_file() or model_path.read_bytes() != blob):
      raise DatasetError(
        f"{out}: the face model learned now differs from the one its finished clips were made with"
        " (changed landmarks or code?); write to a new folder"
      )
    if not model_path.is_file() or model_path.read_bytes() != blob:
      write_bytes_atomic(model_path, blob)
    manifest["face_model_fit"] = model_info
    manifest["skipped"] = skipped
    if settings.holdout:
      manifest["holdout"] = settings.holdout

    log(f"pass 2/3 (face model): {model_info.get('frames', 0)} frames in {_since(started)}")

    # Pass 3: per-clip fit, renders, masks, audio; finished clips are skipped.
    started = time.perf_counter()
    clips_dir = out / CLIPS_DIR
    clips_dir.mkdir(exist_ok=True)
    for stray in sorted(clips_dir.glob(f"*{PARTIAL_SUFFIX}")):
      shutil.rmtree(stray)
    todo = [p for p in plans if not _source_done(manifest, p, out)]
    for p in todo:  # a clip published but not yet recorded when the last run died
      manifest["sources"].pop(p.source.name, None)
      for name in p.segment_names():
        manifest["clips"].pop(name, None)
        if (clips_dir / name).exists():
          shutil.rmtree(clips_dir / name)
    if len(todo) < len(plans):
      log(f"resuming: {len(plans) - len(todo)} of {len(plans)} clips already done")
    write_json_atomic(out / MANIFEST, manifest)
    writer = _Write3(settings, fitter, model, str(out))
    for plan, result in _map(writer, todo, pool, "3/3 fit+write", progress):
      if isinstance(result, JaxtalkError):
        if not skip_bad:
          raise result
        manifest["skipped"][plan.source.name] = str(result)
        log(f"skipping {plan.source.name}: {result}")
        write_json_atomic(out / MANIFEST, manifest)
        continue
      manifest["clips"].update(result)
      manifest["sources"][plan.source.name] = {
        **plan.info,
        "clips": plan.segment_names(),
        "dropped": plan.dropped,
      }
      write_json_atomic(out / MANIFEST, manifest)
    if not manifest["clips"]:
      raise JaxtalkError("no clip could be written")
    log(f"pass 3/3 (fit, render, mask, audio, write): {len(todo)} clips in {_since(started)}")
    manifest["status"] = "complete"
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
  finally:
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)
