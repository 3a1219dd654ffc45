"""audio2expression: loss, audio augmentation and the train/eval steps (issue 15).

Plain L2 on unit-variance expression coefficients rewards the mean: every component weighs the
same, the mouth-opening ones included, and a prediction that hedges towards 0 loses little. The
loss here adds, each with its own weight in `a2e_train`:

- `mouth_weight`: L2 on the face model's mouth landmarks (iBUG 48-67, frontal model frame, in
  units of the neutral mouth width) and their velocity. The landmarks are linear in the
  expression (`mouth_basis`), so this weighs each direction by how far it moves the lips.
- `corr_weight`: 1 - Pearson correlation over the window's frames, per mouth landmark
  coordinate (and per expression component when there is no face model), which only rewards
  following the target's motion, not sitting at its mean.
- `std_weight`: |log(std(pred) / std(target))| over the window per mouth coordinate: the
  amplitude, directly.

Augmentation (`a2e_train.aug_*`) works on the raw log-mel windows before standardisation: a
random gain (a constant added to the log power), additive noise at a random level below the
window's peak (log(exp(mel) + noise)), and a small time stretch of each window around its
centre frame (linear interpolation along the window's time axis).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtalk.face.landmark3d import EXPRESSION_POINTS, FaceModel
from jaxtalk.train.state import A2EState
from jaxtalk.train.step import _commit, _pmean, normalise_audio

MOUTH_POINTS = tuple(range(48, 68))


def mouth_basis(face_model: FaceModel | None, expression_dim: int) -> np.ndarray:
  """`(E, 2 * 20)` float32: expression -> offsets of the mouth landmarks 48-67 (x, y) in the
  frontal model frame, in units of the neutral mouth width |p48 - p54|. Identity-like (`(E,
  E)` eye) when there is no landmark3d face model (e.g. DECA expressions)."""
  if face_model is None:
    return np.eye(expression_dim, dtype=np.float32)
  rows = []
  for p in MOUTH_POINTS:
    i = EXPRESSION_POINTS.index(p)
    rows += [2 * i, 2 * i + 1]
  basis = face_model.components[rows] * face_model.std[None, :]  # (40, E), mm per unit
  width = float(np.linalg.norm(face_model.identity[48, :2] - face_model.identity[54, :2]))
  return (basis / width).T.astype(np.float32)


def _pearson_bt(x_btc: jax.Array, y_btc: jax.Array) -> jax.Array:
  """Pearson correlation over the T axis, `(B, C)`; 0 where either series is flat."""
  x = x_btc - x_btc.mean(axis=1, keepdims=True)
  y = y_btc - y_btc.mean(axis=1, keepdims=True)
  sxy = jnp.sum(x * y, axis=1)
  sxx = jnp.sum(x * x, axis=1)
  syy = jnp.sum(y * y, axis=1)
  return sxy * jax.lax.rsqrt(sxx * syy + 1e-8)


def a2e_loss(
  pred_bte: jax.Array, target_bte: jax.Array, basis_ek: jax.Array, hp: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The audio2expression loss (see the module docstring); means over batch, frames, dims."""
  pred = pred_bte.astype(jnp.float32)
  target = target_bte.astype(jnp.float32)
  l2 = jnp.mean(jnp.square(pred - target))
  vel = jnp.mean(jnp.square(jnp.diff(pred, axis=1) - jnp.diff(target, axis=1)))
  # Mouth landmark offsets, scaled so that a 1-unit error of the leading component is ~1.
  m_pred = jnp.einsum("bte,ek->btk", pred, basis_ek)
  m_tgt = jnp.einsum("bte,ek->btk", target, basis_ek)
  scale = 1.0 / (jnp.mean(jnp.sum(jnp.square(basis_ek), axis=1)) + 1e-12)
  mouth = scale * jnp.mean(jnp.square(m_pred - m_tgt))
  mouth_vel = scale * jnp.mean(jnp.square(jnp.diff(m_pred, axis=1) - jnp.diff(m_tgt, axis=1)))
  corr = 1.0 - jnp.mean(_pearson_bt(m_pred, m_tgt))
  std_p = jnp.sqrt(jnp.var(m_pred, axis=1) + 1e-8)
  std_t = jnp.sqrt(jnp.var(m_tgt, axis=1) + 1e-8)
  std = jnp.mean(jnp.abs(jnp.log(std_p / std_t)))
  total = (
    hp.l2_weight * l2
    + hp.velocity_weight * vel
    + hp.mouth_weight * (mouth + mouth_vel)
    + hp.corr_weight * corr
    + hp.std_weight * std
  )
  return total, {
    "loss": total, "l2": l2, "velocity": vel, "mouth": mouth, "mouth_vel": mouth_vel,
    "corr": corr, "std": std,
  }  # fmt: skip


def augment_audio(audio_btwf: jax.Array, rng: jax.Array, hp: Any) -> jax.Array:
  """Random gain, noise and time stretch of raw log-mel windows (B, T, W, F), one draw per
  sequence (the same recording conditions across a window of frames)."""
  b, t, w, f = audio_btwf.shape
  k_gain, k_noise, k_on, k_stretch = jax.random.split(rng, 4)
  x = audio_btwf.astype(jnp.float32)
  if hp.aug_gain_db > 0:
    db = jax.random.uniform(k_gain, (b, 1, 1, 1), minval=-hp.aug_gain_db, maxval=hp.aug_gain_db)
    x = x + db * (jnp.log(10.0) / 10.0)  # power dB -> natural log of power
  if hp.aug_noise_prob > 0:
    # Noise power hp.aug_noise_snr_db (+- 5 dB) below the sequence's mean power per bin.
    ref = jax.scipy.special.logsumexp(x, axis=(1, 2), keepdims=True) - jnp.log(t * w)
    snr = hp.aug_noise_snr_db + jax.random.uniform(k_noise, (b, 1, 1, 1), minval=-5, maxval=5)
    noise = ref - snr * (jnp.log(10.0) / 10.0)
    on = jax.random.bernoulli(k_on, hp.aug_noise_prob, (b, 1, 1, 1))
    x = jnp.where(on, jnp.logaddexp(x, noise), x)
  if hp.aug_stretch > 0:
    # Resample each window's time axis around its centre by a factor in 1 +- aug_stretch.
    factor = 1.0 + jax.random.uniform(
      k_stretch, (b, 1, 1), minval=-hp.aug_stretch, maxval=hp.aug_stretch
    )
    centre = w // 2
    pos = jnp.clip(centre + (jnp.arange(w) - centre) * factor, 0, w - 1)  # (b, 1, w)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, w - 1)
    frac = (pos - lo)[..., None]  # (b, 1, w, 1)
    take = jax.vmap(lambda xb, ib: jnp.take(xb, ib[0], axis=1))  # per sequence
    x = take(x, lo) * (1 - frac) + take(x, hi) * frac
  return x


def a2e_train_step(
  state: A2EState,
  batch: Any,
  rng: jax.Array,
  *,
  model: Any,
  tx: optax.GradientTransformation,
  hp: Any,
  basis_ek: jax.Array,
  audio_norm: bool = True,
  axis_name: str | None = None,
) -> tuple[A2EState, dict[str, jax.Array]]:
  """One Adam update on `a2e_loss`, with augmentation and dropout keyed by `rng` (the runner
  draws it from the state's key and step, so a resumed run draws the same). An ensemble
  (model.a2e.members > 1) updates every member on its own loss and its own augmentation; the
  metrics are the members' means. Its batch holds members x a2e_train.batch_size windows, a
  batch for each member (members that see different windows differ more)."""
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
  k_aug, k_drop = jax.random.split(rng)
  members = int(getattr(model, "members", 1))
  if members > 1:
    # K * B windows: member k trains on rows [k B, (k + 1) B), augmented its own way
    batch = jax.tree.map(lambda x: x.reshape(members, -1, *x.shape[1:]), batch)
    audio = jax.vmap(lambda a, k: augment_audio(a, k, hp))(
      batch["audio"], jax.random.split(k_aug, members)
    )  # (K, B, T, W, F)
  else:
    audio = augment_audio(batch["audio"], k_aug, hp)
  audio = normalise_audio(audio, state.data_stats, audio_norm)
  target = batch["expression"].astype(jnp.float32)

  def loss_fn(params):
    if members == 1:
      pred = model.apply({"params": params}, audio, train=True, rngs={"dropout": k_drop})
      return a2e_loss(pred, target, basis_ek, hp)
    # An ensemble: the sum of the members' own losses, so each member's parameters get exactly
    # the gradient of its own loss (independent training; the eval step scores their mean).
    pred_kbte = model.apply(
      {"params": params}, audio, train=True, per_member=True, rngs={"dropout": k_drop}
    )
    totals_k, aux = jax.vmap(lambda p, y: a2e_loss(p, y, basis_ek, hp))(pred_kbte, target)
    return jnp.sum(totals_k), jax.tree.map(lambda v: jnp.mean(v, axis=0), aux)

  (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = _pmean(grads, axis_name)
  metrics = _pmean(aux, axis_name)
  norm = optax.tree.norm(grads)
  metrics["grad_norm"] = norm
  finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(norm)
  updates, opt = tx.update(grads, state.opt, state.params)
  new = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt=opt
  )
  new = _commit(state, new, finite)
  metrics.update(finite=finite, bad_step=new.bad_step, step=new.step)
  return new, metrics


def a2e_eval_step(
  state: A2EState,
  batch: Any,
  *,
  model: Any,
  hp: Any,
  basis_ek: jax.Array,
  audio_norm: bool = True,
  axis_name: str | None = None,
) -> dict[str, jax.Array]:
  """The loss terms of the prediction (an ensemble's: its members' mean). An ensemble also gives
  each member's own loss, `member_loss` `(K,)`, by which training keeps each member's best
  parameters (jaxtalk/train/a2e_train.py)."""
  audio = normalise_audio(batch["audio"], state.data_stats, audio_norm)
  if int(getattr(model, "members", 1)) == 1:
    pred = model.apply({"params": state.params}, audio, train=False)
    return _pmean(a2e_loss(pred, batch["expression"], basis_ek, hp)[1], axis_name)
  pred_kbte = model.apply({"params": state.params}, audio, train=False, per_member=True)
  _, aux = a2e_loss(jnp.mean(pred_kbte, axis=0), batch["expression"], basis_ek, hp)
  aux["member_loss"] = jax.vmap(lambda p: a2e_loss(p, batch["expression"], basis_ek, hp)[0])(
    pred_kbte
  )
  return _pmean(aux, axis_name)
