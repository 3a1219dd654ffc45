"""CPU config (issue 13): what a user without an accelerator sees, sized for minutes of training
on a 2-core CPU. The default of `jaxtalk bench quality` on machines without an accelerator.

Crop size. The renderer should work at about the face's own resolution: upscaling a small crop
onto a large face blurs the mouth. `data.image_size_range = (lo, hi)` is the rule applied before
preprocessing (jaxtalk.face.crop.image_size_for, called by `jaxtalk bench quality`): the crop's
side in source pixels (data.crop_scale x the median tracked face box), rounded down to a multiple
of 32, clipped to [lo, hi]. lo = 128 keeps the teeth and lip edges (the tiny config's 64 loses
them). hi = 128 here: a 256 crop costs ~4x the renderer's step time, and in 15 minutes on the loaded
shared CPU the 128 renderer got only 18 steps (docs/benchmarks.md); raise it (`--set
data.image_size_range="(128, 256)"`) when the budget allows. `data.image_size` is the value used
when no clip is at hand (the rule then has nothing to measure).

Widths and depths, by measurement on the quiet 2-core CPU (`jaxtalk bench train --config cpu
--sizes 128 --batch 2 --frames 6 --no-pipeline [--vgg] [--set ...]`, 2026-11-26; table in
docs/benchmarks.md): at 128x128, B=2, T=6 one step of the 4x-tiny widths (encoder 16 -> 32 ->
64, 2 residual blocks, 128-d tokens) takes 2.5-2.9 s, ~350 steps in a 20-minute budget; the
tiny widths at 128x128 (encoder 8 -> 16 -> 32, 1 residual block, 64-d tokens over 4x4 patches;
0.43 M generator parameters) take 0.62-0.75 s, ~1400 steps. Earlier runs showed a few hundred
steps leave the renderer untrained, so the narrow model it is.
Perceptual term off here (on in grid): VGG16 forward + backward through the 12 generated 128x128
frames of a step costs 3.5 s on this CPU, 6x the narrow generator's whole step; on the
mouth-centred half at 64 px wide it still cost 6 s a step (XLA's CPU convolutions are slow on
tiny maps with 512 channels). With it on, `bench quality` at 20 minutes trained 132 renderer
steps instead of 1268 and lost on every measure, LPIPS included (docs/benchmarks.md, issue 14,
item 5). Turn it on with --set train.perceptual=vgg16 when the budget allows.
audio2expression: the setting that articulated best on held-out audio (docs/benchmarks.md,
"audio2expression on held-out audio", run e3): the tiny config's mid-size model (dim 128, depth
2) with grid's loss and augmentation, 32-frame windows in batches of 4; `bench quality` gives it
15 % of the budget (3 of 20 minutes; e3 selected step ~300 of ~1000 in 3 minutes).

Run:
  jaxtalk bench quality ../shared/data/real/long/tedlieu_60s.mp4 -o runs/q --config cpu --minutes 20
"""

import grid
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = grid.get_config()
  with c.unlocked():
    c.name = "cpu"
    c.data.image_size_range = (128, 128)
  c.data.image_size = 128

  c.model.renderer.base_channels = 8  # encoder 8 -> 16 -> 32
  c.model.renderer.n_res_blocks = 1
  c.model.renderer.audio_dim = 32
  c.model.renderer.audio_channels = 64
  c.model.renderer.patches = 4
  c.model.renderer.token_dim = 64
  c.model.renderer.depth = 2
  c.model.renderer.num_heads = 4
  c.model.renderer.mlp_ratio = 2.0
  c.model.renderer.max_frames = 16
  c.model.discriminator.base_channels = 8
  c.model.discriminator.n_layers = 3

  c.train.seq_len = 6
  c.train.batch_size = 2
  # Higher than the paper's rates: minutes, not days, of training.
  c.train.lr = 5e-4
  c.train.smooth_lr = 1e-4
  c.train.disc_lr = 5e-4
  c.train.stage1_steps = 2000  # bench quality replaces the step counts by its time budget
  c.train.stage2_steps = 400
  c.train.workers = 0
  c.train.perceptual = "off"  # measured cost above
  c.train.log_every = 25
  c.train.sample_every = 1000
  c.train.ckpt_every = 500
  c.train.eval_every = 100  # also a2e's validation: it keeps the best of these (~45 steps/s)
  c.train.keep = 2

  c.model.a2e.update(grid.A2E_CPU_MODEL)
  c.a2e_train.lr = grid.A2E_CPU_LR
  c.a2e_train.seq_len = 32
  c.a2e_train.batch_size = 4
  c.a2e_train.steps = 1000

  c.infer.window = 6
  c.infer.overlap = 2
  c.infer.batch_windows = 2
  return c
