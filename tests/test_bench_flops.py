"""The MFU's model FLOPs (jaxtalk/bench/train.step_model_gflops, scripts/device_check.py) are
the train step's math as written. Reverse-mode autodiff costs, per conv or matrix product, one
forward for each gradient it takes (to the input, to the weights), so the stage-1 step is

  3 G  (forward; gradients to the activations and to the weights)
  + 2 D  (D on the generated frames inside G's loss: D's weights are constants there)
  + 6 D  (D's update: forward and both gradients, on the real and on the generated frames)
  + 3 VGG  (forward on both images; the gradient to the generated one only: frozen weights)

less the gradients to the step's inputs, which nothing needs: G's first conv's and, in D's
update, D's first conv's on both images. The renderer's elementwise work does not follow the
rule exactly, and Adam's updates and the erosion masks do not scale with the image: 1.0 % more
at this size, 0.06 % at 256². The count the MFU figures used until 2026-11-27, 3 G + 9 D + 4 VGG
with G in the CPU's forms, is 17 % more here, 12 % at 256²."""

from __future__ import annotations

import jax
import pytest

from jaxtalk.bench.model import abstract_call, model_gflops, xla_flops
from jaxtalk.bench.train import step_model_gflops
from jaxtalk.config import load_config
from jaxtalk.model_io import perceptual_module
from jaxtalk.models.discriminator import discriminator_from_config
from jaxtalk.models.renderer import renderer_from_config
from jaxtalk.train.synthetic import write_synthetic_dataset


def _forward_gflops(module, *shapes):
  variables, args = abstract_call(module, *shapes)
  return model_gflops(module.apply, variables, *args), variables["params"]


def _conv_gflops(kernel, out_hw, frames):
  kh, kw, c, f = kernel.shape
  return 2 * kh * kw * c * f * out_hw[0] * out_hw[1] * frames / 1e9


def test_step_flops_follow_the_autodiff_cost_rule(tmp_path, monkeypatch):
  # what the timed program may run must not change the count: the CPU's SAME reflect convs
  # (more outputs) and a study's padded channels
  monkeypatch.delenv("JAXTALK_CONV_FORMS", raising=False)
  monkeypatch.setenv("JAXTALK_REFLECT_CONV", "same")
  monkeypatch.setenv("JAXTALK_CONV_CHANNELS", "8")
  size, t = 64, 2
  cfg = load_config("grid")
  cfg.data.image_size, cfg.model.dtype = size, "float32"
  cfg.train.seq_len, cfg.train.batch_size = t, 1
  window, n_mels = cfg.data.audio_window, cfg.data.n_mels
  write_synthetic_dataset(
    tmp_path / "ds", n_clips=1, n_frames=t + 2, size=size,
    expression_dim=cfg.data.expression_dim, audio_window=window, n_mels=n_mels,
  )  # fmt: skip
  step = step_model_gflops(cfg, str(tmp_path / "ds"), 1, vgg=True, random_vgg=True)

  img, aud = (1, t, size, size, 3), (1, t, window, n_mels)
  g, g_params = _forward_gflops(renderer_from_config(cfg), img, img, aud)
  d, d_params = _forward_gflops(discriminator_from_config(cfg), img)
  vgg, _ = _forward_gflops(perceptual_module(cfg), img)
  g_first = _conv_gflops(g_params["encoder"]["ConvNormAct_0"]["Conv_0"]["kernel"], (size, size), t)
  d_first_kernel = d_params["ConvNormAct_0"]["Conv_0"]["kernel"]  # 4x4, stride 2
  d_first = _conv_gflops(d_first_kernel, (size // 2, size // 2), t)
  assert g_first > 0.005 * g and d_first > 0.01 * d  # the terms are not negligible here
  expected = 3 * g + 8 * d + 3 * vgg - g_first - 2 * d_first
  assert step == pytest.approx(expected, rel=0.02)

  # the count used until 2026-11-27: each forward's multiple, G counted in the CPU's forms
  monkeypatch.delenv("JAXTALK_CONV_CHANNELS")
  model = renderer_from_config(cfg)
  variables, args = abstract_call(model, img, img, aud)
  g_cpu_forms = xla_flops(jax.jit(lambda *a: model.apply(*a)).lower(variables, *args)) / 1e9
  assert g_cpu_forms > 1.02 * g
  assert 3 * g_cpu_forms + 9 * d + 4 * vgg > 1.1 * step
