"""Seam frames of windowed inference and the jumps there (jaxtalk.metrics.seams)."""

from __future__ import annotations

import numpy as np

from jaxtalk.metrics.seams import frame_jumps, jump_summary, landmark_jumps, seam_frames
from jaxtalk.synthesis.windows import blend_stream, window_starts


def test_centre_seams_by_hand():
  # 20 frames, windows of 8 overlapping by 4: [0-7], [4-11], [8-15], [12-19]. Frame 5 lies 2
  # frames inside window 0 and 1 inside window 1 (window 0 owns it); frame 6 lies 1 inside
  # window 0 and 2 inside window 1 (window 1 owns it): the switch is between 5 and 6, and so on.
  assert seam_frames(20, 8, 4, "centre").tolist() == [6, 10, 14]
  assert seam_frames(8, 8, 4, "centre").tolist() == []  # one window, no seam
  assert seam_frames(16, 8, 0, "centre").tolist() == [8]  # no overlap: the cut itself


def test_seams_are_where_blend_stream_switches_renders():
  # each window renders its own index everywhere: the output changes exactly at the seams
  n, window, overlap = 37, 12, 4
  starts = window_starts(n, window, overlap)
  outs = [np.full((window, 1), float(i)) for i in range(len(starts))]
  frames = np.array([f[0] for f in blend_stream(outs, starts, n, window, "centre")])
  switches = np.nonzero(np.diff(frames))[0] + 1
  assert seam_frames(n, window, overlap, "centre").tolist() == switches.tolist()
  # crossfade: the output changes on every frame of each ramp, and only there
  frames = np.array([f[0] for f in blend_stream(outs, starts, n, window, "crossfade")])
  changing = set((np.nonzero(np.abs(np.diff(frames)) > 1e-12)[0] + 1).tolist())
  assert changing <= set(seam_frames(n, window, overlap, "crossfade").tolist())


def test_jumps_at_seams_against_a_hand_made_video():
  # a static 4x4 "mouth" that brightens by 10 grey levels at each seam and by 1 elsewhere
  n, seams = 20, np.array([6, 10, 14])
  level = np.cumsum([0.0] + [10.0 if t in seams else 1.0 for t in range(1, n)])
  video = np.broadcast_to(level[:, None, None], (n, 4, 4))
  jumps = frame_jumps(video)
  assert np.isnan(jumps[0])
  s = jump_summary(jumps, seams, "mouth_")
  assert s["mouth_seam_jump_max"] == 10.0 and s["mouth_seam_jump_mean"] == 10.0
  assert s["mouth_other_jump_max"] == 1.0 and s["mouth_other_jump_mean"] == 1.0
  # no seam: the seam statistics are absent, not zero
  assert jump_summary(jumps, np.zeros(0, np.int64))["seam_jump_max"] is None


def test_landmark_jumps_are_mean_point_displacements():
  pts = np.zeros((3, 2, 2))
  pts[1, 0] = [3.0, 4.0]  # one point moves by 5, the other stays: mean 2.5
  pts[2] = pts[1]
  np.testing.assert_allclose(landmark_jumps(pts)[1:], [2.5, 0.0])
