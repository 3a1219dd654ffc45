"""`jaxtalk preprocess` on real GRID clips (tiny config, 64x64): the dataset's fields, their
alignment and quality, resume after a kill, determinism, and every kind of bad input."""

from __future__ import annotations

import fractions
import json
import pathlib
import shutil

import librosa
import ml_collections
import numpy as np
import pytest

from jaxtalk.config import load_config
from jaxtalk.data.dataset import FIELDS, DatasetError, open_dataset
from jaxtalk.data.preprocess import preprocess
from jaxtalk.errors import AudioReadError, JaxtalkError, NoFaceError, VideoReadError
from jaxtalk.face import landmark3d
from jaxtalk.face.crop import CropBox, config_crop_box, crop_frame, stable_crop_box
from jaxtalk.face.mask import MASK_POINTS, rasterize_polygon
from jaxtalk.io.audio import read_audio
from jaxtalk.io.video import read_frames, write_video

# Two clips of one speaker: a dataset is one person.
PERSON = ("id2_vcd_swwp2s", "pwij3p")
SR = 16000


def _quiet(_msg: str) -> None:
  pass


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> pathlib.Path:
  # The same folder the session's other tests use for the landmark cache (see conftest).
  return tmp_path_factory.getbasetemp() / "jaxtalk-cache" / "landmarks"


@pytest.fixture(scope="module")
def person_clips(grid_clips) -> list[pathlib.Path]:
  clips = [p for p in grid_clips if p.stem in PERSON]
  return clips if len(clips) == 2 else grid_clips[:2]


def build(inputs, out, cache_dir, overrides=(), **kwargs) -> dict:
  config = load_config("tiny", list(overrides))
  return preprocess(inputs, out, config, cache_dir=cache_dir, progress=False, log=_quiet, **kwargs)


@pytest.fixture(scope="module")
def dataset_dir(person_clips, tmp_path_factory, cache_dir) -> pathlib.Path:
  out = tmp_path_factory.mktemp("dataset") / "person"
  build(person_clips, out, cache_dir)
  return out


def _files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ content


def test_fields_shapes_and_dtypes(dataset_dir, person_clips):
  ds = open_dataset(dataset_dir)
  config = load_config("tiny")
  s, e, w = config.data.image_size, config.data.expression_dim, config.data.audio_window
  assert ds.clip_names == sorted(p.stem for p in person_clips)
  assert (ds.image_size, ds.expression_dim, ds.audio_window, ds.fps) == (s, e, w, 25.0)
  m = ds.manifest
  assert m["format"] == "jaxtalk-dataset" and m["version"] == 1 and m["status"] == "complete"
  assert m["config"]["data"]["image_size"] == s and m["face_model"] == "landmark3d"
  for name in ds.clip_names:
    clip = ds.clip(name)
    t = clip.num_frames
    assert t == 75 and m["sources"][name]["dropped"] == [] and not m["sources"][name]["resampled"]
    mel_frames = clip.info["mel_frames"]
    want = {
      "frames": (t, s, s, 3),
      "shape": (t, s, s, 3),
      "mask": (t, s, s),
      "landmarks": (t, 68, 2),
      "mask_points": (t, len(MASK_POINTS), 2),
      "expression": (t, e),
      "pose": (t, 6),
      "audio": (t, w, 80),
      "mel": (mel_frames, 80),
    }
    assert set(clip) == set(FIELDS)
    for field, shape in want.items():
      array = clip[field]
      assert isinstance(array, np.memmap), field
      assert array.shape == shape and array.dtype == np.dtype(FIELDS[field][0]), field
      assert np.all(np.isfinite(array)), field
    assert 0 < clip["mask"][:].mean() < 0.5 and set(np.unique(clip["mask"][:])) <= {0, 1}
    assert clip["shape"][:].max() > 100  # something is drawn
  model = ds.face_model()
  assert model.expression_dim == e and m["face_model_fit"]["frames"] == ds.total_frames


def test_audio_windows_match_librosa(dataset_dir, person_clips):
  """audio[t] is the 20 log-mel frames around mel frame 4 t (25 fps, 10 ms hop), computed here
  independently with librosa; the ends repeat the first/last mel frame."""
  ds = open_dataset(dataset_dir)
  clip = ds.clip(person_clips[0].stem)
  samples = read_audio(person_clips[0], SR)
  mel = librosa.feature.melspectrogram(
    y=samples, sr=SR, n_fft=400, hop_length=160, win_length=400, n_mels=80, power=2.0
  )
  logmel = np.log(np.maximum(mel, 1e-10)).T
  np.testing.assert_allclose(
    clip["mel"][:], logmel[: clip.info["mel_frames"]], rtol=1e-5, atol=1e-4
  )
  t = 40
  np.testing.assert_allclose(
    clip["audio"][t], logmel[4 * t - 10 : 4 * t + 10], rtol=1e-5, atol=1e-4
  )
  first = clip["audio"][0]
  np.testing.assert_allclose(first[:10], np.repeat(logmel[:1], 10, 0), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(first[10:], logmel[:10], rtol=1e-5, atol=1e-4)
  last = clip["audio"][clip.num_frames - 1]
  np.testing.assert_allclose(last[-1], logmel[-1], rtol=1e-5, atol=1e-4)  # edge padding


def test_crop_is_one_box_per_clip(dataset_dir, person_clips):
  ds = open_dataset(dataset_dir)
  for path in person_clips:
    clip = ds.clip(path.stem)
    box = CropBox(*ds.manifest["sources"][path.stem]["crop_box"])
    source = read_frames(path, 25.0)
    for t in (0, 37, clip.num_frames - 1):
      np.testing.assert_array_equal(clip["frames"][t], crop_frame(source[t], box, ds.image_size))


def test_crop_box_scale_and_shift_by_hand():
  # Face boxes (x0, y0, x1, y1) with centres (150, 100) and (152, 104), sides 100 and 104: the
  # medians are the centre (151, 102) and side 102, so crop_scale 1.5 gives a side of 153.
  boxes = np.array([[100, 50, 200, 150], [100, 52, 204, 156], [0, 0, 1, 1]], np.float64)
  found = np.array([True, True, False])
  box = stable_crop_box(boxes, found, 1.5)
  # x0 = floor(151 + 0.5 - 76.5 + 0.5) = 75; y0 = floor(102 + 1 - 76.5) = 26
  assert box == CropBox(75, 26, 153)
  # crop_shift 0.1 moves it down by 0.1 x 153 = 15.3 pixels: floor(26.5 + 15.3) = 41
  assert stable_crop_box(boxes, found, 1.5, 0.1) == CropBox(75, 41, 153)
  assert stable_crop_box(boxes, found, 1.5, -0.1) == CropBox(75, 11, 153)
  # From a config's data section; one written before crop_shift existed means no shift.
  old_data = ml_collections.ConfigDict({"crop_scale": 1.5})
  assert config_crop_box(boxes, found, old_data) == CropBox(75, 26, 153)
  data = ml_collections.ConfigDict({"crop_scale": 1.5, "crop_shift": 0.1})
  assert config_crop_box(boxes, found, data) == CropBox(75, 41, 153)


def test_crop_shift_moves_the_dataset_crop_down(dataset_dir, person_clips, cache_dir, tmp_path):
  path = person_clips[0]
  build([path], tmp_path / "shifted", cache_dir, ["data.crop_shift=0.1"])
  ds, plain = open_dataset(tmp_path / "shifted"), open_dataset(dataset_dir)
  x0, y0, side = ds.manifest["sources"][path.stem]["crop_box"]
  px0, py0, pside = plain.manifest["sources"][path.stem]["crop_box"]
  assert (x0, side) == (px0, pside)
  assert abs(y0 - py0 - 0.1 * side) <= 1  # both snapped to whole pixels
  assert ds.manifest["settings"]["crop_shift"] == 0.1
  assert "crop_shift" not in plain.manifest["settings"]  # unshifted datasets read as before
  source = read_frames(path, 25.0)
  np.testing.assert_array_equal(
    ds.clip(path.stem)["frames"][5], crop_frame(source[5], CropBox(x0, y0, side), ds.image_size)
  )


def test_masks_cover_the_mouth(dataset_dir):
  ds = open_dataset(dataset_dir)
  for name in ds.clip_names:
    clip = ds.clip(name)
    mask, lms = clip["mask"][:], clip["landmarks"][:]
    for t in range(clip.num_frames):
      np.testing.assert_array_equal(
        mask[t], rasterize_polygon(clip["mask_points"][t], ds.image_size)
      )
      # Crop coordinates are continuous: the pixel holding point p is floor(p).
      mouth = np.floor(lms[t, 48:68]).astype(int)
      assert mask[t][mouth[:, 1], mouth[:, 0]].all(), (name, t)
      eyes = np.floor(lms[t, 36:48]).astype(int)
      assert not mask[t][eyes[:, 1], eyes[:, 0]].any(), (name, t)


def test_fit_reprojects_the_landmarks(dataset_dir):
  """Bound: mean < 0.8 px and max < 10 px scaled to 256 (measured: mean ~0.5, max ~6.5 px)."""
  ds = open_dataset(dataset_dir)
  model = ds.face_model()
  for name in ds.clip_names:
    clip = ds.clip(name)
    fit = clip.info["fit"]
    assert fit["reproj_mean_px_at_256"] < 0.8 and fit["reproj_max_px_at_256"] < 10.0
    e, p, lms = clip["expression"][:], clip["pose"][:], clip["landmarks"][:]
    proj = np.stack([model.project(e[t], p[t], ds.image_size) for t in range(clip.num_frames)])
    err = np.linalg.norm(proj - lms, axis=-1) * 256 / ds.image_size
    assert err.mean() < 0.8 and err.max() < 10.0


def test_shape_render_comes_from_parameters(dataset_dir):
  ds = open_dataset(dataset_dir)
  model = ds.face_model()
  clip = ds.clip(ds.clip_names[0])
  for t in (0, 50):
    image = landmark3d.render(model, clip["expression"][t], clip["pose"][t], ds.image_size)
    np.testing.assert_array_equal(image, clip["shape"][t])


def test_open_and_closed_mouth_differ_along_the_leading_component(dataset_dir):
  ds = open_dataset(dataset_dir)
  lms = np.concatenate([ds.clip(n)["landmarks"][:] for n in ds.clip_names])
  expr = np.concatenate([ds.clip(n)["expression"][:] for n in ds.clip_names])
  opening = lms[:, 66, 1] - lms[:, 62, 1]  # inner lips, bottom minus top
  closed, open_ = np.argmin(opening), np.argmax(opening)
  assert opening[open_] - opening[closed] > 2.0  # pixels at 64: GRID speakers open their mouths
  delta = expr[open_] - expr[closed]
  assert abs(delta[0]) > 1.5  # expressions have unit variance over the person's frames
  assert abs(delta[0]) == np.abs(delta).max()
  # And the leading coefficient follows the opening over all frames.
  assert abs(np.corrcoef(opening, expr[:, 0])[0, 1]) > 0.7


# ------------------------------------------------------------------------------ resume, determinism


def test_resume_after_kill_gives_identical_dataset(
  dataset_dir, person_clips, cache_dir, tmp_path, monkeypatch
):
  import jaxtalk.data.preprocess as pre

  real = pre.write_clip
  calls = []

  def dying(plan, settings, fitter, model, out_dir):
    calls.append(plan.source.name)
    if len(calls) == 1:
      return real(plan, settings, fitter, model, out_dir)
    # Killed while writing the second clip: a half-written folder is left behind.
    partial = pathlib.Path(out_dir) / "clips" / f"{plan.source.name}.partial"
    partial.mkdir(parents=True)
    (partial / "frames.npy").write_bytes(b"\x93NUMPY half")
    raise KeyboardInterrupt

  out = tmp_path / "resumed"
  monkeypatch.setattr(pre, "write_clip", dying)
  with pytest.raises(KeyboardInterrupt):
    build(person_clips, out, cache_dir)
  monkeypatch.setattr(pre, "write_clip", real)
  with pytest.raises(DatasetError, match="not finished"):
    open_dataset(out)
  partial_ds = open_dataset(out, allow_incomplete=True)
  assert partial_ds.clip_names == [calls[0]]  # the half-written clip never reads as complete
  resumed = []
  monkeypatch.setattr(
    pre, "write_clip", lambda plan, *a: resumed.append(plan.source.name) or real(plan, *a)
  )
  build(person_clips, out, cache_dir)
  assert resumed == [calls[1]]  # the finished clip was skipped
  assert _files(out) == _files(dataset_dir)
  # A finished dataset re-run is a no-op.
  resumed.clear()
  build(person_clips, out, cache_dir)
  assert resumed == [] and _files(out) == _files(dataset_dir)


def test_two_runs_are_byte_identical_with_workers(dataset_dir, person_clips, cache_dir, tmp_path):
  out = tmp_path / "again"
  build(person_clips, out, cache_dir, workers=2)
  files = _files(out)
  assert len(files) == len(_files(dataset_dir))
  for name, data in _files(dataset_dir).items():
    assert files[name] == data, name


# ------------------------------------------------------------------------------ output folder


def test_output_folder_checks(dataset_dir, person_clips, cache_dir, tmp_path):
  stranger = tmp_path / "stranger"
  stranger.mkdir()
  (stranger / "notes.txt").write_text("mine")
  with pytest.raises(DatasetError, match="not a jaxtalk dataset"):
    build(person_clips, stranger, cache_dir)
  old = tmp_path / "old"
  old.mkdir()
  (old / "manifest.json").write_text(json.dumps({"format": "jaxtalk-dataset", "version": 0}))
  with pytest.raises(DatasetError, match="version 0"):
    build(person_clips, old, cache_dir)
  with pytest.raises(DatasetError, match="version 0"):
    open_dataset(old)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "manifest.json").write_text(json.dumps({"name": "something else"}))
  with pytest.raises(DatasetError, match="not a jaxtalk-dataset manifest"):
    build(person_clips, foreign, cache_dir)
  with pytest.raises(DatasetError, match="no such dataset"):
    open_dataset(tmp_path / "missing")
  with pytest.raises(DatasetError, match="other settings"):
    build(person_clips, dataset_dir, cache_dir, overrides=["data.crop_scale=2.0"])
  with pytest.raises(DatasetError, match="other settings or inputs"):
    build(person_clips[:1], dataset_dir, cache_dir)


# ------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def source(person_clips):
  """45 frames and their audio from a real clip, to build broken variants from."""
  frames = read_frames(person_clips[0], 25.0)[:45]
  audio = read_audio(person_clips[0], SR)[: 45 * SR // 25]
  return frames, audio


def test_corrupt_file(tmp_path, cache_dir):
  bad = tmp_path / "corrupt.mp4"
  bad.write_bytes(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())
  with pytest.raises(VideoReadError, match="corrupt.mp4"):
    build([bad], tmp_path / "ds", cache_dir)
  with pytest.raises(VideoReadError, match="no such file"):
    build([tmp_path / "nothing.mp4"], tmp_path / "ds2", cache_dir)
  (tmp_path / "empty").mkdir()
  with pytest.raises(VideoReadError, match="no video files"):
    build([tmp_path / "empty"], tmp_path / "ds3", cache_dir)


def test_no_audio_and_silent_audio(source, tmp_path, cache_dir):
  frames, audio = source
  mute = tmp_path / "mute.mp4"
  write_video(mute, frames, 25.0)
  with pytest.raises(AudioReadError, match="no audio track"):
    build([mute], tmp_path / "ds", cache_dir)
  silent = tmp_path / "silent.mp4"
  write_video(silent, frames, 25.0, audio=np.zeros_like(audio), sample_rate=SR)
  with pytest.raises(AudioReadError, match="silent"):
    build([silent], tmp_path / "ds2", cache_dir)


def test_audio_shorter_than_video(source, tmp_path, cache_dir):
  """Decision: video past the end of the audio is dropped (reported); more than
  data.max_audio_shortfall_s of it is an error."""
  frames, audio = source
  short = tmp_path / "short.mp4"
  write_video(short, frames, 25.0, audio=audio[: SR * 1], sample_rate=SR)  # 1.0 s of 1.8 s
  m = build([short], tmp_path / "ds", cache_dir)
  (drop,) = m["sources"]["short"]["dropped"]
  assert drop["reason"] == "after_audio_end" and 25 <= drop["start"] <= 27 and drop["stop"] == 45
  assert m["clips"]["short"]["num_frames"] == drop["start"]
  with pytest.raises(AudioReadError, match="max_audio_shortfall_s"):
    build([short], tmp_path / "ds2", cache_dir, overrides=["data.max_audio_shortfall_s=0.5"])


def test_frames_without_a_face(source, tmp_path, cache_dir):
  frames, audio = source
  frames = frames.copy()
  frames[15:30] = 128  # the face is gone for 15 frames (longer than the tracker's hold)
  gap = tmp_path / "gap.mp4"
  write_video(gap, frames, 25.0, audio=audio, sample_rate=SR)
  m = build([gap], tmp_path / "ds", cache_dir)
  assert m["sources"]["gap"]["dropped"] == [{"start": 15, "stop": 30, "reason": "no_face"}]
  # The clip splits so that no training window straddles the gap.
  assert m["sources"]["gap"]["clips"] == ["gap@00000", "gap@00030"]
  ds = open_dataset(tmp_path / "ds")
  assert [ds.num_frames(n) for n in ds.clip_names] == [15, 15]
  second = ds.clip("gap@00030")
  assert second.info["first_frame"] == 30 and second.info["mel_offset"] == 120
  # Its mel starts at its first frame (mel frame 4 * 30), the centre of its first audio window.
  np.testing.assert_array_equal(second["audio"][0][10], second["mel"][0])
  with pytest.raises(NoFaceError, match="max_missing_fraction"):
    build([gap], tmp_path / "ds2", cache_dir, overrides=["data.no_face=fail"])
  m = build(
    [gap],
    tmp_path / "ds3",
    cache_dir,
    overrides=["data.no_face=fail", "data.max_missing_fraction=0.5"],
  )
  assert len(m["clips"]) == 2


def test_variable_frame_rate_is_resampled(source, tmp_path, cache_dir):
  import av

  frames, audio = source
  path = tmp_path / "vfr.mp4"
  with av.open(str(path), "w") as c:
    v = c.add_stream("libx264", rate=25)
    v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    v.codec_context.time_base = v.time_base = fractions.Fraction(1, 1000)
    a = c.add_stream("aac", rate=SR)
    a.layout = "mono"
    t = 0
    for i, f in enumerate(frames[:40]):  # 30 ms and 50 ms apart in turn: 1.6 s
      vf = av.VideoFrame.from_ndarray(f, format="rgb24")
      vf.pts, vf.time_base = t, fractions.Fraction(1, 1000)
      c.mux(v.encode(vf))
      t += 30 if i % 2 == 0 else 50
    c.mux(v.encode())
    af = av.AudioFrame.from_ndarray(
      audio[: int(1.6 * SR)].reshape(1, -1), format="flt", layout="mono"
    )
    af.sample_rate = SR
    c.mux(a.encode(af))
    c.mux(a.encode())
  m = build([path], tmp_path / "ds", cache_dir)
  src = m["sources"]["vfr"]
  assert src["variable_frame_rate"] and src["resampled"] and src["frames"] == 40  # 1.6 s at 25


def test_skip_bad_leaves_out_broken_inputs(person_clips, tmp_path, cache_dir):
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"\x00\x01\x02not a video")
  m = build([bad, person_clips[0]], tmp_path / "ds", cache_dir, skip_bad=True)
  assert list(m["clips"]) == [person_clips[0].stem] and "broken" in m["skipped"]


def test_deca_without_torch_is_a_clear_error(person_clips, tmp_path, cache_dir):
  try:
    import torch  # noqa: F401

    pytest.skip("PyTorch is installed here; the message under test is for machines without it")
  except ImportError:
    pass
  with pytest.raises(JaxtalkError, match="PyTorch"):
    build(
      person_clips[:1],
      tmp_path / "ds",
      cache_dir,
      overrides=["data.expression_dim=53"],
      face_model="deca",
    )
  with pytest.raises(JaxtalkError, match="expression_dim=53"):
    build(person_clips[:1], tmp_path / "ds", cache_dir, face_model="deca")


# ------------------------------------------------------------------------------ CLI


def test_cli_info_and_preview(dataset_dir, tmp_path, capsys):
  import cv2

  from jaxtalk.cli import main

  assert main(["dataset", "info", str(dataset_dir)]) == 0
  out = capsys.readouterr().out
  assert "2 from 2 videos, 150 frames" in out and "reprojection" in out and "disk" in out
  png = tmp_path / "preview.png"
  assert main(["dataset", "preview", str(dataset_dir), "-o", str(png), "--per-clip", "2"]) == 0
  image = cv2.imread(str(png))
  assert image.shape == (4 * 256, 4 * 256, 3)  # 64 px crops shown 4x (>= 256 px per panel)
  mp4 = tmp_path / "preview.mp4"
  assert main(["dataset", "preview", str(dataset_dir), "-o", str(mp4), "--frames", "5"]) == 0
  assert len(read_frames(mp4)) == 10
  assert main(["dataset", "info", str(tmp_path / "nope")]) == 2
  assert "no such dataset" in capsys.readouterr().err
  assert main(["preprocess", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "x")]) == 2
  assert "no such file" in capsys.readouterr().err


def test_dataset_pickles_without_its_arrays(dataset_dir):
  """Grain hands the dataset to worker processes: it must pickle small and reopen its maps."""
  import pickle

  ds = open_dataset(dataset_dir)
  clip = ds.clip(ds.clip_names[0])
  frames = np.asarray(clip["frames"][:2])
  blob = pickle.dumps(ds)
  assert len(blob) < 100_000
  again = pickle.loads(blob)
  np.testing.assert_array_equal(again.clip(ds.clip_names[0])["frames"][:2], frames)
  assert len(pickle.dumps(clip)) < 100_000


def test_copy_of_dataset_opens_anywhere(dataset_dir, tmp_path):
  """Nothing in a dataset refers to its own location: a moved copy reads the same."""
  moved = tmp_path / "moved"
  shutil.copytree(dataset_dir, moved)
  a, b = open_dataset(dataset_dir), open_dataset(moved)
  np.testing.assert_array_equal(
    a.clip(a.clip_names[0])["frames"][:3], b.clip(b.clip_names[0])["frames"][:3]
  )
