"""Does a phonetic front end carry more of the mouth than the log-mel windows? (issue 15)

    pip install pocketsphinx   # ships its US-English acoustic model and phone LM in the wheel
    python scripts/a2e_phone_study.py DATASET VIDEO

A linear study, as scripts/a2e_linear_ceiling.py: ridge regressions from three feature sets to
the mouth aperture and to the expressions, fitted on the dataset's training frames and scored
on its held-out frames (the recorded holdout split):

  mel     the standardised log-mel windows of frames t-4, t, t+4 (20 pooled bands each);
  phone   pocketsphinx's all-phone decoding of the clip's audio (39 phones + silence + noise,
          10 ms frames), as the share of each phone in each video frame's 40 ms, for frames
          t-6 .. t+6 (a viseme lookup with context, learned by the regression);
  both    the two side by side.

The ridge weight of each set is chosen on the last 20 % of the training frames (never on
held-out ones), then refitted on all training frames. pocketsphinx is not a jaxtalk dependency
(the decoder is English-only): this script is the measurement behind not using it.
"""

from __future__ import annotations

import sys

import numpy as np
from a2e_linear_ceiling import heldout_scores, ridge  # this folder is on sys.path as a script

from jaxtalk.data.pipeline import open_data
from jaxtalk.io.audio import read_audio
from jaxtalk.metrics.articulation import mouth_aperture

LAMBDAS = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def phone_track(video: str, first_frame: int, n: int, fps: float) -> np.ndarray:
  """(n, P) share of each phone in each video frame's 40 ms window (centred on the frame)."""
  try:
    from pocketsphinx import Decoder, get_model_path
  except ImportError:
    raise SystemExit("this study needs pocketsphinx: pip install pocketsphinx") from None
  samples = read_audio(video, 16000)
  pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
  model = get_model_path()
  dec = Decoder(hmm=f"{model}/en-us/en-us", allphone=f"{model}/en-us/en-us-phone.lm.bin",
                lm=None, dict=None, beam=1e-20, pbeam=1e-20, lw=2.0, logfn="/dev/null")  # fmt: skip
  dec.start_utt()
  dec.process_raw(pcm, full_utt=True)
  dec.end_utt()
  segs = [(s.word, s.start_frame, s.end_frame) for s in dec.seg()]
  phones = sorted({p for p, _, _ in segs})
  labels = np.zeros((len(samples) // 160 + 2, len(phones)))
  for p, start, end in segs:
    labels[start : end + 1, phones.index(p)] = 1
  out = np.zeros((n, len(phones)))
  for t in range(n):
    c = int(round((first_frame + t) / fps * 100))
    part = labels[max(0, c - 2) : c + 3]
    if len(part):
      out[t] = part.mean(0)
  return out


def main() -> None:
  dataset, video = sys.argv[1], sys.argv[2]
  ds = open_data(dataset)
  fm, size = ds.face_model(), ds.image_size
  for name in ds.clip_names:
    c = ds.clip(name)
    n, tr = ds.num_frames(name), ds.train_frames(name)
    info = ds.manifest["clips"][name]
    expr = np.asarray(c["expression"], np.float64)
    pose = np.asarray(c["pose"], np.float64)
    ap = mouth_aperture(np.stack([fm.project(e, p, size) for e, p in zip(expr, pose)]))
    audio = np.asarray(c["audio"], np.float64)
    x = (audio - audio[:tr].mean((0, 1))) / audio[:tr].std((0, 1))
    bands = x.reshape(n, x.shape[1], 20, -1).mean(-1).reshape(n, -1)
    phones = phone_track(video, int(info.get("first_frame", 0)), n, ds.fps)

    def context(f, shifts):
      return np.concatenate([np.roll(f, -s, 0) for s in shifts], 1)

    sets = {
      "mel": context(bands, (-4, 0, 4)),
      "phone": context(phones, range(-6, 7)),
    }
    sets["both"] = np.concatenate([sets["mel"], sets["phone"]], 1)
    print(f"{name}: {tr} training, {n - tr} held-out frames; {phones.shape[1]} phone labels")
    fit_end = int(0.8 * tr)
    for label, feats in sets.items():
      # the ridge weight, chosen on the training tail
      tail = [
        np.corrcoef(ridge(feats[:fit_end], ap[:fit_end, None], feats[fit_end:tr], lam)[:, 0],
                    ap[fit_end:tr])[0, 1]
        for lam in LAMBDAS
      ]  # fmt: skip
      lam = LAMBDAS[int(np.argmax(tail))]
      art, lead = heldout_scores(feats, ap, expr, tr, lam)
      print(
        f"  {label:6s} lambda {lam:g}: aperture ratio {art['aperture_ratio']:.2f} corr "
        f"{art['aperture_corr']:.2f}; leading-4 corr {np.mean(lead):.2f}"
      )


if __name__ == "__main__":
  main()
