"""Pass@k-aware credit assignment: verl's ``grpo_passk``, Pass@k training's closed-form advantage, PKPO's
unbiased pass@k reward transform, and the unlikeliness reward.

All take a dense group layout ``rewards: f32[num_groups, G]`` with an optional ``mask: bool[num_groups, G]``
of valid samples (invalid samples are excluded from every statistic and get 0) and are pure, jit / vmap /
grad safe functions. ``n`` below is a group's number of valid samples.

Binomials C(a, b) are computed from ``lgamma`` in floating point (0 when b < 0 or b > a), exact to float
rounding for the group sizes of RL (G ≤ a few hundred).
"""
from typing import Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from ngrpo_jax import advantages
from ngrpo_jax._checks import as_float, check_nonnegative, check_rank, check_shape

Array = jax.Array


def _prepare(rewards, mask):
  rewards = as_float(rewards)
  check_rank(rewards, 2, "rewards")
  if mask is None:
    mask = jnp.ones(rewards.shape, bool)
  mask = jnp.asarray(mask)
  check_shape(mask, rewards.shape, "mask", "rewards")
  return rewards, mask.astype(bool)


def _check_k(k):
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ValueError(f"`k` must be an int >= 1, got {k!r}.")


def binom(a, b):
  """C(a, b) elementwise for real a, b (0 where b < 0, a < 0 or b > a)."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  ok = (b >= 0) & (a >= 0) & (b <= a)
  a_, b_ = jnp.where(ok, a, 1.0), jnp.where(ok, b, 0.0)
  return jnp.where(ok, jnp.exp(gammaln(a_ + 1) - gammaln(b_ + 1) - gammaln(a_ - b_ + 1)), 0.0)


def _safe_div(num, den):
  ok = den != 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------------------
# verl's grpo_passk.
# ----------------------------------------------------------------------------------------------------------


def grpo_passk(rewards: Array, mask: Optional[Array] = None, *, norm_by_std: bool = True, ddof: int = 1,
               eps: float = 1e-6) -> Array:
  """verl's ``grpo_passk`` advantage (``compute_grpo_passk_outcome_advantage``; after Pass@k training,
  arXiv 2508.10751): only the group's best sample gets credit.

  A_best = (r_max − r_2nd) / (std(r) + eps)     (÷ std only with ``norm_by_std``, verl's default);  A_i = 0 else

  The best sample is the first valid argmax; with a tie at the top r_max − r_2nd = 0 and no sample gets credit.
  A group with fewer than 2 valid samples gets 0.

  Returns:
    f32[num_groups, G].
  """
  check_nonnegative(eps, "eps")
  rewards, mask = _prepare(rewards, mask)
  masked = jnp.where(mask, rewards, -jnp.inf)
  best = jnp.argmax(masked, axis=-1)
  top = jnp.take_along_axis(masked, best[:, None], axis=-1)
  is_best = jnp.arange(rewards.shape[-1])[None] == best[:, None]
  second = jnp.max(jnp.where(is_best, -jnp.inf, masked), axis=-1, keepdims=True)
  gap = jnp.where(jnp.isfinite(second) & jnp.isfinite(top), top - second, 0.0)
  if norm_by_std:
    std = advantages.group_stats(rewards, mask, ddof=ddof).std[:, None]
    gap = _safe_div(gap, std + eps)
  return jnp.where(mask & is_best, gap, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Pass@k training: closed-form group advantage for binary rewards.
# ----------------------------------------------------------------------------------------------------------


def passk_advantage(rewards: Array, mask: Optional[Array] = None, *, k: int = 4, threshold: float = 0.5) -> Array:
  """Pass@k training's analytic advantage (Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration and Exploitation", arXiv 2508.10751, its analytical derivation of the group advantage).

  For a group of n samples with n_neg wrong ones, the pass@k reward of a random k-subset has mean and std

    R̄ = 1 − C(n_neg, k) / C(n, k),   σ = sqrt(R̄ (1 − R̄)),

  and the expected group-normalised advantage of a sample over the k-subsets containing it is

    A_correct = (1 − R̄) / σ,    A_wrong = (1 − R̄ − C(n_neg − 1, k − 1) / C(n − 1, k − 1)) / σ.

  k = 1 gives GRPO's (r − mean) / std with the population std (ddof 0, eps 0) for 0/1 rewards. σ = 0 (all
  correct, or every k-subset contains a correct answer) gives 0. Requires n >= k in every non-empty group
  (otherwise its advantages are 0).

  Args:
    rewards: f32[num_groups, G], correct when ``rewards >= threshold``. mask: optional bool[num_groups, G].
    k: the k of pass@k (static int >= 1).

  Returns:
    f32[num_groups, G].
  """
  _check_k(k)
  rewards, mask = _prepare(rewards, mask)
  if k >= rewards.shape[-1]:
    raise ValueError(f"`k` ({k}) must be smaller than the group size G ({rewards.shape[-1]}): with k = G the only "
                     "k-subset is the whole group, whose pass@k reward has no variance (every advantage is 0).")
  correct = mask & (rewards >= threshold)
  n = jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.float32)
  n_neg = n - jnp.sum(correct, axis=-1, keepdims=True)
  mean = 1.0 - _safe_div(binom(n_neg, k), binom(n, k))
  std = jnp.sqrt(jnp.maximum(mean * (1.0 - mean), 0.0))
  a_pos = _safe_div(1.0 - mean, std)
  a_neg = _safe_div(1.0 - mean - _safe_div(binom(n_neg - 1, k - 1), binom(n - 1, k - 1)), std)
  ok = (n >= k) & (std > 0)
  return jnp.where(mask & ok, jnp.where(correct, a_pos, a_neg), 0.0)


# ----------------------------------------------------------------------------------------------------------
# PKPO: unbiased pass@k reward transform (any rewards).
# ----------------------------------------------------------------------------------------------------------


def _positions(rewards, mask):
  """before[g, i, j]: valid j ranks below i (ascending reward, index order on ties); 1-based positions."""
  g = rewards.shape[-1]
  ri, rj = rewards[:, :, None], rewards[:, None, :]
  idx = jnp.arange(g)
  tie_first = idx[None, None, :] < idx[None, :, None]
  before = mask[:, None, :] & ((rj < ri) | ((rj == ri) & tie_first)) & mask[:, :, None]
  pos = 1.0 + jnp.sum(before, axis=-1).astype(jnp.float32)
  return before, pos


def pkpo_rewards(rewards: Array, mask: Optional[Array] = None, *, k: int = 4) -> Array:
  """PKPO's transformed reward (Walder & Karkhanis 2025, "Pass@K Policy Optimization", arXiv 2505.15201).

  g_i = mean over the k-subsets S ∋ i of the group of max_{j∈S} r_j
      = [ r_i C(p_i − 1, k − 1) + Σ_{j: p_j > p_i} r_j C(p_j − 2, k − 2) ] / C(n − 1, k − 1)

  (p = 1-based ascending rank, ties broken by index). Σ_i (k/n) g_i ∇log π(y_i) is an unbiased estimate of
  ∇ E[max of k samples] (the U-statistic over all k-subsets), for binary *and* continuous rewards. We return g
  without the constant k/n so that k = 1 gives g = r. Requires n >= k (groups with fewer valid samples get 0).

  Returns:
    f32[num_groups, G].
  """
  _check_k(k)
  rewards, mask = _prepare(rewards, mask)
  if k > rewards.shape[-1]:
    raise ValueError(f"`k` ({k}) must be at most the group size G ({rewards.shape[-1]}).")
  r = jnp.where(mask, rewards, 0.0)
  before, pos = _positions(rewards, mask)
  n = jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.float32)
  own = r * binom(pos - 1, k - 1)
  after = jnp.swapaxes(before, 1, 2)                          # after[g, i, j]: j ranks above i
  above = jnp.sum(jnp.where(after, (r * binom(pos - 2, k - 2))[:, None, :], 0.0), axis=-1)
  g = _safe_div(own + above, binom(n - 1, k - 1))
  return jnp.where(mask & (n >= k), g, 0.0)


def pkpo(rewards: Array, mask: Optional[Array] = None, *, k: int = 4) -> Array:
  """PKPO advantage: the transformed reward minus a leave-one-out pass@k baseline (arXiv 2505.15201).

  A_i = g_i − b_i,   b_i = mean over the k-subsets of the *other* n − 1 samples of their max
      = Σ_{j≠i} r_j C(p_j^{(−i)} − 1, k − 1) / C(n − 1, k)

  b_i does not depend on y_i, so the estimate stays unbiased. k = 1 gives RLOO (r_i − mean_{j≠i} r_j).
  Requires n > k for the baseline (a group with n = k gets b = 0; n < k gets 0).

  Returns:
    f32[num_groups, G].
  """
  _check_k(k)
  g = pkpo_rewards(rewards, mask, k=k)
  rewards, mask = _prepare(rewards, mask)
  r = jnp.where(mask, rewards, 0.0)
  before, pos = _positions(rewards, mask)
  n = jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.float32)
  # Position of j among the samples other than i: one lower when i ranks below j.
  pos_wo = pos[:, None, :] - jnp.swapaxes(before, 1, 2).astype(jnp.float32)
  others = mask[:, None, :] & ~jnp.eye(rewards.shape[-1], dtype=bool)[None]
  b = _safe_div(jnp.sum(jnp.where(others, r[:, None, :] * binom(pos_wo - 1, k - 1), 0.0), axis=-1),
                binom(n - 1, k))
  return jnp.where(mask & (n >= k), g - b, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Unlikeliness reward.
# ----------------------------------------------------------------------------------------------------------


def unlikeliness_rewards(rewards: Array, mask: Optional[Array], seq_logp: Array, *, beta: float = 0.25,
                         r_min: float = 0.0) -> Array:
  """The unlikeliness reward (He et al. 2025, "Rewarding the Unlikely", arXiv 2506.02355).

  r'_i = r_min + (r_i − r_min) · (1 − β · (n − rank_i) / n)

  rank_i ∈ {0, …, n − 1} orders the group's valid samples by sequence log-probability under the sampling
  policy, most likely first (rank 0; ties by index). The most likely correct answer loses β of its reward, the
  rarest loses β/n, so GRPO's rank bias (reinforcing already-likely solutions) is countered. The paper writes
  the multiplier on a 0/1 reward; ``r_min`` generalises it to rewards in [r_min, r_max] (wrong answers keep
  r_min). β = 0.25 as in the paper's experiments.

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G].
    seq_logp: f32[num_groups, G] Σ_t log π_sampler(y_t).

  Returns:
    f32[num_groups, G] transformed rewards (compose with any group estimator, e.g. GRPO).
  """
  check_nonnegative(beta, "beta")
  rewards, mask = _prepare(rewards, mask)
  seq_logp = as_float(seq_logp)
  check_shape(seq_logp, rewards.shape, "seq_logp", "rewards")
  # rank = number of valid samples strictly more likely (ties: lower index counts as more likely).
  before, _ = _positions(-seq_logp, mask)
  rank = jnp.sum(before, axis=-1).astype(jnp.float32)
  n = jnp.sum(mask, axis=-1, keepdims=True).astype(jnp.float32)
  factor = 1.0 - beta * _safe_div(n - rank, n)
  return jnp.where(mask, r_min + (rewards - r_min) * factor, 0.0)
