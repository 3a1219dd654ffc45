"""The Grain input pipeline: random windows of T consecutive frames from the dataset shards.

    clips (memory-mapped .npy, docs/dataset_format.md)
      -> the held-out tail of each clip (the dataset's holdout split, `Dataset.train_frames`)
         is dropped here, so no held-out frame reaches training or validation
      -> segments: each clip split into a train part and a validation part (split_segments)
      -> WindowSource: one element per window start, a window never crosses a clip boundary
      -> MapDataset: this host's slice (process_index::process_count) -> shuffle(seed)
         -> repeat -> batch(global_batch / process_count)
      -> IterDataset (reader threads; worker processes when train.workers > 0)

A window is a dict of numpy arrays, sliced from the memmaps and nothing else: uint8 images
stay uint8 on the host (4x less to copy and transfer); the train step converts on device.

    frames       uint8   (B, T, S, S, 3)
    shape        uint8   (B, T, S, S, 3)
    mask         uint8   (B, T, S, S)
    mask_points  float32 (B, T, P, 2)
    expression   float32 (B, T, E)
    audio        float32 (B, T, W, 80)

audio2expression trains on longer windows of (audio, expression) only (A2E_KEYS).

Determinism: the element order is a pure function of (seed, dataset, host slice); the
iterator's state (`get_state()`, a small JSON dict) goes into every checkpoint and
`set_state()` continues exactly where it stopped, with or without worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import grain
import numpy as np

from jaxtalk.data.dataset import CLIPS_DIR, Dataset, DatasetError, open_dataset
from jaxtalk.errors import ConfigError
from jaxtalk.metrics.articulation import mouth_aperture

RENDERER_KEYS = ("frames", "shape", "mask", "mask_points", "expression", "audio")
A2E_KEYS = ("audio", "expression")


# ----------------------------------------------------------------------------------------------
# Reading the shards. Only clip names, lengths and memmaps are needed here.


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """A clip's name, folder and length; `train_frames` of its first frames may be used for
  training and validation (None: all of them), the rest is the dataset's held-out split."""

  name: str
  path: pathlib.Path
  num_frames: int
  train_frames: int | None = None

  @property
  def usable_frames(self) -> int:
    return self.num_frames if self.train_frames is None else self.train_frames


def open_data(root: str | pathlib.Path) -> Dataset:
  """The dataset (jaxtalk.data.dataset.open_dataset; its errors are JaxtalkErrors)."""
  return open_dataset(root)


def list_clips(root: str | pathlib.Path | Dataset) -> list[ClipInfo]:
  """The finished clips of a dataset, sorted by name, with their training frame counts."""
  ds = root if isinstance(root, Dataset) else open_data(root)
  return [
    ClipInfo(n, ds.path / CLIPS_DIR / n, ds.num_frames(n), ds.train_frames(n))
    for n in sorted(ds.clip_names)
  ]


def audio_stats(ds: Dataset, clip_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Per-mel-bin mean and std of the given clips' whole log-mel (`mel`).

  The audio encoders expect standardised inputs and the dataset stores raw log-mel; these
  statistics, from the training clips only, live in the train state (`data_stats`) and are
  applied on device, so a checkpoint carries what inference needs to feed the model.
  Only the training part of each clip counts (its held-out tail is left out, see
  `Dataset.train_frames`).
  """
  total = total_sq = None
  count = 0
  mel_per_frame = 1000.0 / float(ds.manifest.get("mel_hop_ms", 10.0)) / ds.fps
  for name in clip_names:
    clip = ds.clip(name)
    keep = ds.train_frames(name)
    if "mel" in clip:
      a = clip["mel"]
      if keep < clip.num_frames:  # mel row m of the clip describes frame m / mel_per_frame
        a = a[: int(np.floor(keep * mel_per_frame + 0.5))]
    else:
      a = clip["audio"][:keep]
    if not len(a):
      continue
    x = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
    total = x.sum(0) if total is None else total + x.sum(0)
    total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
    count += x.shape[0]
  if not count:
    raise DatasetError(f"{ds.path}: no audio to compute feature statistics from")
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
  return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Train / validation split.


@dataclasses.dataclass(frozen=True)
class Segment:
  """Frames [start, stop) of one clip."""

  clip: str
  start: int
  stop: int

  @property
  def length(self) -> int:
    return self.stop - self.start


def split_segments(
  clips: Sequence[ClipInfo], val_fraction: float, seq_len: int
) -> tuple[list[Segment], list[Segment], str]:
  """(train, val, how): held-out validation by clip.

  Only each clip's first `usable_frames` frames take part (the dataset's holdout split: the
  frames after them are for evaluation and reach neither training nor validation). Two or
  more clips: the last round(val_fraction * n) clips (at least one) in name order are
  validation. One clip: its last ceil(val_fraction * n) frames (at least seq_len) are, when the
  rest still holds a window; otherwise there is no validation split. `how` says which in words.
  """
  held = sum(c.num_frames - c.usable_frames for c in clips)
  note = f"; {held} frames of the holdout split left out" if held else ""
  # each clip cut to its training frames: nothing below can reach a held-out frame
  lengths = {c.name: c.usable_frames for c in clips}
  usable = [c for c in clips if lengths[c.name] >= seq_len]
  if not usable:
    longest = max(lengths.values(), default=0)
    raise DatasetError(
      f"no clip has {seq_len} frames for a training window (longest training part: {longest}); "
      "lower the seq_len or the holdout, or add longer clips"
    )
  if val_fraction <= 0:
    train = [Segment(c.name, 0, lengths[c.name]) for c in usable]
    return train, [], "no validation (val_fraction=0)" + note
  if len(usable) >= 2:
    n_val = min(len(usable) - 1, max(1, round(val_fraction * len(usable))))
    train = [Segment(c.name, 0, lengths[c.name]) for c in usable[:-n_val]]
    val = [Segment(c.name, 0, lengths[c.name]) for c in usable[-n_val:]]
    return train, val, f"{len(val)} of {len(usable)} clips held out for validation" + note
  c = usable[0]
  n = lengths[c.name]
  n_val = max(seq_len, math.ceil(val_fraction * n))
  if n - n_val < seq_len:
    return (
      [Segment(c.name, 0, n)],
      [],
      (
        f"one clip of {n} training frames: too short to hold out a validation tail of "
        f"{n_val} frames; no validation" + note
      ),
    )
  cut = n - n_val
  return (
    [Segment(c.name, 0, cut)],
    [Segment(c.name, cut, n)],
    (f"one clip: its last {n_val} frames held out for validation" + note),
  )


# ----------------------------------------------------------------------------------------------
# The window source.


class WindowSource:
  """Random-access source of windows: element i is the i-th (segment, start) pair.

  Windows start every `stride` frames and end inside their segment, so none crosses a clip
  boundary (or the train/validation cut). `repeats` (one count >= 1 per window, optional) makes
  window w appear repeats[w] times, consecutively, so a shuffled stream draws it that much more
  often (`mouth_motion_repeats`). The Dataset opens memmaps lazily per process and pickles
  without them, so the source goes cheaply to Grain worker processes (which then share the page
  cache).
  """

  def __init__(
    self,
    data: str | pathlib.Path | Dataset,
    segments: Sequence[Segment],
    seq_len: int,
    keys: Sequence[str] = RENDERER_KEYS,
    stride: int = 1,
    repeats: Sequence[int] | np.ndarray | None = None,
  ):
    self.data = data if isinstance(data, Dataset) else open_data(data)
    self.segments = list(segments)
    self.seq_len = int(seq_len)
    self.keys = tuple(keys)
    self.stride = int(stride)
    counts = [max(0, (s.length - self.seq_len) // self.stride + 1) for s in self.segments]
    self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    missing = {s.clip for s in self.segments} - set(self.data.clip_names)
    if missing:
      raise DatasetError(f"clips not in {self.data.path}: {sorted(missing)}")
    for s in self.segments:
      if s.stop > self.data.num_frames(s.clip) or s.start < 0:
        raise DatasetError(f"segment {s} outside clip {s.clip}")
    self._window_of = None  # element -> window, when windows repeat
    if repeats is not None:
      repeats = np.asarray(repeats, np.int64)
      if repeats.shape != (self.num_windows,) or (repeats < 1).any():
        raise ValueError(f"repeats: one count >= 1 per window ({self.num_windows}), got {repeats}")
      self._window_of = np.repeat(np.arange(self.num_windows), repeats)

  @property
  def num_windows(self) -> int:
    """Distinct windows (each may appear several times: `repeats`)."""
    return int(self._offsets[-1])

  def __len__(self) -> int:
    return self.num_windows if self._window_of is None else int(self._window_of.size)

  def window(self, w: int) -> tuple[str, int]:
    """(clip name, first frame) of distinct window `w`."""
    if not 0 <= w < self.num_windows:
      raise IndexError(f"window {w} out of range [0, {self.num_windows})")
    seg = int(np.searchsorted(self._offsets, w, side="right")) - 1
    s = self.segments[seg]
    return s.clip, s.start + (w - int(self._offsets[seg])) * self.stride

  def locate(self, index: int) -> tuple[str, int]:
    """(clip name, first frame) of element `index`."""
    if not 0 <= index < len(self):
      raise IndexError(f"element {index} out of range [0, {len(self)})")
    return self.window(index if self._window_of is None else int(self._window_of[index]))

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    name, start = self.locate(int(index))
    clip = self.data.clip(name)  # memmaps opened once per process (the Dataset pickles without)
    # np.array copies the slice out of the page cache: the only host work per window
    return {k: np.array(clip[k][start : start + self.seq_len]) for k in self.keys}

  def __repr__(self) -> str:
    repeated = "" if self._window_of is None else f" repeated to {len(self)}"
    return (
      f"WindowSource({self.data.path.name}, {len(self.segments)} segments, "
      f"{self.num_windows} windows{repeated})"
    )


def mouth_motion_repeats(source: WindowSource, boost: float) -> np.ndarray:
  """How often each window of `source` enters the training stream (train.mouth_oversample):
  1 + round(boost * m / mean(m)), m = the window's mouth motion, the range (max - min) of the
  mouth aperture (inner-lip opening / mouth width of the dataset's tracked landmarks) over its
  frames. boost 0: once each. Why: the mouth is closed or still in most frames, so a uniformly
  sampled L1-trained renderer sees the wide openings it must draw rarely and draws them
  half-open (docs/benchmarks.md, issue 13)."""
  if boost < 0:
    raise ConfigError(f"train.mouth_oversample must be >= 0, got {boost}")
  n = source.num_windows
  if boost == 0 or n == 0:
    return np.ones(n, np.int64)
  aperture = {
    name: np.nan_to_num(mouth_aperture(np.asarray(source.data.clip(name)["landmarks"])))
    for name in {s.clip for s in source.segments}
  }
  motion = np.empty(n)
  for w in range(n):
    name, start = source.window(w)
    a = aperture[name][start : start + source.seq_len]
    motion[w] = a.max() - a.min()
  mean = motion.mean()
  if mean <= 0:  # nothing moves: nothing to prefer
    return np.ones(n, np.int64)
  return 1 + np.floor(boost * motion / mean + 0.5).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Datasets and iterators.


def host_batch_size(global_batch: int, process_count: int) -> int:
  if global_batch % process_count:
    raise DatasetError(
      f"batch size {global_batch} does not divide over {process_count} hosts; make it a multiple"
    )
  return global_batch // process_count


def train_dataset(
  source: WindowSource,
  *,
  global_batch: int,
  seed: int,
  workers: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  read_threads: int = 2,
  prefetch: int = 2,
) -> grain.IterDataset:
  """Shuffled, repeated, batched windows for this host.

  Every host slices a disjoint subset of the windows (process_index::process_count) and batches
  global_batch / process_count of them; the shuffle is seeded identically on every host.
  """
  if len(source) == 0:
    raise DatasetError(f"{source}: no window of {source.seq_len} frames in the training split")
  batch = host_batch_size(global_batch, process_count)
  ds = grain.MapDataset.source(source)
  if process_count > 1:
    ds = ds[process_index::process_count]
    if len(ds) == 0:
      raise DatasetError(f"host {process_index}: no windows left after slicing over hosts")
  ds = ds.shuffle(seed=seed).repeat(None).batch(batch, drop_remainder=True)
  # a small read-ahead: the default buffer (500 batches) would hold gigabytes of 256x256 clips
  it = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=max(1, read_threads), prefetch_buffer_size=max(1, prefetch))
  )
  if workers > 0:
    _absl_flags_ready()
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)
    )
  return it


def _absl_flags_ready() -> None:
  # Grain's worker processes read absl flags (profiling switches); outside an absl app nothing
  # parses them, so mark them parsed (at their defaults), as Grain's own tests do.
  from absl import flags  # noqa: PLC0415

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def eval_batches(
  source: WindowSource,
  *,
  global_batch: int,
  max_batches: int,
  process_index: int = 0,
  process_count: int = 1,
) -> list[dict[str, np.ndarray]]:
  """A fixed list of validation batches (no shuffle; evenly spread over the windows), so every
  evaluation sees the same data. A source with fewer windows than one batch still makes one,
  its windows repeated (evenly: 1 window x 4, 2 x 2; 3 windows fill 4 slots as 0, 1, 1, 2):
  a short validation tail (Obama's 40 frames at seq_len 32 are one window) still selects the
  checkpoint. Empty only when the source has no window."""
  batch = host_batch_size(global_batch, process_count)
  n = len(source)
  n_batches = min(max_batches, max(1, n // global_batch)) if n else 0
  if n_batches <= 0:
    return []
  idx = np.linspace(0, n - 1, n_batches * global_batch).round().astype(np.int64)
  out = []
  for b in range(n_batches):
    chunk = idx[b * global_batch : (b + 1) * global_batch]
    chunk = chunk[process_index * batch : (process_index + 1) * batch]
    items = [source[int(i)] for i in chunk]
    out.append({k: np.stack([it[k] for it in items]) for k in items[0]})
  return out


def iterator_state(it: grain.DatasetIterator) -> dict:
  """The iterator's position, JSON-serialisable (round-trips through json for safety)."""
  return json.loads(json.dumps(it.get_state()))


def window_index_stream(n_windows: int, *, seed: int, batch_size: int) -> Iterator[np.ndarray]:
  """The window indices a seeded train_dataset visits, batch by batch (for tests and tools)."""
  ds = grain.MapDataset.source(list(range(n_windows))).shuffle(seed=seed).repeat(None)
  ds = ds.batch(batch_size, drop_remainder=True)
  for b in ds.to_iter_dataset():
    yield np.asarray(b)


def describe_batch(batch: Mapping[str, np.ndarray]) -> str:
  return ", ".join(f"{k} {v.dtype}{tuple(v.shape)}" for k, v in batch.items())
