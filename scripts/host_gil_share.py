"""How long inference's host work holds the GIL per frame: the bound on the whole pipeline's
frames/s when a fast accelerator and many cores leave only the GIL serial (issue 10).

Runs the host's work alone (the renderer stubbed by the background crops, as `jaxtalk bench
infer --host-only`) on a clip repeated to SECONDS of audio, and samples it with py-spy's --gil
(only the thread holding the GIL is recorded). Prints frames/s, the GIL-held share of the wall
time, the GIL milliseconds per frame (1000 / that is the frames/s ceiling however many cores),
and the functions that hold it.

  pip install py-spy   # a tool, not a project dependency
  python scripts/host_gil_share.py [VIDEO] [--seconds 12] [--repeats 3] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import tempfile
import time

import soundfile

from jaxtalk import infer
from jaxtalk.bench import infer as bench_infer

RATE = 200  # samples per second


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("video", nargs="?", default="jaxtalk/assets/obama_20s.mp4")
  ap.add_argument("--config", default="grid")
  ap.add_argument("--seconds", type=float, default=12.0)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--py-spy", default="py-spy")
  ap.add_argument("--top", type=int, default=15)
  args = ap.parse_args()

  models = bench_infer._models(args.video, args.config, [])
  background = infer.prepare_background(args.video, models, say=lambda s: None)
  sr = models.config.data.sample_rate
  with tempfile.TemporaryDirectory() as tmp:
    wav, out, raw = f"{tmp}/a.wav", f"{tmp}/o.mp4", f"{tmp}/gil.txt"
    soundfile.write(wav, bench_infer._audio(args.video, args.seconds, sr), sr)

    def once():
      return infer.synthesize(models, background, wav, out,
                              generate=bench_infer._background_crops, progress=False)  # fmt: skip

    once()  # warm: numba kernels, the encoder's first start
    spy = subprocess.Popen(
      [args.py_spy, "record", "--gil", "--nonblocking", "-r", str(RATE), "-f", "raw",
       "-p", str(os.getpid()), "-o", raw],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches
    t0 = time.perf_counter()
    frames = sum(once().frames for _ in range(args.repeats))
    wall = time.perf_counter() - t0
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled when interrupted
    spy.wait()
    held, leaf = 0, collections.Counter()
    with open(raw) as f:
      for line in f:
        stack, n = line.rsplit(" ", 1)
        held += int(n)
        leaf[stack.split(";")[-1].split(" (")[0] or "(no Python frame)"] += int(n)
  # samples cover the timed runs plus ~1 s of attaching and stopping: a slight overestimate
  share = held / RATE / wall
  print(f"{frames} frames in {wall:.2f} s: {frames / wall:.1f} frames/s on {os.cpu_count()} cores")
  print(f"GIL held {100 * share:.1f} % of the wall time: {1000 * share * wall / frames:.2f} ms "
        f"per frame, a ceiling of {frames / (share * wall):.0f} frames/s")  # fmt: skip
  for name, n in leaf.most_common(args.top):
    print(f"  {100 * n / held:5.1f} %  {name}")


if __name__ == "__main__":
  main()
