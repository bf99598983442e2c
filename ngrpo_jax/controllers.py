"""Coefficients that follow a target: the adaptive KL controller, KL folded into the reward, and the adaptive
entropy coefficient. Pure functions of (coefficient, observation) → new coefficient; the caller keeps the
coefficient in its state (the trainer: ``TrainState.controllers``).
"""
import jax
import jax.numpy as jnp

from ngrpo_jax import losses
from ngrpo_jax._checks import as_float, check_nonnegative, check_rank, check_shape

Array = jax.Array


def _check_positive(value, name):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
    raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")


# ----------------------------------------------------------------------------------------------------------
# KL in the reward.
# ----------------------------------------------------------------------------------------------------------


def kl_in_reward(rewards: Array, logp: Array, ref_logp: Array, mask: Array, beta) -> tuple[Array, Array]:
  """Folds a per-token KL penalty into the reward (Ziegler et al. 2019, arXiv 1909.08593, Eq. 2; Ouyang et al.
  2022; verl ``use_kl_in_reward``, OpenRLHF's ``init_kl_coef``).

  token rewards:   r_t = −β · k1_t + 1[t = last] · R,     k1_t = log π_old(y_t) − log π_ref(y_t)
  sequence reward: R' = Σ_t r_t = R − β Σ_t k1_t

  The KL is the k1 estimator at the rollout policy (the reward is a constant of the update; no gradient).
  Sequence-level estimators (GRPO, RLOO, ...) take R'; GAE / REINFORCE++ with returns take the token rewards.

  Args:
    rewards: f32[B] sequence rewards R.
    logp: f32[B, T] log π_old of the response tokens; ref_logp: f32[B, T] log π_ref; mask: bool[B, T].
    beta: the KL coefficient (a float or a traced scalar, e.g. :func:`adaptive_kl_coef`'s).

  Returns:
    (sequence rewards f32[B], token rewards f32[B, T] with R on each row's last valid token).
  """
  rewards = as_float(rewards)
  check_rank(rewards, 1, "rewards")
  logp, ref_logp = as_float(logp), as_float(ref_logp)
  check_rank(logp, 2, "logp")
  check_shape(ref_logp, logp.shape, "ref_logp", "logp")
  check_shape(rewards, logp.shape[:1], "rewards", "logp[:, 0]")
  mask = jnp.asarray(mask).astype(bool)
  check_shape(mask, logp.shape, "mask", "logp")
  k1 = jax.lax.stop_gradient(jnp.where(mask, losses.kl_per_token(logp, ref_logp, estimator="k1"), 0.0))
  t = logp.shape[1]
  last = t - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
  is_last = (jnp.arange(t)[None] == last[:, None]) & mask
  token = -beta * k1 + jnp.where(is_last, rewards[:, None], 0.0)
  return rewards - beta * jnp.sum(k1, axis=-1), jnp.where(mask, token, 0.0)


def adaptive_kl_coef(beta, observed_kl, n_steps, *, target: float, horizon: float) -> Array:
  """The adaptive KL controller (Ziegler et al. 2019, arXiv 1909.08593, §2.2):

  e = clip(KL_observed / target − 1, −0.2, 0.2),   β ← β · (1 + e · n_steps / horizon)

  ``n_steps``: samples (or steps) since the last update, as in the paper (OpenRLHF / TRL pass the batch size;
  verl passes the batch size with horizon in samples). Returns the new β (f32 scalar).
  """
  _check_positive(target, "target")
  _check_positive(horizon, "horizon")
  e = jnp.clip(jnp.asarray(observed_kl, jnp.float32) / target - 1.0, -0.2, 0.2)
  return jnp.asarray(beta, jnp.float32) * (1.0 + e * jnp.asarray(n_steps, jnp.float32) / horizon)


# ----------------------------------------------------------------------------------------------------------
# Entropy.
# ----------------------------------------------------------------------------------------------------------


def adaptive_entropy_coef(coef, entropy, *, target: float, delta: float, coef_max: float = 1.0):
  """Skywork-OR1's adaptive entropy control (He et al. 2025, arXiv 2505.22312, "Adaptive Entropy Control").

  c ← clip(c + Δ, 0, c_max)  if the batch entropy e < target,   clip(c − Δ, 0, c_max) otherwise;
  the bonus applied at this step is c_new · 1[e <= target]   (the paper switches the entropy loss off while
  the entropy is above the target, so it never pushes entropy up past it).

  Args:
    coef: the current coefficient c (f32 scalar).
    entropy: the observed mean token entropy e of the rollout batch.
    target: the target entropy (paper: 0.2); delta: the step Δ (paper: 0.005); coef_max: an upper bound.

  Returns:
    (new coefficient c_new, the coefficient to apply this step) as f32 scalars.
  """
  check_nonnegative(target, "target")
  check_nonnegative(delta, "delta")
  check_nonnegative(coef_max, "coef_max")
  e = jnp.asarray(entropy, jnp.float32)
  coef = jnp.asarray(coef, jnp.float32)
  new = jnp.clip(jnp.where(e < target, coef + delta, coef - delta), 0.0, coef_max)
  return new, jnp.where(e <= target, new, 0.0)
