"""Video reading and writing through PyAV: the one place that knows about codecs.

Frames are RGB uint8 arrays `frame_hwc`; a clip is `frames_thwc`. Reading can resample to a
target frame rate by presentation time (nearest earlier frame), which also regularises
variable-frame-rate input. Every failure to open or decode becomes a `VideoReadError` that
names the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import os
import pathlib
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection

import av
import numpy as np

from jaxtalk.errors import VideoReadError


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  path: str
  width: int
  height: int
  fps: float
  duration_s: float
  has_audio: bool
  variable_frame_rate: bool = False


def _open(path: str | os.PathLike) -> av.container.InputContainer:
  path = str(path)
  if not os.path.exists(path):
    raise VideoReadError(f"{path}: no such file")
  if os.path.isdir(path):
    raise VideoReadError(f"{path}: is a folder, not a video file")
  try:
    container = av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
    raise VideoReadError(f"{path}: cannot be read as a video file ({e})") from e
  if not container.streams.video:
    container.close()
    raise VideoReadError(f"{path}: has no video stream")
  return container


def probe_video(path: str | os.PathLike) -> VideoInfo:
  """Stream facts without decoding every frame (VFR is judged from the first 100 packets)."""
  with _open(path) as container:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    duration = float(container.duration / av.time_base) if container.duration else 0.0
    pts = []
    for i, packet in enumerate(container.demux(stream)):
      if packet.pts is not None:
        pts.append(packet.pts)
      if i >= 100:
        break
    # Packets come in decode order (B-frames reorder them); presentation order is sorted pts.
    deltas = np.diff(np.sort(np.asarray(pts, dtype=np.float64)))
    vfr = bool(
      deltas.size > 2 and np.median(deltas) > 0 and np.std(deltas) > 0.1 * np.median(deltas)
    )
    return VideoInfo(
      path=str(path),
      width=stream.codec_context.width,
      height=stream.codec_context.height,
      fps=fps,
      duration_s=duration,
      has_audio=bool(container.streams.audio),
      variable_frame_rate=vfr,
    )


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[np.ndarray]:
  """Yields RGB uint8 frames, resampled to `fps` by timestamp when given (None: as stored).

  Output frame i shows the latest source frame whose time (relative to the first frame) is at or
  before i / fps, so a 30 fps or variable-rate source becomes an even 25 fps clip of the same
  duration; the last source frame is held for its own duration.
  """
  container = _open(path)
  eps = 1e-6
  try:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate
    src_dt = 1.0 / float(rate) if rate else (1.0 / fps if fps else 0.04)
    t0, prev, last_t, index = None, None, 0.0, 0
    for n, frame in enumerate(container.decode(stream)):
      image = frame.to_ndarray(format="rgb24")
      if fps is None:
        yield image
        continue
      t = float(frame.time) if frame.time is not None else n * src_dt
      t0 = t if t0 is None else t0
      t -= t0
      while prev is not None and index / fps < t - eps:
        yield prev
        index += 1
      prev, last_t = image, t
    if fps is not None and prev is not None:
      while index / fps < last_t + src_dt - eps:
        yield prev
        index += 1
  except av.error.FFmpegError as e:
    raise VideoReadError(f"{path}: corrupt video data ({e})") from e
  finally:
    container.close()


def read_frames(path: str | os.PathLike, fps: float | None = None) -> np.ndarray:
  """The whole clip as `frames_thwc` uint8 (use `iter_frames` for long videos)."""
  frames = list(iter_frames(path, fps))
  if not frames:
    raise VideoReadError(f"{path}: no decodable video frames")
  return np.stack(frames)


# x264's presets, fastest first: each slower one searches more for the same quality (crf)
X264_PRESETS = (
  "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
  "placebo",
)  # fmt: skip


def check_x264(crf: int, preset: str) -> None:
  """A clear error for x264 settings it would reject (or ignore) only once the first frame is
  encoded."""
  if preset not in X264_PRESETS:
    raise ValueError(f"x264 preset must be one of {', '.join(X264_PRESETS)}; got {preset!r}")
  if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
    raise ValueError(f"x264 crf must be an integer from 0 (lossless) to 51; got {crf!r}")


class VideoWriter:
  """An H.264 mp4 written frame by frame (AAC audio, mono float in [-1, 1], when given).

  Use as a context manager; the audio track is written when the writer closes.
  """

  def __init__(
    self,
    path: str | os.PathLike,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    preset: str = "medium",
  ) -> None:
    if audio is not None and sample_rate is None:
      raise ValueError("sample_rate is required with audio")
    check_x264(crf, preset)
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._rate = fractions.Fraction(fps).limit_denominator(1001)
    self._audio, self._sample_rate, self._crf, self._preset = audio, sample_rate, crf, preset
    self._container = av.open(str(self.path), mode="w")
    self._vstream = None
    self._astream = None
    if audio is not None:
      self._astream = self._container.add_stream("aac", rate=int(sample_rate))
      self._astream.layout = "mono"
    self.frames = 0

  def write(self, frame_hwc: np.ndarray) -> None:
    frame_hwc = np.ascontiguousarray(frame_hwc, dtype=np.uint8)
    vs = self._vstream
    if vs is None:
      h, w = frame_hwc.shape[:2]
      vs = self._vstream = self._container.add_stream("libx264", rate=self._rate)
      # yuv420p needs even sizes; pad by one pixel rather than resample.
      vs.width, vs.height = w + w % 2, h + h % 2
      vs.pix_fmt = "yuv420p"
      vs.options = {"crf": str(self._crf), "preset": self._preset}
    if frame_hwc.shape[0] != vs.height or frame_hwc.shape[1] != vs.width:
      pad = ((0, vs.height - frame_hwc.shape[0]), (0, vs.width - frame_hwc.shape[1]), (0, 0))
      frame_hwc = np.pad(frame_hwc, pad, mode="edge")
    for packet in vs.encode(av.VideoFrame.from_ndarray(frame_hwc, format="rgb24")):
      self._container.mux(packet)
    self.frames += 1

  def close(self) -> None:
    if self._container is None:
      return
    try:
      if self._vstream is None:
        raise ValueError("the video got no frames")
      for packet in self._vstream.encode():
        self._container.mux(packet)
      if self._astream is not None:
        samples = np.clip(np.asarray(self._audio, dtype=np.float32), -1.0, 1.0).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = int(self._sample_rate)
        # An explicit pts makes the encoder's priming delay negative pts, which the mp4 muxer
        # records as an edit list: decoders then drop it and the track starts at sample 0.
        frame.pts = 0
        frame.time_base = fractions.Fraction(1, int(self._sample_rate))
        for packet in [*self._astream.encode(frame), *self._astream.encode()]:
          self._container.mux(packet)
    finally:
      self._container.close()
      self._container = None

  def __enter__(self) -> VideoWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _encoder_main(inbox: Connection, outbox: Connection) -> None:
  """EncoderProcess's child: VideoWriter arguments, then frames, from `inbox` into a VideoWriter.
  A failure is reported on `outbox` at once; the child then keeps reading (and dropping) frames
  until the parent closes, so the parent never blocks on a full pipe. Its last message is the
  outcome: ("done", frames) or ("error", exception)."""
  error: BaseException | None = None
  writer = None

  def fail(e: BaseException) -> None:
    nonlocal error
    if error is None:
      error = e
      outbox.send(("error", _picklable(e)))

  try:
    writer = VideoWriter(*inbox.recv())
  except BaseException as e:  # noqa: BLE001
    fail(e)
  while True:
    try:
      shape = inbox.recv()
      data = None if shape is None else inbox.recv_bytes()
    except EOFError:  # the parent is gone (killed, interrupted): keep what was written
      break
    if shape is None:
      break
    if error is None:
      try:
        writer.write(np.frombuffer(data, np.uint8).reshape(shape))
      except BaseException as e:  # noqa: BLE001
        fail(e)
  if writer is not None:
    try:
      writer.close()
    except BaseException as e:  # noqa: BLE001
      fail(e)
  with contextlib.suppress(OSError):  # the parent may have taken the early report, or be gone
    outbox.send(("error", _picklable(error)) if error is not None else ("done", writer.frames))


def _picklable(e: BaseException) -> BaseException:
  """`e` itself when it survives pickling (to reach the parent), else its text."""
  try:
    pickle.loads(pickle.dumps(e))
    return e
  except Exception:  # noqa: BLE001
    return RuntimeError(f"{type(e).__name__}: {e}")


class EncoderProcess:
  """A VideoWriter in a process of its own: the same file, byte for byte, without the encoder
  sharing a GIL with the caller's threads.

  In-process, PyAV gives up and retakes the GIL several times per frame (colour conversion,
  x264, muxing); beside threads that hold it (inference's paste workers and renderer dispatch),
  each retake waits for a switch interval: measured here, a 1-thread x264 encode fell from 60
  to 14 frames/s beside one spinning Python thread. Frames travel through a pipe (a 450x450
  frame is 0.6 MB) while the child encodes; the pipe's small buffer bounds how far ahead the
  parent gets. The child is a fresh interpreter (`python -m jaxtalk.io.video`), not a fork of
  a process that runs JAX's threads, and it does not re-import the caller's main script as
  multiprocessing's spawn would. An error in the child is raised here at the next `write` or
  at `close`."""

  def __init__(
    self,
    path: str | os.PathLike,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    preset: str = "medium",
  ) -> None:
    if audio is not None and sample_rate is None:
      raise ValueError("sample_rate is required with audio")
    check_x264(crf, preset)  # here, before a child is started for nothing
    self.path = pathlib.Path(path)
    self.frames = 0
    self._closed = False
    from_parent, to_child = os.pipe()  # (read end, write end)
    from_child, to_parent = os.pipe()
    root = str(pathlib.Path(__file__).resolve().parents[2])  # the folder holding jaxtalk/
    path_entries = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path_entries)}  # no empty entry: no cwd
    cmd = [sys.executable, "-m", "jaxtalk.io.video", str(from_parent), str(to_parent)]
    self._proc = subprocess.Popen(cmd, pass_fds=(from_parent, to_parent), env=env)
    os.close(from_parent)
    os.close(to_parent)
    self._outbox = Connection(to_child, readable=False)
    self._inbox = Connection(from_child, writable=False)
    # The arguments (the whole audio track with them) go out from a thread: a pipe holds 64 KB,
    # so sending them here would wait for the child to start and read them (~0.3 s on the 2-core
    # VM, its imports), time the caller spends on audio features and renders instead. `write`
    # and `close` wait for it.
    self._header_error: BaseException | None = None
    self._header = threading.Thread(
      target=self._send_header, args=((str(self.path), fps, audio, sample_rate, crf, preset),),
      name="encoder-header", daemon=True,
    )  # fmt: skip
    self._header.start()

  def _send_header(self, header: tuple) -> None:
    try:
      self._outbox.send(header)
    except OSError as e:  # the child is gone: said at the next write or at close
      self._header_error = e

  def _header_sent(self) -> None:
    if self._header is not None:
      self._header.join()
      self._header = None
      if self._header_error is not None:
        raise self._failed() from self._header_error

  def _failed(self, outcome: tuple | None = None) -> BaseException:
    if outcome is None:
      code = self._proc.poll()
      return RuntimeError(f"{self.path}: the video encoder process stopped (exit code {code})")
    return outcome[1]

  def write(self, frame_hwc: np.ndarray) -> None:
    frame_hwc = np.ascontiguousarray(frame_hwc, dtype=np.uint8)
    self._header_sent()
    try:
      # the child only speaks early to report a failure (or is gone: end of file)
      report = self._inbox.recv() if self._inbox.poll() else None
      if report is None:
        self._outbox.send(frame_hwc.shape)
        self._outbox.send_bytes(frame_hwc.reshape(-1))  # 1-D: its length is its bytes
    except (OSError, EOFError) as e:  # BrokenPipeError, EOFError: the child is gone
      raise self._failed() from e
    if report is not None:
      raise self._failed(report)
    self.frames += 1

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    try:
      self._header_sent()
      self._outbox.send(None)
      outcome = self._inbox.recv()
    except (OSError, EOFError) as e:
      raise self._failed() from e
    finally:
      self._outbox.close()
      self._inbox.close()
      self._proc.wait()
    if outcome[0] == "error":
      raise self._failed(outcome)

  def __enter__(self) -> EncoderProcess:
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.close()
      return
    with contextlib.suppress(Exception):  # the error on its way out says what went wrong
      self.close()


def write_video(
  path: str | os.PathLike,
  frames_thwc: Iterable[np.ndarray],
  fps: float,
  audio: np.ndarray | None = None,
  sample_rate: int | None = None,
  crf: int = 18,
) -> int:
  """Writes H.264 mp4 (AAC audio, mono float in [-1, 1], when given); returns frames written.

  It encodes in a fresh process (EncoderProcess, ~0.5 s to start): in a process that has run for
  a while, x264's macroblock-tree rate control writes different bytes for the same frames from
  one encode to the next (docs/benchmarks.md, "Not done yet (issue 10)"), and a file that is
  scored (bench quality's held-out real.mp4) must be the same on every run."""
  with EncoderProcess(path, fps, audio, sample_rate, crf) as writer:
    for frame_hwc in frames_thwc:
      writer.write(frame_hwc)
  return writer.frames


if __name__ == "__main__":  # EncoderProcess's child: python -m jaxtalk.io.video IN_FD OUT_FD
  _encoder_main(
    Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
  )
