"""The demo's report: one `report.html` that shows everything a person wants to look at, and
`report.png`, a contact sheet for terminals and issue trackers.

    report.html   the videos (generated held-out part, side by side, re-dubbed clip, the real
                  held-out part), the slice picture, the metric table with a one-line meaning per
                  metric, the loss curves
    report.png    a few frames, real above generated, with the key metrics under them

Every file the page references sits beside it (relative links), so the folder can be copied or
zipped as it is.
"""

from __future__ import annotations

import html
import math
import pathlib
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from jaxtalk.io.video import read_frames
from jaxtalk.metrics.slice import save_png

# What each metric means, in one line (keys of jaxtalk.metrics.evaluate records).
MEANINGS: dict[str, str] = {
  "ssim": "structural similarity to the real frames (1 = identical; face crop where available)",
  "psnr": "peak signal-to-noise ratio to the real frames, dB (higher = closer)",
  "frame_ssim": "SSIM over whole frames, background included (the background is copied)",
  "frame_psnr": "PSNR over whole frames, background included, dB",
  "crop_ssim": "SSIM on the face crop (1 = identical)",
  "crop_psnr": "PSNR on the face crop, dB",
  "lmd": "mean distance of mouth landmarks to the real ones, pixels (lower = closer)",
  "lip_lmd": "mean distance of lip landmarks to the real ones, pixels (lower = closer)",
  "nlmd": "LMD divided by the mouth width (lower = closer)",
  "cpbd": "sharpness (cumulative probability of blur detection; higher = sharper)",
  "frame_cpbd": "sharpness over whole frames",
  "msi_lip": "motion stability of the lips: 1 / variance of landmark acceleration (higher = "
  "steadier; a frozen mouth also scores high, so read it beside articulation)",
  "msi_jaw": "motion stability of the jaw line (higher = steadier)",
  "msi_all": "motion stability of all 68 landmarks",
  "msi_lip_ratio": "lip MSI generated / real (>= 1: no more jitter than the real video)",
  "msi_jaw_ratio": "jaw MSI generated / real",
  "aperture_ratio": "how wide the mouth opens, generated / real (std of the aperture; 1 = as "
  "much articulation as the real clip, ~0 = frozen mouth)",
  "aperture_corr": "correlation over time of the mouth opening with the real one (1 = opens and "
  "closes at the same moments)",
  "sync_offset_frames": "lip-sync offset from mouth opening vs audio loudness, frames (0 = in "
  "sync)",
  "sync_confidence": "confidence of that offset (peak prominence of the cross-correlation)",
  "sync_c": "SyncNet confidence (higher = better lip sync)",
  "sync_d": "SyncNet distance (lower = better lip sync)",
  "mouth_lapvar_ratio": "mouth sharpness (Laplacian variance) generated / real",
  "mouth_cpbd_ratio": "mouth sharpness (CPBD) generated / real",
  "frames": "frames compared",
}
# The metrics shown on the contact sheet, in this order, where the record has them.
SHEET_KEYS = ("msi_lip", "msi_lip_ratio", "aperture_ratio", "aperture_corr", "lmd", "ssim", "psnr")


def metric_rows(record: Mapping) -> list[tuple[str, str, str]]:
  """(name, value, meaning) for every number of an evaluation record."""
  rows = []
  for key, value in record.items():
    if isinstance(value, bool) or not isinstance(value, int | float):
      continue
    text = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
    rows.append((key, text, MEANINGS.get(key, "see docs/evaluation.md")))
  return rows


def contact_sheet(
  real_path: str | pathlib.Path,
  generated_path: str | pathlib.Path,
  record: Mapping,
  out_png: str | pathlib.Path,
  n_frames: int = 6,
  tile: int = 192,
) -> pathlib.Path:
  """report.png: n_frames evenly spaced frames, real (top) vs generated (bottom), metrics below."""
  real, fake = read_frames(real_path), read_frames(generated_path)
  n = min(len(real), len(fake))
  if n == 0:
    raise ValueError("no frames to show")
  idx = np.unique(np.linspace(0, n - 1, min(n_frames, n)).round().astype(int))

  def row(frames: np.ndarray, label: str) -> np.ndarray:
    tiles = [cv2.resize(frames[i], (tile, tile), interpolation=cv2.INTER_AREA) for i in idx]
    strip = np.concatenate(tiles, axis=1)
    head = np.full((22, strip.shape[1], 3), 255, np.uint8)
    cv2.putText(head, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([head, strip], axis=0)

  rows = [row(real, "real (held out)"), row(fake, "generated")]
  width = rows[0].shape[1]
  text = [f"frames {', '.join(str(int(i)) for i in idx)} of {n}"]
  line = "  ".join(f"{k} {record[k]:.3g}" for k in SHEET_KEYS if _is_number(record.get(k)))
  text += [line[i : i + 110] for i in range(0, len(line), 110)] if line else []
  foot = np.full((12 + 20 * len(text), width, 3), 255, np.uint8)
  for j, t in enumerate(text):
    cv2.putText(foot, t, (6, 22 + 20 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)  # fmt: skip
  out = pathlib.Path(out_png)
  save_png(out, np.concatenate([*rows, foot], axis=0))
  return out


def _is_number(v) -> bool:
  return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def write_html(
  out_dir: str | pathlib.Path,
  *,
  title: str,
  summary: Sequence[str],
  videos: Sequence[tuple[str, pathlib.Path]],
  images: Sequence[tuple[str, pathlib.Path]],
  record: Mapping,
) -> pathlib.Path:
  """report.html in out_dir; every video and image path must lie inside out_dir."""
  out = pathlib.Path(out_dir).resolve()

  def rel(p: pathlib.Path) -> str:
    return html.escape(pathlib.Path(p).resolve().relative_to(out).as_posix(), quote=True)

  e = html.escape
  parts = [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    f"<title>{e(title)}</title>",
    "<style>body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
    "video,img{max-width:100%;border:1px solid #ccc}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}td.v{text-align:right;"
    "font-family:monospace}figure{margin:1em 0}</style></head><body>",
    f"<h1>{e(title)}</h1>",
    *(f"<p>{e(s)}</p>" for s in summary),
    "<h2>Videos</h2>",
  ]
  for caption, path in videos:
    parts.append(
      f'<figure><video controls preload="auto" src="{rel(path)}"></video>'
      f"<figcaption>{e(caption)}</figcaption></figure>"
    )
  parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>")
  for name, value, meaning in metric_rows(record):
    parts.append(f'<tr><td>{e(name)}</td><td class="v">{e(value)}</td><td>{e(meaning)}</td></tr>')
  parts.append("</table>")
  for caption, path in images:
    parts.append(
      f'<h2>{e(caption)}</h2><figure><img src="{rel(path)}" alt="{e(caption)}"></figure>'
    )
  parts.append("</body></html>")
  page = out / "report.html"
  page.write_text("\n".join(parts) + "\n", encoding="utf-8")
  return page
