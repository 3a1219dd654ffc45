"""Inference: new audio + a background video of the trained person -> a talking-face mp4.

    jaxtalk infer --audio a.wav [b.wav ...] --video V --checkpoints W -o out/

The pipeline (ARCHITECTURE.md, StableFace Sec. III):

1. Background: the video is tracked once, cropped with one stable box (as in preprocessing) and
   fitted with the person's landmark3d model, giving a head pose and a mouth mask per frame;
   pose and mask landmarks are filtered over time with the same filter as preprocessing
   (jaxtalk/face/track_filter.py, data.track_filter). The paste region of each background
   frame (its filtered mouth mask, grown and feathered) is fixed here, once.
   When the audio is longer than the video, the background is played back and forth.
2. Audio -> log-mel windows per output frame -> audio2expression (in overlapping windows).
3. Predicted expressions re-posed on the background frames' head poses -> shape renders.
   A renderer trained through stage 2 (read from its checkpoint, not the config) smooths them
   with its adaptive smoothing over the WHOLE sequence (weights from the whole expression
   sequence, edge padding only at the sequence's ends), before any windowing.
4. The renderer runs over windows of `infer.window` frames overlapping by `infer.overlap`,
   `infer.batch_windows` windows per call of one compiled function. Windows are joined without
   mixing two renders (infer.seam = "centre": each frame from the window where it is farthest
   from the edges), so nothing ghosts.
5. Each generated crop is pasted into the full-resolution frame under that feathered region;
   outside it the frame is the background's, bit for bit. Frames stream into the mp4 (with the
   input audio) as soon as they are final: memory holds the background and one batch of
   windows, however long the audio.

The host's per-frame work (shape renders, paste) runs on `infer.workers` threads (0: every core)
and overlaps the accelerator: the renderer's next batch of windows is dispatched before the
previous one is handed on, the render runs ahead in a thread of its own while earlier frames are
pasted, and the x264 encoder runs in a process of its own (it would wait on the GIL here).
Frames are the same as computed one by one (each is a pure function of its inputs; order is
kept).

`W` (the `--checkpoints` folder) holds `renderer/` and `a2e/` training workdirs and the
person's `face_model.npz` (written there by `jaxtalk train`, copied from the dataset).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import pathlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxtalk import model_io
from jaxtalk import sharding as sh
from jaxtalk.audio.features import frame_windows, log_mel
from jaxtalk.config import load_config
from jaxtalk.data.dataset import FACE_MODEL
from jaxtalk.errors import AudioReadError, ConfigError, JaxtalkError, NoFaceError
from jaxtalk.face.cache import video_track
from jaxtalk.face.crop import CropBox, config_crop_box, crop_frame, to_crop_coords
from jaxtalk.face.landmark3d import FaceModel, fit_frames
from jaxtalk.face.mask import mask_polygon, rasterize_polygon
from jaxtalk.face.track_filter import TrackFilter, filter_pose, track_masks
from jaxtalk.io.audio import is_silent, read_audio
from jaxtalk.io.video import EncoderProcess, read_frames
from jaxtalk.models.smoothing import smoother_from_config
from jaxtalk.synthesis.panels import labelled_panels
from jaxtalk.synthesis.paste import feathered_alpha, paste, polygon_alpha
from jaxtalk.synthesis.smooth import weighted_frames
from jaxtalk.synthesis.windows import blend_stream, ping_pong, take_window, window_starts

# A background whose landmarks the person's model reprojects worse than this (mean, pixels at a
# 256 crop) is probably someone else. Measured with a model of GRID speaker bbaf2n: its own clip
# fits at 0.43 px, the seven other GRID speakers at 1.12-2.29 px.
MISMATCH_ERROR_PX = 0.9


class CheckpointMismatch(JaxtalkError):
  """The checkpoints do not belong together or to the given config."""


# ------------------------------------------------------------------------------ model folder


@dataclasses.dataclass
class Models:
  """Everything inference needs from a model folder, loaded once."""

  config: ml_collections.ConfigDict
  face_model: FaceModel
  renderer_state: Any  # RendererState: g_params, g_stats, data_stats
  a2e_state: Any  # A2EState: params, data_stats
  folder: pathlib.Path
  # the stage the renderer checkpoint was trained through (2: its smoothing took steps); read
  # from the checkpoint's metadata, never from the config
  stage: int = 1
  # the a2e's per-component output gain (model_io.A2ECalibration), None: predictions as they are
  a2e_calibration: Any = None


def _find_face_model(folder: pathlib.Path) -> pathlib.Path:
  for cand in (folder / FACE_MODEL, folder / "renderer" / FACE_MODEL):
    if cand.is_file():
      return cand
  raise CheckpointMismatch(
    f"{folder}: no {FACE_MODEL} (the person's face model); `jaxtalk train renderer` copies"
    " it from the dataset into its workdir; copy DATASET/face_model.npz there"
  )


def _saved_config(workdir: pathlib.Path) -> dict:
  if not (workdir / "checkpoints").is_dir():
    raise CheckpointMismatch(f"{workdir}: no checkpoints folder (is this a training workdir?)")
  with model_io.Checkpoints(workdir, 1) as ckpt:
    return ckpt.read_meta().get("config", {})


def stage_from_meta(meta: dict) -> int:
  """2 when a renderer checkpoint took stage-2 steps (its smoothing was trained with the
  renderer), else 1: from its metadata's step and stage1_steps. (Its "stage" entry is the stage
  of the *next* step, 2 already at the boundary checkpoint; used only when those are absent.)"""
  if "step" in meta and "stage1_steps" in meta:
    return 2 if int(meta["step"]) > int(meta["stage1_steps"]) else 1
  return int(meta.get("stage", 1))


def trained_stage(workdir: pathlib.Path) -> int:
  """The stage the latest renderer checkpoint of a workdir was trained through."""
  with model_io.Checkpoints(workdir, 1) as ckpt:
    return stage_from_meta(ckpt.read_meta())


def restore_a2e_state(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> Any:
  """The audio2expression state of a workdir's best checkpoint (by validation), else latest."""
  with model_io.Checkpoints(workdir, cfg.train.keep) as ckpt:
    has_best = ckpt.best_loss() is not None
  return model_io.restore_a2e(cfg, workdir, best=has_best)


def load_models(
  folder: str | pathlib.Path,
  config: str | ml_collections.ConfigDict | None = None,
  overrides: Sequence[str] = (),
) -> Models:
  """Restores the renderer (latest checkpoint) and audio2expression (best, else latest).

  The config defaults to the shipped config the renderer was trained with; either way the
  model and data sections must equal the checkpoints' (CheckpointMismatch otherwise).
  """
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise CheckpointMismatch(f"{folder}: no such checkpoint folder")
  renderer_dir, a2e_dir = folder / "renderer", folder / "a2e"
  saved = _saved_config(renderer_dir)
  if isinstance(config, ml_collections.ConfigDict):
    cfg = config
  elif config is None and saved.get("name"):
    try:
      cfg = load_config(saved["name"], overrides)
    except JaxtalkError as e:
      raise CheckpointMismatch(
        f"{renderer_dir} was trained with config {saved['name']!r}, which is not a shipped"
        " config: pass the same --config file used for training"
      ) from e
  else:
    cfg = load_config(config, overrides)
  current = model_io.config_json(cfg)

  def a2e_part(c: dict) -> dict:
    # audio2expression depends on model.a2e and data only: renderer ablations share it.
    return {"model": {"a2e": c.get("model", {}).get("a2e")}, "data": c.get("data")}

  try:
    model_io.check_compatible(saved, current)
  except JaxtalkError as e:
    raise CheckpointMismatch(f"{renderer_dir}: {e}") from e
  try:
    model_io.check_compatible(a2e_part(_saved_config(a2e_dir)), a2e_part(current))
  except JaxtalkError as e:
    raise CheckpointMismatch(f"{a2e_dir}: {e}") from e
  face_model = FaceModel.from_arrays(np.load(_find_face_model(folder)))
  if face_model.expression_dim != cfg.data.expression_dim:
    raise CheckpointMismatch(
      f"the face model has {face_model.expression_dim} expression dims, the config"
      f" data.expression_dim={cfg.data.expression_dim}"
    )
  renderer_state = model_io.restore_renderer(cfg, renderer_dir)
  a2e_state = restore_a2e_state(cfg, a2e_dir)
  a2e_cal = model_io.load_a2e_calibration(a2e_dir, int(a2e_state.step), cfg.data.expression_dim)
  return Models(
    cfg, face_model, renderer_state, a2e_state, folder, trained_stage(renderer_dir), a2e_cal
  )


# ------------------------------------------------------------------------------ background


@dataclasses.dataclass
class Background:
  """A background video prepared once, reused for every audio."""

  frames_nhwc: np.ndarray  # full-resolution RGB uint8
  crops_nssc: np.ndarray  # (N, S, S, 3) uint8
  box: CropBox
  landmarks_n682: np.ndarray  # crop coordinates
  pose_n6: np.ndarray  # filtered over time (data.track_filter)
  mask_nss: np.ndarray  # uint8 mouth masks from the background's time-filtered landmarks
  fit_error_px: float  # mean reprojection error of the person's model, at 256 pixels
  # (N, P, 2) the mask polygons of the time-filtered landmarks (mask_nss is their raster)
  mask_points_np2: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(self.frames_nhwc.shape[0])


def _fill_missing(landmarks_tn2: np.ndarray, found_t: np.ndarray) -> np.ndarray:
  """Frames without a face take the landmarks of the nearest frame with one."""
  idx = np.flatnonzero(found_t)
  nearest = idx[np.abs(np.arange(len(found_t))[:, None] - idx[None]).argmin(1)]
  return landmarks_tn2[nearest]


def prepare_background(
  video: str | pathlib.Path, models: Models, *, use_cache: bool = True, say=print
) -> Background:
  cfg = models.config
  size = cfg.data.image_size
  track = video_track(video, cfg.data.landmark_backend, cfg.track, fps=cfg.data.fps,
                      use_cache=use_cache)  # fmt: skip
  missing = track.missing_frames()
  if missing.size > cfg.data.max_missing_fraction * track.num_frames:
    raise NoFaceError(
      f"{video}: no face in {missing.size} of {track.num_frames} frames; a background video needs"
      " the person's face in (nearly) every frame"
    )
  if missing.size:
    say(f"{video}: no face in {missing.size} frames; they reuse the nearest frame's landmarks")
  frames = read_frames(video, cfg.data.fps)
  n = min(len(frames), track.num_frames)
  frames, found = frames[:n], track.found_t[:n]
  box = config_crop_box(track.boxes_t4[:n], found, cfg.data)
  landmarks = _fill_missing(to_crop_coords(track.landmarks_tn2[:n], box, size), found)
  fit = fit_frames(models.face_model, landmarks, size)
  flt = TrackFilter.from_config(cfg)
  pose = filter_pose(fit.pose_t6, flt)  # the same filter as preprocessing
  error = float(np.mean(fit.error_t)) * 256.0 / size
  if error > MISMATCH_ERROR_PX:
    say(
      f"warning: {video}: the person's face model fits this video poorly (mean reprojection"
      f" error {error:.2f} px at 256; the person's own videos fit under {MISMATCH_ERROR_PX} px): is"
      " it the same person?"
    )
  crops = np.stack([crop_frame(f, box, size) for f in frames])
  polygons, masks = track_masks(landmarks, size, flt)  # the same function as preprocessing
  return Background(frames, crops, box, landmarks, pose, masks, error, polygons)


# ------------------------------------------------------------------------------ audio


def load_audio(path: str | pathlib.Path, cfg: ml_collections.ConfigDict) -> np.ndarray:
  samples = read_audio(path, cfg.data.sample_rate)
  if is_silent(samples, cfg.data.silence_db, cfg.data.sample_rate):
    raise AudioReadError(
      f"{path}: the audio is silent (below data.silence_db={cfg.data.silence_db} dBFS): no speech"
      " to drive the mouth"
    )
  return samples


class AudioFeatures:
  """The audio's log-mel (100 rows a second: small) and its per-frame windows on demand.

  `features[a:b]` is the `(b - a, W, n_mels)` windows of frames a .. b-1, so a long audio never
  holds all N windows at once. N = duration x fps (rounded).
  """

  def __init__(self, samples: np.ndarray, cfg: ml_collections.ConfigDict) -> None:
    d = cfg.data
    self.mel = log_mel(samples, d.sample_rate, d.n_mels, d.hop_ms, d.win_ms, d.mel_floor)
    self.n = int(round(len(samples) / d.sample_rate * d.fps))
    if self.n < 1:
      raise AudioReadError(f"the audio is shorter than one video frame ({len(samples)} samples)")
    self._args = (d.fps, d.hop_ms, d.audio_window)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, frames: slice) -> np.ndarray:
    start, stop, _ = frames.indices(self.n)
    fps, hop_ms, window = self._args
    return frame_windows(self.mel, max(0, stop - start), fps, hop_ms, window, start)


def audio_windows(samples: np.ndarray, cfg: ml_collections.ConfigDict) -> np.ndarray:
  """All (N, W, n_mels) log-mel windows, one per output frame (for short audio and tests)."""
  features = AudioFeatures(samples, cfg)
  return features[:]


def host_workers(cfg: ml_collections.ConfigDict) -> int:
  """Threads for the per-frame host work: infer.workers, 0 = one per core. The work that
  dominates releases the GIL: the numba kernels (rasteriser, paste region, blend, smoothing) and
  OpenCV's warps."""
  n = int(cfg.infer.get("workers", 0))
  return n if n > 0 else (os.cpu_count() or 1)


class LazyFrames:
  """Per-frame arrays made on demand by `make(t)` and kept only until `release(t)`: the shape
  renders and masks of a long audio are never all in memory. `sources`: the (LazyFrames, reach)
  that `make(t)` reads at t - reach .. t + reach, so `prefetch` makes those first."""

  def __init__(
    self,
    make,
    n: int,
    sources: Sequence[tuple[LazyFrames, int]] = (),
    inline: bool = False,
  ) -> None:
    self._make, self._n, self._memo, self._sources = make, n, {}, tuple(sources)
    # inline: `make` is a view or lookup, cheaper than a pool task (whose future and wake-ups
    # hold the GIL): prefetch makes the frames here
    self._inline = inline
    # the render thread makes frames while the consumer releases them: the memo is locked, the
    # making is not (two threads may make the same frame; either copy is the same)
    self._lock = threading.Lock()

  def prefetch(self, start: int, stop: int, pool=None) -> None:
    """Makes frames start .. stop-1 (clipped to the sequence) ahead of use, in parallel on
    `pool` (an Executor; None: here), their sources' frames first so none is made twice."""
    start, stop = max(start, 0), min(stop, self._n)
    for source, reach in self._sources:
      source.prefetch(start - reach, stop + reach, pool)
    with self._lock:
      todo = [t for t in range(start, stop) if t not in self._memo]
    parallel = pool is not None and len(todo) > 1 and not self._inline
    made = pool.map(self._make, todo) if parallel else map(self._make, todo)
    for t, value in zip(todo, made, strict=True):
      with self._lock:
        self._memo.setdefault(t, value)

  def __len__(self) -> int:
    return self._n

  def frame(self, t: int):
    with self._lock:
      if t in self._memo:
        return self._memo[t]
    value = self._make(t)
    with self._lock:
      return self._memo.setdefault(t, value)

  def __getitem__(self, frames: slice) -> np.ndarray:
    start, stop, _ = frames.indices(self._n)
    return np.stack([self.frame(t) for t in range(start, stop)])

  def windows(self, starts: Sequence[int], window: int) -> np.ndarray:
    """`(len(starts), window, ...)`: `take_window(self, s, window)` for each start, stacked,
    with each frame copied once (stacking windows of stacks copied each twice: the render
    thread's second largest cost, serial beside the renderer)."""
    last = self._n - 1
    first = np.asarray(self.frame(min(starts[0], last)))
    out = np.empty((len(starts), window, *first.shape), first.dtype)
    for b, s in enumerate(starts):
      for j in range(window):
        out[b, j] = self.frame(min(s + j, last))
    return out

  def release(self, before: int) -> None:
    with self._lock:
      for t in [t for t in self._memo if t < before]:
        del self._memo[t]


def predict_expressions(models: Models, audio_nwf) -> np.ndarray:
  """(N, E) expressions from N audio windows (an array or `AudioFeatures`), run in overlapping
  windows of a2e_train.seq_len frames, with the a2e's output calibration when it has one."""
  st = models.a2e_state
  expression = model_io.predict_a2e(models.config, st.params, st.data_stats, audio_nwf)
  cal = models.a2e_calibration
  return expression if cal is None else cal.apply(expression)


# ------------------------------------------------------------------------------ renderer


def shape_and_mask(
  models: Models, expression_e: np.ndarray, background: Background, bg_index: int
) -> np.ndarray:
  """`(S, S, 4)` uint8: the shape render of an expression on a background frame's head pose, and
  (channel 3) the mask: the background's mouth region united with the new mouth's."""
  size = models.config.data.image_size
  fm = models.face_model
  pose = background.pose_n6[bg_index]
  both = np.empty((size, size, 4), np.uint8)  # filled in place: no concatenated copy
  fm.render(expression_e, pose, size, out=both[..., :3])
  new_mask = rasterize_polygon(mask_polygon(fm.project(expression_e, pose, size)), size)
  np.maximum(background.mask_nss[bg_index], new_mask, out=both[..., 3])
  return both


def render_shapes(
  models: Models, expression_ne: np.ndarray, background: Background, bg_index_n: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """All shape renders (N, S, S, 3) and masks (N, S, S) at once (for short sequences, tests)."""
  both = np.stack([
    shape_and_mask(models, e, background, int(i)) for e, i in zip(expression_ne, bg_index_n)
  ])  # fmt: skip
  return both[..., :3], both[..., 3]


@functools.partial(jax.jit, static_argnames=("smoother",))
def _smoothing_weights(params, stats, expression_bte, *, smoother):
  variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  return smoother.apply(variables, expression_bte, train=False, method="weights")


def smoothing_weights(models: Models, expression_ne: np.ndarray) -> np.ndarray | None:
  """(N, K) float32 weights of the trained smoothing over the WHOLE expression sequence, or
  None for a renderer trained through stage 1 only (its checkpoint says which, `Models.stage`).

  Computed once for the whole sequence, so a frame's weights never depend on where a renderer
  window happens to start (in windows they did: each window's edge frames were padded)."""
  if models.stage < 2:
    return None
  st = models.renderer_state
  smoother = smoother_from_config(models.config)
  expression_bte = jnp.asarray(expression_ne, jnp.float32)[None]
  w = _smoothing_weights(
    st.g_params["smoothing"], st.g_stats["smoothing"], expression_bte, smoother=smoother
  )
  return np.asarray(w[0], np.float32)


def smooth_lazy(shapes, weights_nk: np.ndarray | None):
  """Eq. 1 over the whole sequence, frame by frame on demand: frame t is
  sum_k W[t, k] shapes[clip(t + k - r, 0, N - 1)] (edge padding only at the sequence's ends),
  float32 in [0, 255]. `shapes` is an array or `LazyFrames`; None weights: unsmoothed."""
  n = len(shapes)
  lazy = isinstance(shapes, LazyFrames)

  def frame(t: int) -> np.ndarray:
    return np.asarray(shapes.frame(t) if lazy else shapes[t])

  if weights_nk is None:
    return LazyFrames(lambda t: frame(t).astype(np.float32), n, [(shapes, 0)] if lazy else [])
  r = weights_nk.shape[1] // 2

  def make(t: int) -> np.ndarray:
    taps = [frame(min(max(t + k - r, 0), n - 1)) for k in range(weights_nk.shape[1])]
    return weighted_frames(taps, weights_nk[t])

  return LazyFrames(make, n, [(shapes, r)] if lazy else [])


def inference_mesh(cfg: ml_collections.ConfigDict) -> jax.sharding.Mesh | None:
  """The (data=1, seq=infer.mesh_seq) mesh of sequence-sharded inference; None: one device."""
  n = int(cfg.infer.get("mesh_seq", 1))
  if n <= 1:
    return None
  devices = jax.devices()
  if n > len(devices):
    raise ConfigError(f"infer.mesh_seq={n} needs {n} devices; {len(devices)} found")
  if cfg.infer.window % n:
    raise ConfigError(f"infer.window={cfg.infer.window} must be a multiple of infer.mesh_seq={n}")
  return sh.make_mesh(1, n, devices=devices[:n])


def make_generate(models: Models):
  """The compiled generator: (B, T) windows of uint8 crops, shapes (uint8, or float32 already
  smoothed, see `smooth_lazy`), masks, expressions and audio -> uint8 frames. One compile per
  window shape, reused for every window and audio. The smoothing is not in here: it runs over
  the whole sequence before windowing (`smoothing_weights`).

  With infer.mesh_seq = n > 1 the window's T frames are split over n devices (the `seq` axis,
  roles from jaxtalk/sharding.py): each device encodes and decodes its T/n frames, and the
  dependency module's attention over all T*p*p tokens runs as ring attention, so a window of a
  whole clip needs 1/n of the activations per device."""
  cfg = models.config
  mesh = inference_mesh(cfg)
  shardings = {}
  if mesh is not None:
    shardings = dict(token_sharding=sh.named(mesh, sh.TOKENS),
                     frame_sharding=sh.named(mesh, sh.FRAMES))  # fmt: skip
  rm = model_io.renderer_models(cfg, **shardings)
  stage = 1  # stage 1's forward: the renderer alone, on shapes smoothed beforehand

  def generate(st, crops, shapes, masks, expression, audio):
    frames = model_io.to_signed_unit(crops)
    background = model_io.erode(frames, masks.astype(jnp.float32))
    fake, _, _ = model_io.generator_forward(
      st.g_params, st.g_stats, rm, background, model_io.to_signed_unit(shapes), expression,
      model_io.normalise_audio(audio, st.data_stats, cfg.train.audio_norm),
      stage=stage, train=False,
    )  # fmt: skip
    return model_io.to_uint8(fake)

  if mesh is None:
    return jax.jit(generate)
  frames_s, replicated = sh.named(mesh, sh.FRAMES), sh.named(mesh, sh.REPLICATED)
  return jax.jit(generate, in_shardings=(replicated, *[frames_s] * 5), out_shardings=frames_s)


def generate_crops(
  models: Models,
  generate,
  crops,
  shapes,
  masks,
  expression,
  audio,
  progress: bool = True,
  pool: concurrent.futures.Executor | None = None,
) -> Iterator[np.ndarray]:
  """Generated crops (S, S, 3) uint8, in order, streamed window batch by window batch. Inputs
  are arrays or anything sliceable by frames (`AudioFeatures`, `LazyFrames`; these are made on
  `pool` when given). Batch k+1 is prepared and dispatched before batch k is handed on, so the
  host's work on one batch overlaps the renderer's on the next."""
  cfg = models.config
  n, window, overlap = len(expression), cfg.infer.window, cfg.infer.overlap
  batch = max(1, cfg.infer.batch_windows)
  starts = window_starts(n, window, overlap)
  st = models.renderer_state

  def dispatch(group: list[int]):
    for x in (crops, shapes, masks):
      if isinstance(x, LazyFrames):
        x.prefetch(group[0], group[-1] + window, pool)
    # The last batch is padded with its own last window: one compiled shape for all calls.
    padded = group + [group[-1]] * (batch - len(group))
    arrays = [
      x.windows(padded, window)
      if isinstance(x, LazyFrames)
      else np.stack([take_window(x, s, window) for s in padded])
      for x in (crops, shapes, masks, expression, audio)
    ]
    return generate(st, *arrays), len(group)  # asynchronous: returns before the result is ready

  def outputs():
    bar = tqdm(total=len(starts), desc="render", unit="window", disable=not progress)
    pending = None
    for b in [*range(0, len(starts), batch), None]:
      running = dispatch(starts[b : b + batch]) if b is not None else None
      if pending is not None:
        out, k = pending
        bar.update(k)
        yield from np.asarray(out)[:k]
      pending = running
    bar.close()

  seam = str(cfg.infer.get("seam", "crossfade"))
  for frame in blend_stream(outputs(), starts, n, window, seam):
    # the centre seam hands on the renderer's uint8 frames as they are (views of its batch)
    yield frame if frame.dtype == np.uint8 else np.clip(np.round(frame), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ one audio


@dataclasses.dataclass
class Result:
  output: pathlib.Path
  frames: int
  seconds: float
  side_by_side: pathlib.Path | None = None
  # wall seconds from the call to the first frame handed to the encoder, to the last, and to
  # the closed file: the latency before frames flow and the encoder's flush after them
  first_frame_s: float = float("nan")
  last_frame_s: float = float("nan")
  total_s: float = float("nan")


def paste_alpha(mask_ss: np.ndarray, size: int, feather: float) -> np.ndarray:
  """The lower-face mask (a raster) grown and feathered by `feather` x crop size."""
  px = max(1, int(round(feather * size)))
  return feathered_alpha(mask_ss, grow=px, blur=2 * px + 1)


def paste_region(polygon_p2: np.ndarray, size: int, feather: float) -> np.ndarray:
  """The paste region: the background frame's (time-filtered) mouth-mask polygon grown and
  feathered by `feather` x crop size, as a continuous function of the polygon
  (`polygon_alpha`), so it neither depends on the audio nor flickers on a still head."""
  px = max(1, int(round(feather * size)))
  return polygon_alpha(polygon_p2, size, grow=px, blur=2 * px + 1)


@dataclasses.dataclass
class Frame:
  """One output frame and what made it (for side-by-side videos and tests)."""

  index: int
  image_hwc: np.ndarray  # the full-resolution output frame
  crop_ssc: np.ndarray  # the generated crop
  shape_f32_ssc: np.ndarray  # the shape render it was generated from (smoothed, in stage 2)
  alpha_ss: np.ndarray  # the feathered paste mask, crop pixels
  background_index: int

  @property
  def shape_ssc(self) -> np.ndarray:
    """The shape render as a uint8 image, made when asked: only side-by-side videos draw it
    (made for every frame, its rounding was ~5 % of the host's GIL time per frame)."""
    return np.clip(np.round(self.shape_f32_ssc), 0, 255).astype(np.uint8)


def synth_frames(
  models: Models,
  background: Background,
  samples: np.ndarray,
  *,
  generate=None,
  progress: bool = True,
) -> Iterator[Frame]:
  """Output frames for mono audio `samples` (at data.sample_rate), streamed in order; the
  host's per-frame work runs on `host_workers(cfg)` threads."""
  cfg = models.config
  size = cfg.data.image_size
  audio = AudioFeatures(samples, cfg)
  n = len(audio)
  bg_index = ping_pong(n, background.num_frames)
  expression = predict_expressions(models, audio)
  both = LazyFrames(
    lambda t: shape_and_mask(models, expression[t], background, int(bg_index[t])), n
  )
  raw_shapes = LazyFrames(lambda t: both.frame(t)[..., :3], n, [(both, 0)], inline=True)
  weights = smoothing_weights(models, expression)
  shapes = smooth_lazy(raw_shapes, weights)
  masks = LazyFrames(lambda t: both.frame(t)[..., 3], n, [(both, 0)], inline=True)
  crops = LazyFrames(lambda t: background.crops_nssc[bg_index[t]], n, inline=True)
  generate = generate or make_generate(models)
  box = np.array([background.box.x0, background.box.y0, background.box.side], np.float64)
  reach = 0 if weights is None else weights.shape[1] // 2  # raw frames a smoothed one reads

  def release(t: int) -> None:  # frame t is out: what only it and earlier frames read can go
    for lazy in (shapes, masks, crops):
      lazy.release(t + 1)
    for lazy in (both, raw_shapes):
      lazy.release(t + 1 - reach)

  def final(t: int, crop: np.ndarray) -> Frame:
    i = int(bg_index[t])
    if background.mask_points_np2 is not None:
      alpha = paste_region(background.mask_points_np2[i], size, cfg.infer.feather)
    else:
      alpha = paste_alpha(background.mask_nss[i], size, cfg.infer.feather)
    image = paste(background.frames_nhwc[i], crop, alpha, box)
    return Frame(t, image, crop, shapes.frame(t), alpha, i)

  workers = host_workers(cfg)
  ahead = 2 * workers  # frames being pasted at once, handed on in order
  with contextlib.ExitStack() as stack:
    pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(workers, "host"))
    gen = generate_crops(models, generate, crops, shapes, masks, expression, audio, progress, pool)
    # The render (its shape renders on the pool, dispatch, fetch, window blend) runs ahead in a
    # thread of its own while the pool pastes the frames before: the two used to take turns.
    # Closed (its thread stopped) before the pool shuts down.
    rendered = stack.enter_context(contextlib.closing(read_ahead(gen, ahead)))
    pasting: collections.deque = collections.deque()
    for t, crop in enumerate(rendered):
      pasting.append(pool.submit(final, t, crop))
      while len(pasting) > ahead or (pasting and pasting[0].done()):
        yield (f := pasting.popleft().result())
        release(f.index)
    while pasting:
      yield (f := pasting.popleft().result())
      release(f.index)


def read_ahead(items: Iterator, depth: int) -> Iterator:
  """`items`, computed up to `depth` ahead in a thread of their own; an exception there is
  raised here, in order; closing this generator stops the thread at its next item."""
  queue: collections.deque = collections.deque()
  ready = threading.Condition()
  stop = False
  done = object()

  def produce() -> None:
    try:
      for item in items:
        with ready:
          ready.wait_for(lambda: stop or len(queue) < depth)
          if stop:
            return
          queue.append((item, None))
          ready.notify_all()
    except BaseException as e:  # noqa: BLE001 (re-raised in the consumer)
      with ready:
        queue.append((None, e))
        ready.notify_all()
      return
    with ready:
      queue.append((done, None))
      ready.notify_all()

  thread = threading.Thread(target=produce, name="read_ahead", daemon=True)
  thread.start()
  try:
    while True:
      with ready:
        ready.wait_for(lambda: queue)
        item, error = queue.popleft()
        ready.notify_all()
      if error is not None:
        raise error
      if item is done:
        return
      yield item
  finally:
    with ready:
      stop = True
      ready.notify_all()
    thread.join()


def synthesize(
  models: Models,
  background: Background,
  audio_path: str | pathlib.Path,
  output: str | pathlib.Path,
  *,
  generate=None,
  side_by_side: str | pathlib.Path | None = None,
  progress: bool = True,
) -> Result:
  """One talking-face video for one audio file over a prepared background: an H.264 mp4 with
  the input audio (mono, data.sample_rate; A/V in sync by construction)."""
  t0 = time.perf_counter()
  cfg = models.config
  samples = load_audio(audio_path, cfg)
  fps, sr = cfg.data.fps, cfg.data.sample_rate
  output = pathlib.Path(output)
  first = last = float("nan")
  sbs = pathlib.Path(side_by_side) if side_by_side is not None else None
  with contextlib.ExitStack() as stack:
    # x264 in processes of their own: in this one it would wait on the GIL held by the paste
    # threads (EncoderProcess)
    x264 = {"crf": cfg.infer.x264_crf, "preset": cfg.infer.x264_preset}
    writer = stack.enter_context(EncoderProcess(output, fps, samples, sr, **x264))
    panel_writer = (
      stack.enter_context(EncoderProcess(sbs, fps, samples, sr, **x264)) if sbs else None
    )

    def write(f: Frame) -> None:
      writer.write(f.image_hwc)
      if panel_writer is not None:
        real = background.crops_nssc[f.background_index]
        panels = [real, f.crop_ssc, f.shape_ssc]
        panel_writer.write(labelled_panels(panels, ("real", "generated", "shape render")))

    # Frames go to the encoders from a thread of their own, at most `ahead` frames behind
    # (bounded memory); an error there surfaces here at the next frame or at the end.
    encoder = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1, "encoder-feed"))
    queued: collections.deque = collections.deque()
    ahead = 32
    for f in synth_frames(models, background, samples, generate=generate, progress=progress):
      queued.append(encoder.submit(write, f))
      if f.index == 0:
        first = time.perf_counter() - t0
      while len(queued) > ahead or (queued and queued[0].done()):
        queued.popleft().result()
    last = time.perf_counter() - t0
    while queued:
      queued.popleft().result()
  total = time.perf_counter() - t0
  return Result(output, writer.frames, len(samples) / sr, sbs, first, last, total)
