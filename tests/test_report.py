"""The demo's report (jaxtalk/report.py) on small generated media: the HTML links every video and
image by a relative path, headless Chromium loads each of them (and reports a missing one), the
metric table gives every number its meaning, the contact sheet shows real above generated."""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

from jaxtalk.io.video import VideoWriter
from jaxtalk.metrics.slice import save_png
from jaxtalk.report import MEANINGS, contact_sheet, metric_rows, write_html
from jaxtalk.synthesis.panels import labelled_panels, panel_size


def make_media(out: pathlib.Path) -> dict[str, pathlib.Path]:
  rng = np.random.default_rng(0)
  paths = {"real": out / "real.mp4", "fake": out / "sub/fake.mp4", "png": out / "slice.png"}
  for key, value in (("real", 40), ("fake", 200)):
    with VideoWriter(paths[key], 25, rng.normal(0, 0.1, 16000).astype(np.float32), 16000) as w:
      for _ in range(25):
        w.write(np.full((64, 64, 3), value, np.uint8))
  save_png(paths["png"], rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
  return paths


RECORD = {"ssim": 0.5, "msi_lip": 0.25, "aperture_ratio": 0.7, "frames": 25, "backend": "dlib"}


def test_report_loads_in_chromium_and_reports_missing_files(tmp_path, chromium_check):
  m = make_media(tmp_path)
  sheet = contact_sheet(m["real"], m["fake"], RECORD, tmp_path / "report.png")
  page = write_html(
    tmp_path, title="t <&>", summary=["one"], videos=[("real", m["real"]), ("gen", m["fake"])],
    images=[("slice", m["png"]), ("sheet", sheet)], record=RECORD,
  )  # fmt: skip
  text = page.read_text()
  assert 'src="sub/fake.mp4"' in text and 'src="report.png"' in text and "t &lt;&amp;&gt;" in text
  assert chromium_check(page) == {"images": 2, "videos": 2, "failed": []}
  (tmp_path / "slice.png").unlink()
  (tmp_path / "sub/fake.mp4").unlink()
  result = chromium_check(page)
  assert sorted(result["failed"]) == ["slice.png: failed", "sub/fake.mp4: failed"], result


def test_metric_table_has_a_meaning_for_every_number():
  rows = metric_rows(RECORD)
  assert [r[0] for r in rows] == ["ssim", "msi_lip", "aperture_ratio", "frames"]  # no strings
  assert all(r[2] == MEANINGS[r[0]] for r in rows)
  assert rows[1][1] == "0.25"
  assert "frozen mouth" in MEANINGS["msi_lip"]  # MSI is read beside articulation


def test_contact_sheet_puts_real_above_generated(tmp_path):
  m = make_media(tmp_path)
  path = contact_sheet(m["real"], m["fake"], RECORD, tmp_path / "r.png")
  sheet = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
  assert sheet.shape[1] == 6 * 192
  # row 1: real frames (value 40) under a 22 px label strip; row 2: generated (200)
  real_tile, fake_tile = sheet[22 + 10 : 22 + 180, 10:180], sheet[2 * 22 + 192 + 10 :][:150, 10:180]
  assert abs(real_tile.mean() - 40) < 4 and abs(fake_tile.mean() - 200) < 4


def test_panels_are_at_least_256_px_and_labelled():
  crop = np.zeros((64, 64, 3), np.uint8)
  crop[:32] = 255
  out = labelled_panels([crop, crop, crop], ["real", "generated", "shape render"])
  assert panel_size(64) == 256 and panel_size(96) == 288 and panel_size(256) == 256
  assert out.shape == (24 + 256, 3 * 256, 3)
  # nearest-neighbour scaling: the crop's pixels, each 4x4
  np.testing.assert_array_equal(out[24:, :256], np.repeat(np.repeat(crop, 4, 0), 4, 1))
  assert out[:24].max() == 255 and out[:24].min() < 64  # white text on the dark label strip
