"""The encoder in a process of its own (io.video.EncoderProcess) and the render read-ahead
(infer.read_ahead) that let inference's host work overlap."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from jaxtalk.infer import read_ahead
from jaxtalk.io.video import EncoderProcess, VideoWriter, read_frames, write_video


def _frames(n=12, h=37, w=45):
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (h, w, 3), np.uint8)
  return [np.roll(base, 2 * t, axis=1) for t in range(n)]  # moving content: P/B frames differ


# VideoWriter's reference file, written in a fresh process as EncoderProcess's child is. In a
# process that has run for a while, x264's macroblock-tree rate control gives files that differ
# from one encode of the same frames to the next (12 encodes at 450x450 in one process: 4
# different files; all equal with x264's mbtree=0; docs/benchmarks.md, "Not done yet (issue
# 10)"), so a reference written in the test's own process failed now and then.
REFERENCE = """
import sys
import numpy as np
from jaxtalk.io.video import VideoWriter
frames, audio = np.load(sys.argv[1]), np.load(sys.argv[2])
with VideoWriter(sys.argv[3], 25, audio, 16000) as w:
  for f in frames:
    w.write(f)
print(w.frames)
"""


def _encoder_process(path, frames, audio):
  with EncoderProcess(path, 25, audio, 16000) as w:
    for f in frames:
      w.write(f)
  return w.frames


def _stir_and_write_video(path, frames, audio):
  # first the history under which in-process encodes varied: x264 runs at 450x450 in this
  # process (4 different files in 12 such encodes), then write_video
  big = np.random.default_rng(2).integers(0, 256, (6, 450, 450, 3), np.uint8)
  for i in range(2):
    with VideoWriter(path.with_name(f"stir{i}.mp4"), 25) as w:
      for f in big:
        w.write(f)
  return write_video(path, frames, 25, audio, 16000)


@pytest.mark.parametrize("write", [_encoder_process, _stir_and_write_video])
def test_encoders_write_the_same_bytes_as_a_fresh_processs_videowriter(tmp_path, child_env, write):
  frames = _frames()  # odd sizes: the writer's padding to even sizes is exercised too
  audio = np.random.default_rng(1).normal(0, 0.1, 8000).astype(np.float32)
  np.save(tmp_path / "frames.npy", np.stack(frames))
  np.save(tmp_path / "audio.npy", audio)
  here = subprocess.run(
    [sys.executable, "-c", REFERENCE, tmp_path / "frames.npy", tmp_path / "audio.npy",
     tmp_path / "here.mp4"], env=child_env, capture_output=True, text=True, timeout=120,
  )  # fmt: skip
  assert here.returncode == 0, here.stderr
  written = write(tmp_path / "there.mp4", frames, audio)
  assert written == int(here.stdout) == len(frames)
  assert (tmp_path / "there.mp4").read_bytes() == (tmp_path / "here.mp4").read_bytes()
  assert read_frames(tmp_path / "there.mp4").shape == (len(frames), 38, 46, 3)


def test_encoder_process_hands_its_x264_settings_to_the_child(tmp_path, x264_options):
  # the preset decides x264's search: subme 7 for medium (the default), 2 for veryfast
  with EncoderProcess(tmp_path / "medium.mp4", 25) as w:
    for f in _frames():
      w.write(f)
  with EncoderProcess(tmp_path / "fast.mp4", 25, crf=30, preset="veryfast") as w:
    for f in _frames():
      w.write(f)
  default, fast = x264_options(tmp_path / "medium.mp4"), x264_options(tmp_path / "fast.mp4")
  assert " subme=7 " in default and " crf=18.0 " in default, default
  assert " subme=2 " in fast and " crf=30.0 " in fast, fast


@pytest.mark.parametrize(
  "kwargs,message",
  [({"preset": "medim"}, "x264 preset must be one of"), ({"crf": 52}, "x264 crf must be"),
   ({"crf": 18.5}, "x264 crf must be")],
)  # fmt: skip
def test_bad_x264_settings_are_a_clear_error_before_anything_starts(tmp_path, kwargs, message):
  for writer in (EncoderProcess, VideoWriter):
    with pytest.raises(ValueError, match=message):
      writer(tmp_path / "x.mp4", 25, **kwargs)
  assert not (tmp_path / "x.mp4").exists()


def test_a_failure_in_the_encoder_process_is_raised_here(tmp_path):
  # A frame larger than the first cannot go into the stream (the child's VideoWriter fails on
  # it); the parent must get that error, at a later write or at close, and not hang on the pipe.
  frames = _frames(4) + [np.zeros((80, 80, 3), np.uint8)] + _frames(40)
  with pytest.raises(ValueError):
    with EncoderProcess(tmp_path / "x.mp4", 25) as w:
      for f in frames:
        w.write(f)


def test_an_encoder_process_that_died_is_a_clear_error(tmp_path):
  w = EncoderProcess(tmp_path / "x.mp4", 25)
  w.write(_frames(1)[0])
  w._proc.kill()
  w._proc.wait()
  with pytest.raises(RuntimeError, match="encoder process stopped"):
    for f in _frames(200):  # the pipe's buffer takes the first few
      w.write(f)
  with pytest.raises(RuntimeError, match="encoder process stopped"):
    w.close()


def test_an_encoder_process_killed_before_it_read_its_arguments_is_a_clear_error(tmp_path):
  # the arguments (4 MB of audio: more than a pipe holds) go out from a thread while the
  # constructor returns; a child gone before reading them is reported at the next write
  audio = np.zeros(1_000_000, np.float32)
  w = EncoderProcess(tmp_path / "x.mp4", 25, audio, 16000)
  w._proc.kill()
  w._proc.wait()
  with pytest.raises(RuntimeError, match="encoder process stopped"):
    for f in _frames(200):
      w.write(f)
  with pytest.raises(RuntimeError, match="encoder process stopped"):
    w.close()


def test_read_ahead_gives_the_items_in_order_and_the_producers_error_after_them():
  def items():
    yield from range(7)
    raise KeyError("boom")

  got = []
  with pytest.raises(KeyError, match="boom"):
    for x in read_ahead(items(), depth=3):
      got.append(x)
  assert got == list(range(7))
  assert list(read_ahead(iter(range(50)), depth=4)) == list(range(50))


def test_read_ahead_runs_at_most_depth_ahead_and_stops_when_closed():
  made = []
  producer = []

  def items():
    producer.append(threading.current_thread())
    for i in range(1000):
      made.append(i)
      yield i

  it = read_ahead(items(), depth=5)
  assert next(it) == 0
  for _ in range(100):  # let the producer fill its queue
    if len(made) >= 7:
      break
    threading.Event().wait(0.01)
  # one handed on, 5 queued, and the one waiting for room
  assert len(made) <= 1 + 5 + 1
  assert producer[0] is not threading.current_thread()
  it.close()
  n = len(made)
  threading.Event().wait(0.05)
  assert len(made) == n and not producer[0].is_alive()
