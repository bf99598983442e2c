"""Policy objectives beyond PPO's clipped surrogate: GSPO, GMPO, CISPO, SAPO, DPPO, Clip-Cov, KL-Cov, GPG.

Each is a pure per-token loss ``f32[B, T]`` (to *minimise*; 0 at masked tokens) over
``(logp, old_logp, advantages, mask)`` — the same contract as ``losses.clipped_surrogate`` — so it composes
with every aggregation mode of ``losses.aggregate`` and with exact micro-batch accumulation. Inputs:

  logp: f32[B, T] log π_θ of the sampled tokens (differentiated)
  old_logp: f32[B, T] log π_old (the behaviour policy; under stop_gradient)
  advantages: f32[B] (one per sequence, broadcast) or f32[B, T]; under stop_gradient
  mask: bool[B, T] response tokens

ρ_t = π_θ(y_t) / π_old(y_t) throughout. Sequence-level objectives (GSPO, GMPO) put the sequence's loss on
each of its tokens, so ``aggregation="seq_mean_token_mean"`` gives the paper's 1/G Σ_i form exactly.

Token selections that need statistics of the whole batch (Clip-Cov / KL-Cov's covariance, the top-ρ
entropy tokens) are separate functions returning a bool[B, T] mask (:func:`cov_scores`,
:func:`clip_cov_mask`, :func:`kl_cov_mask`, :func:`top_entropy_mask`): compute them once on the whole
minibatch and pass the masks to every micro-batch, and the selection does not depend on the split.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from ngrpo_jax import losses
from ngrpo_jax._checks import as_float, check_nonnegative, check_shape

Array = jax.Array

sg = jax.lax.stop_gradient


def _inputs(logp, old_logp, advantages, mask):
  return losses.policy_inputs(logp, old_logp, advantages, mask, True)


def _check_positive(value, name):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
    raise ValueError(f"`{name}` must be a number > 0, got {value!r}.")


def _check_fraction(value, name):
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
    raise ValueError(f"`{name}` must be a number in (0, 1], got {value!r}.")


def _seq_mean(x, mask):
  """Per-row mean of x over valid tokens, f32[B] (0 for an empty row)."""
  n = jnp.sum(mask, axis=-1)
  return jnp.sum(jnp.where(mask, x, 0.0), axis=-1) / jnp.maximum(n, 1)


# ----------------------------------------------------------------------------------------------------------
# Sequence-level ratios.
# ----------------------------------------------------------------------------------------------------------


def gspo(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_low: float = 3e-4,
         eps_high: float = 4e-4, token_level: bool = False) -> Array:
  """GSPO / GSPO-token (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv 2507.18071, Eq. 5–7, 13–14).

  s_i = exp( (1/|y_i|) Σ_t log ρ_{i,t} )                               (sequence ratio, length-normalised)
  GSPO:        l_{i,t} = −min(s_i A_i, clip(s_i, 1 − eps_low, 1 + eps_high) A_i)   for every token t of y_i
  GSPO-token:  s_{i,t} = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)]  in place of s_i (same value; gradient s_i ∇log π_θ(y_t))

  Clipping is decided per sequence. With ``aggregation="seq_mean_token_mean"`` the loss is the paper's
  (1/G) Σ_i −min(s_i A_i, clip(s_i) A_i). With one advantage per sequence GSPO and GSPO-token have the same
  value and gradient (paper Eq. 14); GSPO-token also accepts per-token advantages A_{i,t}. A sequence of one
  token is PPO's clipped surrogate with (eps_neg, eps_pos) = (eps_low, eps_high).

  Args:
    logp, old_logp, advantages, mask: see the module docstring.
    eps_low, eps_high: the sequence clip range (paper: 3e-4 / 4e-4; verl's GSPO recipe the same).
    token_level: GSPO-token (True) or GSPO (False, default).

  Returns:
    f32[B, T] per-token loss.
  """
  check_nonnegative(eps_low, "eps_low")
  check_nonnegative(eps_high, "eps_high")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  log_s = _seq_mean(logp - old_logp, mask)[:, None]                      # [B, 1]
  if token_level:
    log_s = sg(log_s) + logp - sg(logp)
  s = jnp.exp(log_s)
  per_token = jnp.maximum(-adv * s, -adv * jnp.clip(s, 1.0 - eps_low, 1.0 + eps_high))
  return jnp.where(mask, per_token, 0.0)


def gmpo(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_low: float = 0.4,
         eps_high: float = 0.4) -> Array:
  """GMPO, geometric-mean policy optimisation (Zhao et al. 2025, arXiv 2507.20673).

  J_i = sgn(A_i) · ( Π_t |min(ρ_t A_i, clip(ρ_t, e^{−eps_low}, e^{eps_high}) A_i)| )^{1/|y_i|}
      = A_i · exp( (1/|y_i|) Σ_t ℓ_t ),   ℓ_t = min(log ρ_t, clip(log ρ_t, −eps_low, eps_high))  if A_i > 0
                                           ℓ_t = max(log ρ_t, clip(log ρ_t, −eps_low, eps_high))  if A_i < 0
  l_{i,t} = −J_i on every token of y_i (the clip acts token-wise in log space, the mean is geometric).

  The advantage is one per sequence (a per-token array is reduced to its mean over the sequence's valid
  tokens). One token per sequence gives PPO with (eps_neg, eps_pos) = (1 − e^{−eps_low}, e^{eps_high} − 1).

  Args:
    eps_low, eps_high: log-space clip range (paper: 0.4 / 0.4, i.e. ratios in (e^{−0.4}, e^{0.4})).

  Returns:
    f32[B, T] per-token loss.
  """
  check_nonnegative(eps_low, "eps_low")
  check_nonnegative(eps_high, "eps_high")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  a = _seq_mean(adv, mask)[:, None]
  log_ratio = logp - old_logp
  clipped = jnp.clip(log_ratio, -eps_low, eps_high)
  ell = jnp.where(a > 0, jnp.minimum(log_ratio, clipped), jnp.maximum(log_ratio, clipped))
  per_seq = -a * jnp.exp(_seq_mean(ell, mask)[:, None])
  return jnp.where(mask, jnp.broadcast_to(per_seq, logp.shape), 0.0)


# ----------------------------------------------------------------------------------------------------------
# Token-level alternatives to the hard clip.
# ----------------------------------------------------------------------------------------------------------


def cispo(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_low: Optional[float] = None,
          eps_high: float = 0.28) -> Array:
  """CISPO, clipped IS-weight policy optimisation (MiniMax-M1, arXiv 2506.13585, §3.1).

  l_t = −sg( clip(ρ_t, 1 − eps_low, 1 + eps_high) ) · A_t · log π_θ(y_t)

  The importance weight is clipped and detached, never the token: every token keeps a gradient
  −r̂_t A_t ∇log π_θ (PPO's clip zeroes it outside the range). MiniMax-M1 sets no lower bound (a large
  eps_low); ``eps_low=None`` (default) means none (weight in [0, 1 + eps_high]). The paper gives no value of
  eps_high; the default 0.28 is DAPO's clip-higher (our choice). At ρ = 1 the gradient equals PPO's.

  Returns:
    f32[B, T] per-token loss (its value is a surrogate for the gradient, not the objective).
  """
  check_nonnegative(eps_high, "eps_high")
  if eps_low is not None:
    check_nonnegative(eps_low, "eps_low")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  ratio = jnp.exp(sg(logp) - old_logp)
  weight = jnp.minimum(ratio, 1.0 + eps_high)
  if eps_low is not None:
    weight = jnp.maximum(weight, 1.0 - eps_low)
  return jnp.where(mask, -sg(weight) * adv * logp, 0.0)


def sapo(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, tau_pos: float = 1.0,
         tau_neg: float = 1.05) -> Array:
  """SAPO, soft adaptive policy optimisation (Gao et al. 2025, arXiv 2511.20347).

  l_t = −f(ρ_t) A_t,   f(ρ) = (4/τ) σ(τ (ρ − 1)),   τ = tau_pos if A_t > 0 else tau_neg

  A smooth gate instead of the hard clip: the gradient weight ∂f/∂ρ = 4 σ(1 − σ) is 1 at ρ = 1 (the gradient
  equals PPO's on-policy) and decays smoothly as ρ moves away, faster for negative tokens (tau_neg > tau_pos).
  Defaults are the paper's (1.0 / 1.05), also TRL's and verl's.

  Returns:
    f32[B, T] per-token loss.
  """
  _check_positive(tau_pos, "tau_pos")
  _check_positive(tau_neg, "tau_neg")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  ratio = jnp.exp(logp - old_logp)
  tau = jnp.where(adv > 0, tau_pos, tau_neg)
  gate = 4.0 / tau * jax.nn.sigmoid(tau * (ratio - 1.0))
  return jnp.where(mask, -gate * adv, 0.0)


DPPO_DIVERGENCES = ("tv", "kl")


def dppo_divergence(logp: Array, old_logp: Array, *, divergence: str = "tv") -> Array:
  """The binary approximation of DPPO's per-token policy divergence (Qi et al. 2026, arXiv 2602.04879).

  With p = π_θ(y_t), q = π_old(y_t) the two-outcome ("sampled token" vs "anything else") divergence:
    tv: |p − q|,   kl: q log(q/p) + (1 − q) log((1 − q)/(1 − p)).
  """
  if divergence not in DPPO_DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {DPPO_DIVERGENCES}, got {divergence!r}.")
  p, q = jnp.exp(as_float(logp)), jnp.exp(as_float(old_logp))
  if divergence == "tv":
    return jnp.abs(p - q)
  tiny = 1e-12
  return (q * (jnp.log(jnp.maximum(q, tiny)) - jnp.log(jnp.maximum(p, tiny)))
          + (1 - q) * (jnp.log(jnp.maximum(1 - q, tiny)) - jnp.log(jnp.maximum(1 - p, tiny))))


def dppo(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, divergence: str = "tv",
         delta: float = 0.15) -> Array:
  """DPPO, divergence proximal policy optimisation, binary variants (Qi et al. 2026, arXiv 2602.04879).

  l_t = −A_t · ρ_t             inside the trust region
  l_t = −A_t · sg(ρ_t)         (no gradient) when D_t > delta and the update moves further out:
                               A_t > 0 and π_θ > π_old, or A_t < 0 and π_θ < π_old

  D_t is :func:`dppo_divergence` (Binary-TV or Binary-KL). Like PPO's one-sided clip the mask only stops
  updates that would enlarge the divergence; unlike it, the trust region is a divergence of the sampled
  token's probability rather than a ratio band (which over-constrains rare tokens and under-constrains
  frequent ones). ``delta`` = 0.15 is our default for TV (the paper tunes it per divergence).

  Returns:
    f32[B, T] per-token loss.
  """
  _check_positive(delta, "delta")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  ratio = jnp.exp(logp - old_logp)
  d = sg(dppo_divergence(logp, old_logp, divergence=divergence))
  outward = jnp.where(adv > 0, logp > old_logp, logp < old_logp)
  masked = (d > delta) & outward & (adv != 0)
  return jnp.where(mask, -adv * jnp.where(masked, sg(ratio), ratio), 0.0)


def gpg(logp: Array, old_logp: Array, advantages: Array, mask: Array) -> Array:
  """GPG's policy loss (Chu et al. 2025, "GPG: A Simple and Strong RL Baseline", arXiv 2504.02546).

  l_t = −A_t · log π_θ(y_t)     (plain policy gradient: no ratio, no clip, no KL)

  ``old_logp`` is accepted for the common signature and unused. GPG's advantage (group-centred, scaled by
  the share of samples with non-zero advantage) is the estimator ``advantages.gpg``.
  """
  logp, _, adv, mask = _inputs(logp, old_logp, advantages, mask)
  return jnp.where(mask, -adv * logp, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Clip-Cov / KL-Cov and the high-entropy token mask: whole-batch token selections.
# ----------------------------------------------------------------------------------------------------------


def _top_count_mask(scores, eligible, count):
  """bool mask of the ``count`` (traced int) largest ``scores`` among ``eligible`` entries (ties: all kept)."""
  flat = jnp.where(eligible, scores, -jnp.inf).reshape(-1)
  ordered = jnp.sort(flat)[::-1]
  idx = jnp.clip(count - 1, 0, flat.shape[0] - 1)
  threshold = ordered[idx]
  return eligible & (scores >= threshold) & (count > 0)


def cov_scores(logp: Array, advantages: Array, mask: Array) -> Array:
  """Token-wise centred cross-product of log-prob and advantage (Cui et al. 2025, arXiv 2505.22617).

  Cov_t = (log π(y_t) − mean(log π)) · (A_t − mean(A)),   means over the valid tokens of the batch.
  Returns f32[B, T] (0 at masked tokens), under stop_gradient.
  """
  logp, _, adv, mask = losses.policy_inputs(sg(as_float(logp)), sg(as_float(logp)), advantages, mask, True)
  n = jnp.maximum(jnp.sum(mask), 1)
  mean = lambda x: jnp.sum(jnp.where(mask, x, 0.0)) / n
  return jnp.where(mask, (logp - mean(logp)) * (adv - mean(adv)), 0.0)


def clip_cov_mask(cov: Array, mask: Array, key: jax.Array, *, clip_ratio: float = 2e-4,
                  cov_low: float = 1.0, cov_high: float = 5.0) -> Array:
  """Clip-Cov's detached tokens (Cui et al. 2025, arXiv 2505.22617).

  Among the valid tokens with cov_low <= Cov_t <= cov_high, max(⌊clip_ratio · N_tok⌋, 1) are chosen uniformly
  at random (``key``); their gradient is removed. Returns bool[B, T]. Defaults are the paper's (r = 2e-4,
  ω_low = 1, ω_high = 5).
  """
  _check_fraction(clip_ratio, "clip_ratio")
  cov = as_float(cov)
  mask = jnp.asarray(mask).astype(bool)
  check_shape(mask, cov.shape, "mask", "cov")
  candidates = mask & (cov >= cov_low) & (cov <= cov_high)
  count = jnp.maximum(jnp.floor(clip_ratio * jnp.sum(mask)).astype(jnp.int32), 1)
  noise = jax.random.uniform(key, cov.shape)
  return _top_count_mask(noise, candidates, jnp.minimum(count, jnp.sum(candidates)))


def kl_cov_mask(cov: Array, mask: Array, *, top_frac: float = 2e-3) -> Array:
  """KL-Cov's penalised tokens (Cui et al. 2025, arXiv 2505.22617): the top
  max(⌊top_frac · N_tok⌋, 1) valid tokens by Cov_t (ties at the threshold are all kept). bool[B, T].
  Default 2e-3 (the paper's value for Qwen2.5-7B; 2e-4 for 32B)."""
  _check_fraction(top_frac, "top_frac")
  cov = as_float(cov)
  mask = jnp.asarray(mask).astype(bool)
  check_shape(mask, cov.shape, "mask", "cov")
  count = jnp.maximum(jnp.floor(top_frac * jnp.sum(mask)).astype(jnp.int32), 1)
  return _top_count_mask(cov, mask, count)


def clip_cov(logp: Array, old_logp: Array, advantages: Array, mask: Array, detach: Array, *,
             eps_low: float = 0.2, eps_high: float = 0.2) -> Array:
  """Clip-Cov's per-token loss: PPO's clipped surrogate, with the tokens of ``detach`` (bool[B, T], from
  :func:`clip_cov_mask`) contributing no gradient (Cui et al. 2025, arXiv 2505.22617, as verl's
  ``clip_cov`` loss)."""
  per_token = losses.clipped_surrogate(logp, old_logp, advantages, mask, eps_pos=eps_high, eps_neg=eps_low)
  detach = jnp.asarray(detach).astype(bool)
  check_shape(detach, per_token.shape, "detach", "logp")
  return jnp.where(detach, sg(per_token), per_token)


def kl_cov(logp: Array, old_logp: Array, advantages: Array, mask: Array, penalise: Array, *,
           coef: float = 1.0) -> Array:
  """KL-Cov's per-token loss (Cui et al. 2025, arXiv 2505.22617, as verl's ``kl_cov`` loss):

  l_t = −ρ_t A_t + coef · |log π_θ(y_t) − log π_old(y_t)| · 1[t ∈ penalise]     (no ratio clip)

  ``penalise``: bool[B, T] from :func:`kl_cov_mask`. ``coef`` = 1 (the paper's β).
  """
  check_nonnegative(coef, "coef")
  logp, old_logp, adv, mask = _inputs(logp, old_logp, advantages, mask)
  penalise = jnp.asarray(penalise).astype(bool)
  check_shape(penalise, logp.shape, "penalise", "logp")
  ratio = jnp.exp(logp - old_logp)
  d = logp - old_logp
  kl = jnp.where(d == 0, 0.0, jnp.abs(d))      # subgradient 0 at ρ = 1 (jnp.abs has gradient 1 at 0)
  return jnp.where(mask, -ratio * adv + coef * jnp.where(penalise, kl, 0.0), 0.0)


def top_entropy_mask(entropy: Array, mask: Array, *, top_frac: float = 0.2) -> Array:
  """The high-entropy "forking" tokens (Wang et al. 2025, "Beyond the 80/20 Rule", arXiv 2506.01939).

  True for the valid tokens whose entropy is at or above the batch's (1 − top_frac) quantile, i.e. the top
  ⌈top_frac · N_tok⌉ entropies (ties at the threshold all kept). The paper trains the policy gradient on these
  only (top_frac ρ = 0.2); TRL's ``top_entropy_quantile`` is the same selection. bool[B, T].
  """
  _check_fraction(top_frac, "top_frac")
  entropy = as_float(entropy)
  mask = jnp.asarray(mask).astype(bool)
  check_shape(mask, entropy.shape, "mask", "entropy")
  count = jnp.ceil(top_frac * jnp.sum(mask)).astype(jnp.int32)
  return _top_count_mask(entropy, mask, count)
