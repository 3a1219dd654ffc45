"""Tiny config for tests and CPU demos: 64x64 crops, narrow networks, a few steps.

Run:
  jaxtalk demo ../shared/data/real/grid/bbaf2n.mpg --config configs/tiny.py
  jaxtalk train renderer --config configs/tiny.py --data data/tiny --workdir runs/tiny
"""

import grid
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = grid.get_config()
  with c.unlocked():
    c.name = "tiny"
  c.data.image_size = 64
  c.data.expression_dim = 16

  c.model.renderer.base_channels = 8
  c.model.renderer.n_res_blocks = 1
  c.model.renderer.audio_dim = 16
  c.model.renderer.audio_channels = 16
  c.model.renderer.patches = 2
  c.model.renderer.token_dim = 32
  c.model.renderer.depth = 1
  c.model.renderer.num_heads = 2
  c.model.renderer.mlp_ratio = 2.0
  c.model.renderer.max_frames = 16
  c.model.discriminator.base_channels = 8
  c.model.discriminator.n_layers = 2
  c.model.a2e.dim = 32
  c.model.a2e.depth = 1
  c.model.a2e.num_heads = 2
  c.model.a2e.mlp_ratio = 2.0
  c.model.a2e.max_frames = 128
  c.model.a2e.audio_channels = 16

  c.train.seq_len = 4
  c.train.batch_size = 2
  c.train.lr = 1e-3
  c.train.smooth_lr = 1e-4
  c.train.disc_lr = 1e-3
  c.train.stage1_steps = 20
  c.train.stage2_steps = 10
  c.train.workers = 0
  c.train.log_every = 5
  c.train.sample_every = 10
  c.train.ckpt_every = 10
  c.train.eval_every = 10
  c.train.keep = 2
  # Issue 14: the VGG16 perceptual term (on in grid) multiplies the tiny 64² step time by ~20
  # on CPU (docs/benchmarks.md), so tests and CPU demos run without it; turn on with
  # --set train.perceptual=vgg16.
  c.train.perceptual = "off"

  c.a2e_train.seq_len = 16
  c.a2e_train.batch_size = 4
  c.a2e_train.lr = 1e-3
  c.a2e_train.steps = 30

  c.infer.window = 4
  c.infer.overlap = 2
  c.infer.batch_windows = 2

  # -- added by issue 15: the audio2expression that articulated best on held-out audio on this
  # CPU (docs/benchmarks.md, "Issue 15"); the loss/augmentation keys come from grid.py --
  c.model.a2e.update(grid.A2E_CPU_MODEL)
  c.a2e_train.lr = grid.A2E_CPU_LR
  return c
