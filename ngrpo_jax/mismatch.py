"""Sampler / trainer mismatch: importance weights, rejection of off-policy sequences, mismatch metrics.

The sampler and the trainer compute log-probabilities of the same tokens with different kernels (and, at
scale, different precisions or engines), and the sampler may draw from a *filtered* distribution q (temperature,
top-k, top-p, min-p) rather than from π itself. The policy-gradient estimate is then off-policy; with
ρ_t = π_trainer(y_t) / q(y_t) the correction is E_q[ρ · g] = E_π[g].

**Which log-probs does the sampler return?** ``sampling.generate`` returns both: ``logprobs`` = log π(y_t) of
the *unfiltered* softmax at temperature 1 (what PPO's old log-probs are), and, on request
(``return_sampling_logprobs=True``), ``sampling_logprobs`` = log q(y_t) of the distribution the token was
actually drawn from (temperature applied, top-k / top-p / min-p truncated and renormalised). With no filter
(temperature 1, top-p 1, top-k 0, min-p 0) the two are equal. The trainer's rollout records both
(``Groups.sampler_logp`` = log π, ``Groups.behaviour_logp`` = log q) and computes importance weights against
the behaviour distribution q, so the weights are right in both cases. Weights against log π alone (what a
sampler that returns unprocessed log-probs gives, TRL #6789) correct only the numerical mismatch and leave the
truncation bias: for a top-p sampler at temperature 1, q(y) = π(y) / Z_nucleus on the nucleus, so they are off
by the factor Z_nucleus ≤ 1 on every token.

Functions (all pure; shapes ``[B, T]`` with a response ``mask: bool[B, T]``):

* :func:`importance_weights` — token- or sequence-level, truncated (TIS, Yao et al. 2025; verl
  ``rollout_is``, TRL ``vllm_importance_sampling_mode``) or masked (MIS / IcePop of the Ling team's Ring-1T report, 2025: weights outside [lower, upper] set to 0).
* :func:`rejection_mask` — rows whose mismatch exceeds a bound are dropped from the loss (verl's rollout
  rejection sampling, the "veto" of any catastrophically off token).
* :func:`mismatch_metrics` — KL estimates, perplexity ratio, χ², ratio range and the share of tokens
  outside the bounds, for the per-step log.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from ngrpo_jax._checks import as_float, check_rank, check_shape

Array = jax.Array

IS_LEVELS = ("token", "sequence")
IS_MODES = ("truncate", "mask")
REJECTION_STATISTICS = ("token", "geometric")
_MAX_LOG = 20.0           # |log ρ| is clipped here before exp (ρ ∈ [e^-20, e^20]) so weights stay finite


def _inputs(trainer_logp, behaviour_logp, mask):
  trainer_logp, behaviour_logp = as_float(trainer_logp), as_float(behaviour_logp)
  check_rank(trainer_logp, 2, "trainer_logp")
  check_shape(behaviour_logp, trainer_logp.shape, "behaviour_logp", "trainer_logp")
  mask = jnp.asarray(mask)
  check_shape(mask, trainer_logp.shape, "mask", "trainer_logp")
  mask = mask.astype(bool)
  log_ratio = jnp.where(mask, jax.lax.stop_gradient(trainer_logp - behaviour_logp), 0.0)
  return log_ratio, mask


def _check_bounds(lower, upper):
  if not isinstance(upper, (int, float)) or isinstance(upper, bool) or not upper > 0:
    raise ValueError(f"`upper` must be a number > 0, got {upper!r}.")
  if lower is not None and (not isinstance(lower, (int, float)) or isinstance(lower, bool)
                            or not 0 <= lower < upper):
    raise ValueError(f"`lower` must be None or a number in [0, upper), got {lower!r}.")


def importance_weights(trainer_logp: Array, behaviour_logp: Array, mask: Array, *, level: str = "token",
                       mode: str = "truncate", upper: float = 2.0, lower: Optional[float] = None) -> Array:
  """Importance weights for the sampler / trainer mismatch, under stop_gradient.

  token:     w_t = ρ_t = π_trainer(y_t) / q(y_t)
  sequence:  w_t = ρ_seq = Π_t ρ_t = exp(Σ_t log ρ_t) on every token of the row
  truncate:  w ← min(w, upper)          (truncated IS; ``lower`` ignored)
  mask:      w ← w · 1[lower <= w <= upper]   (masked IS; ``lower`` defaults to 1 / upper)

  Multiply the advantages (or the per-token policy loss) by ``w``. Sequence-level weights are unbiased for
  sequence-level rewards but high-variance for long responses; token-level weights are the usual
  approximation (verl's default ``token``).

  Args:
    trainer_logp: f32[B, T] log π_trainer (e.g. the scorer's old log-probs).
    behaviour_logp: f32[B, T] log q of the distribution the sampler drew from (see the module docstring).
    mask: bool[B, T] response tokens.
    level, mode, upper, lower: see above (defaults: token level, truncated at 2, as TRL's default cap).

  Returns:
    f32[B, T] weights (0 at masked tokens).
  """
  if level not in IS_LEVELS:
    raise ValueError(f"`level` must be one of {IS_LEVELS}, got {level!r}.")
  if mode not in IS_MODES:
    raise ValueError(f"`mode` must be one of {IS_MODES}, got {mode!r}.")
  _check_bounds(lower, upper)
  log_ratio, mask = _inputs(trainer_logp, behaviour_logp, mask)
  if level == "sequence":
    log_ratio = jnp.broadcast_to(jnp.sum(log_ratio, axis=-1, keepdims=True), log_ratio.shape)
  w = jnp.exp(jnp.clip(log_ratio, -_MAX_LOG, _MAX_LOG))
  if mode == "truncate":
    w = jnp.minimum(w, upper)
  else:
    lo = 1.0 / upper if lower is None else lower
    w = jnp.where((w >= lo) & (w <= upper), w, 0.0)
  return jnp.where(mask, w, 0.0)


def rejection_mask(trainer_logp: Array, behaviour_logp: Array, mask: Array, *, statistic: str = "token",
                   lower: float = 1e-3, upper: float = 1e3) -> Array:
  """Rows to keep: a sequence is rejected when its mismatch leaves [lower, upper].

  token:      reject if any token's ρ_t < lower or ρ_t > upper (verl's veto of catastrophic tokens)
  geometric:  reject if the per-token geometric mean exp(mean_t log ρ_t) < lower or > upper (verl's
              sequence-level ``geo_mean`` rejection)

  Returns:
    bool[B] (True = keep; a row without response tokens is kept, it contributes nothing anyway).
  """
  if statistic not in REJECTION_STATISTICS:
    raise ValueError(f"`statistic` must be one of {REJECTION_STATISTICS}, got {statistic!r}.")
  _check_bounds(lower, upper)
  if not lower > 0:
    raise ValueError(f"`lower` must be > 0 for rejection, got {lower!r}.")
  log_ratio, mask = _inputs(trainer_logp, behaviour_logp, mask)
  lo, hi = jnp.log(lower), jnp.log(upper)
  if statistic == "token":
    bad = mask & ((log_ratio < lo) | (log_ratio > hi))
    return ~jnp.any(bad, axis=-1)
  n = jnp.sum(mask, axis=-1)
  mean = jnp.sum(log_ratio, axis=-1) / jnp.maximum(n, 1)
  return (n == 0) | ((mean >= lo) & (mean <= hi))


def mismatch_metrics(trainer_logp: Array, behaviour_logp: Array, mask: Array, *, lower: float = 0.5,
                     upper: float = 2.0) -> dict:
  """Per-step statistics of the mismatch ρ_t = π_trainer / q over valid tokens (f32 scalars).

  ``kl_k1`` = mean(log q − log π_trainer) and ``kl_k3`` = mean(ρ − 1 − log ρ): estimates of KL(q ‖ π_trainer)
  from q's samples; ``log_ppl_diff`` = mean over rows of (mean_t log q − mean_t log π_trainer) (log of the
  trainer / sampler perplexity ratio); ``chi2_token`` = mean(ρ²) − 1; ``ratio_mean`` / ``ratio_min`` /
  ``ratio_max``; ``frac_outside`` = share of tokens with ρ outside [lower, upper]; ``abs_logp_diff_max``.
  """
  log_ratio, mask = _inputs(trainer_logp, behaviour_logp, mask)
  n = jnp.maximum(jnp.sum(mask), 1)
  mean = lambda x: jnp.sum(jnp.where(mask, x, 0.0)) / n
  ratio = jnp.exp(jnp.clip(log_ratio, -_MAX_LOG, _MAX_LOG))
  rows = jnp.any(mask, axis=-1)
  row_mean = jnp.sum(log_ratio, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1)
  nonempty = jnp.sum(mask) > 0
  return {
      "kl_k1": -mean(log_ratio),
      "kl_k3": mean(jnp.expm1(log_ratio) - log_ratio),
      "log_ppl_diff": -jnp.sum(jnp.where(rows, row_mean, 0.0)) / jnp.maximum(jnp.sum(rows), 1),
      "chi2_token": mean(ratio * ratio) - jnp.where(nonempty, 1.0, 0.0),
      "ratio_mean": mean(ratio),
      "ratio_min": jnp.where(nonempty, jnp.min(jnp.where(mask, ratio, jnp.inf)), 0.0),
      "ratio_max": jnp.where(nonempty, jnp.max(jnp.where(mask, ratio, -jnp.inf)), 0.0),
      "frac_outside": mean(((ratio < lower) | (ratio > upper)).astype(jnp.float32)),
      "abs_logp_diff_max": jnp.where(nonempty, jnp.max(jnp.where(mask, jnp.abs(log_ratio), 0.0)), 0.0),
  }
