"""Advantage estimators for RL with verifiable rewards: GRPO, Dr. GRPO, RLOO, NGRPO, PSR/NSR, GAE.

Every group estimator exists in two layouts that share one implementation:

* **dense**: ``rewards: f32[num_groups, G]`` with an optional ``mask: bool[num_groups, G]`` marking valid
  (non-padded) samples. ``grpo(rewards)`` → ``f32[num_groups, G]``.
* **ragged**: ``rewards: f32[N]`` (flat), ``group_ids: int[N]`` in ``[0, num_groups)``, a static Python int
  ``num_groups`` and an optional ``valid: bool[N]``. ``grpo_ragged(rewards, group_ids, num_groups)`` → ``f32[N]``.
  Groups may have any size (statistics use segment sums), ids need not be sorted.

Padded / invalid entries never enter a group's statistics and always get advantage 0. The fixed-advantage
family (``psr_only``, ``nsr_only``, ``w_reinforce``) is per-sample and needs no grouping: it accepts rewards of
any shape and an optional mask of the same shape, so it serves both layouts.

Conventions shared by the std-normalised estimators (checked against the NGRPO authors' code):
``std`` is computed with ``ddof`` (default 1, the unbiased estimator, as ``torch.std``) and ``eps`` is *added*
to it: ``A_i = (r_i − mean) / (std + eps)``. A group whose variance is undefined (``count − ddof ≤ 0``, e.g.
a single sample with ``ddof=1``) is given ``std = 0``; its centred reward is 0 as well, so its advantage is 0,
never NaN. When ``std + eps == 0`` (``eps=0`` and a constant group) the advantage is defined as 0.
(Divergence from the authors' verl code: there a singleton group gets mean 0 and std 1, i.e. A = r, for GRPO
*and* NGRPO. Here a singleton gets GRPO A = 0, and NGRPO still uses its virtual sample(s). With the paper's
G = 8 the two agree.)

Equal rewards: a group whose valid rewards are all equal (whatever the value) gets advantage exactly 0 from
every group-relative estimator (statistics are computed on rewards shifted by the group's maximum, see
``_mean_std``), as does an NGRPO group whose rewards all equal ``r_virtual``.

Input checks: shapes, ranks and argument ranges raise ``ValueError`` / ``TypeError`` naming the argument.
Value checks run only when the inputs are concrete arrays (JAX cannot raise on traced values): eagerly, a
NaN / ±inf reward of a valid sample raises a ValueError, and out-of-range group ids too. Under ``jax.jit``
the one rule for NaN / ±inf rewards is: the sample counts as padding (left out of its group's statistics,
advantage 0), so the rest of its group is still normalised among itself — never a whole group silently
zeroed or NaN; :func:`nonfinite_count` counts those samples for a metric (the trainer logs it as
``rewards/nonfinite``).
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax._checks import as_float, check_nonnegative, check_rank, check_shape

Array = jax.Array  # (the math core needs only jax and numpy at run time)


# ----------------------------------------------------------------------------------------------------------
# Validation helpers.
# ----------------------------------------------------------------------------------------------------------


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_finite(x, name: str):
  if x is not None and _is_concrete(x):
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
      raise ValueError(f"`{name}` contains NaN or infinite values.")


def _check_ddof(ddof):
  if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool) or ddof < 0:
    raise ValueError(f"`ddof` must be a non-negative int (0 = population std, 1 = unbiased), got {ddof!r}.")


def _as_mask(mask, like, name: str):
  if mask is None:
    return jnp.ones(like.shape, dtype=bool)
  mask = jnp.asarray(mask)
  check_shape(mask, like.shape, name, "rewards")
  return mask.astype(bool)


# ----------------------------------------------------------------------------------------------------------
# Layouts: a group layout knows how to sum per-sample values into per-group values and broadcast back.
# ----------------------------------------------------------------------------------------------------------


class _Layout(NamedTuple):
  reduce: Callable[[Array], Array]   # per-sample [..] -> per-group [num_groups] (sum)
  gather: Callable[[Array], Array]   # per-group [num_groups] -> per-sample [..]
  maximum: Callable[[Array], Array]  # per-sample [..] -> per-group max [num_groups] (-inf for an empty group)


def _dense_layout() -> _Layout:
  return _Layout(reduce=lambda x: jnp.sum(x, axis=-1), gather=lambda g: g[..., None],
                 maximum=lambda x: jnp.max(x, axis=-1))


def _ragged_layout(group_ids, num_groups: int) -> _Layout:
  return _Layout(
      reduce=lambda x: jax.ops.segment_sum(x, group_ids, num_segments=num_groups),
      gather=lambda g: g[group_ids],
      maximum=lambda x: jax.ops.segment_max(x, group_ids, num_segments=num_groups))


def _drop_nonfinite(rewards, mask):
  """The module's rule for NaN / ±inf rewards under ``jit`` (eager calls raise first): such a sample counts
  as padding — out of its group's statistics, advantage 0 — so it never zeroes or poisons its group."""
  finite = jnp.isfinite(rewards)
  return jnp.where(finite, rewards, 0.0), mask & finite


def nonfinite_count(rewards: Array, mask: Optional[Array] = None) -> Array:
  """Number of valid samples whose reward is NaN or ±inf (int32 scalar; jit-safe): the samples the
  estimators treat as padding under ``jit`` (eager calls raise a ValueError instead). Log it as a metric."""
  rewards = as_float(rewards)
  mask = _as_mask(mask, rewards, "mask")
  return jnp.sum(mask & ~jnp.isfinite(rewards)).astype(jnp.int32)


def _prepare_dense(rewards, mask):
  rewards = as_float(rewards)
  check_rank(rewards, 2, "rewards")
  mask = _as_mask(mask, rewards, "mask")
  if _is_concrete(rewards) and _is_concrete(mask):
    _check_finite(jnp.where(mask, rewards, 0.0), "rewards")
  rewards, mask = _drop_nonfinite(rewards, mask)
  return rewards, mask, _dense_layout()


def _prepare_ragged(rewards, group_ids, num_groups, valid):
  rewards = as_float(rewards)
  check_rank(rewards, 1, "rewards")
  group_ids = jnp.asarray(group_ids)
  check_rank(group_ids, 1, "group_ids")
  check_shape(group_ids, rewards.shape, "group_ids", "rewards")
  if not jnp.issubdtype(group_ids.dtype, jnp.integer):
    raise TypeError(f"`group_ids` must be an integer array, got dtype {group_ids.dtype}.")
  if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool) or num_groups < 1:
    raise ValueError(f"`num_groups` must be a static Python int >= 1, got {num_groups!r}.")
  valid = _as_mask(valid, rewards, "valid")
  if _is_concrete(group_ids) and _is_concrete(valid):
    ids = np.asarray(group_ids)[np.asarray(valid)]
    if ids.size and (ids.min() < 0 or ids.max() >= num_groups):
      raise ValueError(f"`group_ids` of valid entries must lie in [0, num_groups={num_groups}), "
                       f"got range [{ids.min()}, {ids.max()}].")
  if _is_concrete(rewards) and _is_concrete(valid):
    _check_finite(jnp.where(valid, rewards, 0.0), "rewards")
  rewards, valid = _drop_nonfinite(rewards, valid)
  # Invalid entries may carry any id: route them to group 0 with zero weight so they never index out of range.
  group_ids = jnp.where(valid, group_ids, 0)
  return rewards, group_ids, valid, _ragged_layout(group_ids, int(num_groups))


# ----------------------------------------------------------------------------------------------------------
# Group statistics.
# ----------------------------------------------------------------------------------------------------------


class GroupStats(NamedTuple):
  """Per-group statistics (all shaped ``[num_groups]``).

  Attributes:
    mean: mean of the valid rewards (0 for an empty group).
    std: standard deviation with the requested ``ddof``; 0 when ``count - ddof <= 0``.
    count: number of valid samples (float).
    num_correct: number of valid samples with ``reward >= correct_threshold``.
    all_correct: non-empty group whose every valid sample is correct (homogeneous-correct).
    all_incorrect: non-empty group whose every valid sample is incorrect (homogeneous-incorrect).
    is_constant: non-empty group whose valid rewards are all equal (any homogeneous group, DAPO's criterion).
  """
  mean: Array
  std: Array
  count: Array
  num_correct: Array
  all_correct: Array
  all_incorrect: Array
  is_constant: Array


def _safe_sqrt(x):
  """sqrt(x) for x > 0, else 0 — with a finite gradient at 0 (a constant group), so estimators stay grad-safe."""
  ok = x > 0
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def _safe_div(num, den):
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _shifted(rewards, mask, layout):
  """(r − c_g masked, c_g) with c_g the group's largest valid reward (0 for an empty group): in a group of
  equal rewards every shifted value is exactly 0, whatever the value (e.g. 0.7, not representable)."""
  shift = layout.maximum(jnp.where(mask, rewards, -jnp.inf))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  return jnp.where(mask, rewards - layout.gather(shift), 0.0), shift


def _mean_std(rewards, mask, layout, ddof, extra_value=None, extra_count=0):
  """Masked mean / std per group (optionally with ``extra_count`` virtual samples of ``extra_value``) and
  each sample's centred value r − mean, f32 like ``rewards``.

  Shifted two-pass algorithm: with s = r − c_g (c_g: the group's largest valid reward),
  mean = c_g + Σ s / n,  centred = s − Σ s / n,  var = Σ centred² / (n − ddof). A group whose values
  (virtual ones included) are all equal has s = 0 exactly, hence centred = 0 and std = 0 exactly, so every
  estimator gives it exactly 0 (computing Σ r / n first can miss r by an ulp: 7 × 0.7 / 7 ≠ 0.7 in f32).
  """
  w = mask.astype(rewards.dtype)
  s, shift = _shifted(rewards, mask, layout)
  count = layout.reduce(w)
  total = layout.reduce(s)
  if extra_count:
    count = count + extra_count
    total = total + extra_count * (extra_value - shift)
  mean_s = _safe_div(total, count)
  centred = jnp.where(mask, s - layout.gather(mean_s), 0.0)
  sq = layout.reduce(centred * centred)
  if extra_count:
    sq = sq + extra_count * (extra_value - shift - mean_s) ** 2
  var = _safe_div(sq, count - ddof)
  std = _safe_sqrt(var)
  return shift + mean_s, std, count, centred


def group_stats(rewards: Array, mask: Optional[Array] = None, *, ddof: int = 1,
                correct_threshold: float = 0.5) -> GroupStats:
  """Per-group reward statistics over ``rewards: f32[num_groups, G]``.

  mean_g = (1/n_g) Σ_i m_gi r_gi,   std_g = sqrt(Σ_i m_gi (r_gi − mean_g)² / (n_g − ddof)),   n_g = Σ_i m_gi.

  Args:
    rewards: f32[num_groups, G] rewards.
    mask: optional bool[num_groups, G]; False marks padded samples (excluded from every statistic).
    ddof: delta degrees of freedom of the std (1 = unbiased, the GRPO/NGRPO authors' choice; 0 = population).
    correct_threshold: a sample counts as correct when ``reward >= correct_threshold`` (0.5 for 0/1 rewards;
      use 0.0 for ±1 rewards).

  Returns:
    GroupStats with fields shaped [num_groups]. Empty groups get mean = std = 0 and all masks False.
  """
  _check_ddof(ddof)
  rewards, mask, layout = _prepare_dense(rewards, mask)
  mean, std, count, _ = _mean_std(rewards, mask, layout, ddof)
  correct = (mask & (rewards >= correct_threshold)).astype(rewards.dtype)
  num_correct = layout.reduce(correct)
  gmax = jnp.max(jnp.where(mask, rewards, -jnp.inf), axis=-1)
  gmin = jnp.min(jnp.where(mask, rewards, jnp.inf), axis=-1)
  return _finish_stats(mean, std, count, num_correct, gmax, gmin)


def group_stats_ragged(rewards: Array, group_ids: Array, num_groups: int, valid: Optional[Array] = None, *,
                       ddof: int = 1, correct_threshold: float = 0.5) -> GroupStats:
  """Ragged form of :func:`group_stats`: ``rewards: f32[N]``, ``group_ids: int[N]``, ``valid: bool[N]``.

  Returns GroupStats with fields shaped [num_groups] (segment sums over ``group_ids``).
  """
  _check_ddof(ddof)
  rewards, group_ids, valid, layout = _prepare_ragged(rewards, group_ids, num_groups, valid)
  mean, std, count, _ = _mean_std(rewards, valid, layout, ddof)
  correct = (valid & (rewards >= correct_threshold)).astype(rewards.dtype)
  num_correct = layout.reduce(correct)
  gmax = jax.ops.segment_max(jnp.where(valid, rewards, -jnp.inf), group_ids, num_segments=num_groups)
  gmin = jax.ops.segment_min(jnp.where(valid, rewards, jnp.inf), group_ids, num_segments=num_groups)
  return _finish_stats(mean, std, count, num_correct, gmax, gmin)


def _finish_stats(mean, std, count, num_correct, gmax, gmin):
  nonempty = count > 0
  return GroupStats(
      mean=mean, std=std, count=count, num_correct=num_correct,
      all_correct=nonempty & (num_correct == count),
      all_incorrect=nonempty & (num_correct == 0),
      is_constant=nonempty & (gmax == gmin))


# ----------------------------------------------------------------------------------------------------------
# Group-relative estimators (shared cores over a layout).
# ----------------------------------------------------------------------------------------------------------


def _normalised(rewards, mask, layout, ddof, eps, extra_value=None, extra_count=0):
  _, std, _, centred = _mean_std(rewards, mask, layout, ddof, extra_value, extra_count)
  adv = _safe_div(centred, layout.gather(std) + eps)
  return jnp.where(mask, adv, 0.0)


def _grpo_core(rewards, mask, layout, ddof, eps):
  return _normalised(rewards, mask, layout, ddof, eps)


def _dr_grpo_core(rewards, mask, layout):
  return _mean_std(rewards, mask, layout, 0)[3]


def _rloo_core(rewards, mask, layout):
  w = mask.astype(rewards.dtype)
  s, _ = _shifted(rewards, mask, layout)            # r − c_g: exactly 0 in a group of equal rewards
  count = layout.gather(layout.reduce(w))
  total = layout.gather(layout.reduce(s))
  # A_i = r_i − (Σ_j r_j − r_i)/(n − 1) = s_i − (Σ_j s_j − s_i)/(n − 1); groups with n < 2 get 0.
  baseline = _safe_div(total - s, count - 1.0)
  return jnp.where(mask & (count >= 2), s - baseline, 0.0)


def _ngrpo_core(rewards, mask, layout, r_virtual, num_virtual, ddof, eps):
  return _normalised(rewards, mask, layout, ddof, eps, extra_value=r_virtual, extra_count=num_virtual)


def _check_ngrpo_args(r_virtual, num_virtual):
  if not isinstance(r_virtual, (int, float)) or not np.isfinite(r_virtual):
    raise ValueError(f"`r_virtual` must be a finite Python number, got {r_virtual!r}.")
  if not isinstance(num_virtual, (int, np.integer)) or isinstance(num_virtual, bool) or num_virtual < 0:
    raise ValueError(f"`num_virtual` must be a non-negative int, got {num_virtual!r}.")


def grpo(rewards: Array, mask: Optional[Array] = None, *, ddof: int = 1, eps: float = 1e-6) -> Array:
  """GRPO group-normalised advantage (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300, Eq. 3 / §4.1.2).

  A_i = (r_i − mean(r)) / (std(r) + eps)

  Homogeneous groups (all rewards equal) get A = 0. Σ_i A_i = 0 for every group.

  Args:
    rewards: f32[num_groups, G].
    mask: optional bool[num_groups, G]; padded samples are excluded from the statistics and get A = 0.
    ddof: std's delta degrees of freedom (default 1 = unbiased, as ``torch.std`` in the authors' code).
      Groups with ``count <= ddof`` (e.g. G = 1 with ddof = 1) have undefined std and get A = 0.
    eps: added to the std (default 1e-6).

  Returns:
    f32[num_groups, G] advantages.
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, mask, layout = _prepare_dense(rewards, mask)
  return _grpo_core(rewards, mask, layout, ddof, eps)


def grpo_ragged(rewards: Array, group_ids: Array, num_groups: int, valid: Optional[Array] = None, *,
                ddof: int = 1, eps: float = 1e-6) -> Array:
  """Ragged :func:`grpo`: flat ``rewards: f32[N]``, ``group_ids: int[N]``, ``valid: bool[N]`` → f32[N]."""
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, _, valid, layout = _prepare_ragged(rewards, group_ids, num_groups, valid)
  return _grpo_core(rewards, valid, layout, ddof, eps)


def dr_grpo(rewards: Array, mask: Optional[Array] = None) -> Array:
  """Dr. GRPO advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783, §3.2).

  A_i = r_i − mean(r)   (no std normalisation, removing GRPO's question-difficulty bias).

  Args:
    rewards: f32[num_groups, G].
    mask: optional bool[num_groups, G] of valid samples; padded samples get 0.

  Returns:
    f32[num_groups, G]. A group of size 1 gets 0.
  """
  rewards, mask, layout = _prepare_dense(rewards, mask)
  return _dr_grpo_core(rewards, mask, layout)


def dr_grpo_ragged(rewards: Array, group_ids: Array, num_groups: int,
                   valid: Optional[Array] = None) -> Array:
  """Ragged :func:`dr_grpo` (flat rewards + group ids) → f32[N]."""
  rewards, _, valid, layout = _prepare_ragged(rewards, group_ids, num_groups, valid)
  return _dr_grpo_core(rewards, valid, layout)


def rloo(rewards: Array, mask: Optional[Array] = None) -> Array:
  """REINFORCE leave-one-out advantage (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740).

  A_i = r_i − (1/(n − 1)) Σ_{j≠i} r_j  =  n/(n − 1) · (r_i − mean(r)),   n = number of valid samples.

  Args:
    rewards: f32[num_groups, G] with G >= 2 (a ValueError otherwise: the leave-one-out baseline needs
      another sample).
    mask: optional bool[num_groups, G]; groups left with fewer than 2 valid samples get A = 0.

  Returns:
    f32[num_groups, G].
  """
  rewards, mask, layout = _prepare_dense(rewards, mask)
  if rewards.shape[-1] < 2:
    raise ValueError(f"`rewards` group size G must be >= 2 for rloo (leave-one-out baseline), got "
                     f"shape {tuple(rewards.shape)}.")
  return _rloo_core(rewards, mask, layout)


def rloo_ragged(rewards: Array, group_ids: Array, num_groups: int, valid: Optional[Array] = None) -> Array:
  """Ragged :func:`rloo` → f32[N]; groups with fewer than 2 valid samples get 0."""
  rewards, _, valid, layout = _prepare_ragged(rewards, group_ids, num_groups, valid)
  return _rloo_core(rewards, valid, layout)


def ngrpo(rewards: Array, mask: Optional[Array] = None, *, r_virtual: float = 1.0, num_virtual: int = 1,
          ddof: int = 1, eps: float = 1e-6) -> Array:
  """NGRPO Advantage Calibration (Nan et al. 2025, arXiv 2509.18851, §4.1, Eq. 5–6).

  Each group is augmented with ``num_virtual`` virtual samples of reward ``r_virtual`` (r_max = 1.0 for 0/1
  rewards) that enter the statistics only:

    R' = R ∪ {r_virtual}^{num_virtual},  mu' = mean(R'),  sigma' = std(R', ddof),
    A'_i = (r_i − mu') / (sigma' + eps)   for the real samples only.

  Note on Eq. 6 vs Figure 3: Eq. 6 writes the variance with 1/(G+1) (``ddof=0``), but the paper's Figure 3
  numbers (G = 8, one correct: +1.76 / −0.50; all wrong: −1/3) and the authors' code use the unbiased std
  (``torch.std``, ``ddof=1``). ``ddof=1`` is the default; ``ddof=0`` reproduces Eq. 6 literally
  (one correct: +1.87 / −0.53; all wrong: −0.35).

  Properties for binary rewards in {r_min, r_virtual = r_max}: the sign of A'_i equals the sign of GRPO's
  (correct > 0, wrong < 0; GRPO's 0 of a homogeneous group becomes the same negative value for every sample
  of an all-wrong group and stays 0 for an all-correct one); Σ_i A'_i < 0 unless the group is all r_max.
  With *continuous* rewards the sign can flip: for rewards (0.2, 0.6, 0.7) GRPO gives 0.6 a positive
  advantage (mean 0.5) while NGRPO gives it a negative one (mu' = 0.625).

  Args:
    rewards: f32[num_groups, G].
    mask: optional bool[num_groups, G] of valid samples; padded samples get 0 and do not enter statistics.
    r_virtual: virtual reward magnitude (default 1.0 = r_max; the paper's min/medium ablation uses 0 / 0.5).
    num_virtual: number of virtual samples (default 1; ablation 1/2/4). 0 reduces to :func:`grpo`.
    ddof: std's delta degrees of freedom over the G + num_virtual values (default 1, see the note above).
    eps: added to sigma' (default 1e-6, as the authors).

  Returns:
    f32[num_groups, G] advantages. An all-r_virtual group has sigma' = 0 and A' = 0.
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  _check_ngrpo_args(r_virtual, num_virtual)
  rewards, mask, layout = _prepare_dense(rewards, mask)
  return _ngrpo_core(rewards, mask, layout, r_virtual, int(num_virtual), ddof, eps)


def ngrpo_ragged(rewards: Array, group_ids: Array, num_groups: int, valid: Optional[Array] = None, *,
                 r_virtual: float = 1.0, num_virtual: int = 1, ddof: int = 1, eps: float = 1e-6) -> Array:
  """Ragged :func:`ngrpo` (flat rewards + group ids + valid mask) → f32[N]."""
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  _check_ngrpo_args(r_virtual, num_virtual)
  rewards, _, valid, layout = _prepare_ragged(rewards, group_ids, num_groups, valid)
  return _ngrpo_core(rewards, valid, layout, r_virtual, int(num_virtual), ddof, eps)


# ----------------------------------------------------------------------------------------------------------
# Fixed-advantage family (Zhu et al. 2025, "The Surprising Effectiveness of Negative Reinforcement").
# ----------------------------------------------------------------------------------------------------------


def _prepare_pointwise(rewards, mask):
  rewards = as_float(rewards)
  if rewards.ndim < 1:
    raise ValueError("`rewards` must have rank >= 1, got a scalar.")
  mask = _as_mask(mask, rewards, "mask")
  if _is_concrete(rewards) and _is_concrete(mask):
    _check_finite(jnp.where(mask, rewards, 0.0), "rewards")
  return _drop_nonfinite(rewards, mask)


def w_reinforce(rewards: Array, mask: Optional[Array] = None, *, lam: float = 0.1,
                threshold: float = 0.5) -> Array:
  """Weighted REINFORCE (Zhu et al. 2025, arXiv 2506.01347, Eq. 6): L = λ·L_PSR + L_NSR.

  A_i = +λ if r_i >= threshold (correct), −1 otherwise. No baseline, no normalisation. This is the NGRPO
  paper's "PSR-NSR" baseline (λ = 0.1). ``lam`` is explicit: the negative-reinforcement paper's shipped
  scripts silently ran λ = 1.

  Args:
    rewards: f32[...] of any shape (e.g. [num_groups, G] or flat [N]).
    mask: optional bool of the same shape; masked samples get 0.
    lam: weight of positive samples (default 0.1), must be >= 0.
    threshold: reward at or above which a sample is correct (0.5 for 0/1 rewards, 0.0 for ±1 rewards).

  Returns:
    f32 advantages, same shape as ``rewards``.
  """
  check_nonnegative(lam, "lam")
  rewards, mask = _prepare_pointwise(rewards, mask)
  adv = jnp.where(rewards >= threshold, jnp.asarray(lam, rewards.dtype), jnp.asarray(-1.0, rewards.dtype))
  return jnp.where(mask, adv, 0.0)


def psr_only(rewards: Array, mask: Optional[Array] = None, *, threshold: float = 0.5) -> Array:
  """Positive-sample reinforcement only (Zhu et al. 2025, Eq. 4): A_i = +1 if correct, 0 otherwise.

  Args: as :func:`w_reinforce`. Returns f32 of ``rewards``' shape.
  """
  rewards, mask = _prepare_pointwise(rewards, mask)
  return jnp.where(mask & (rewards >= threshold), 1.0, 0.0).astype(rewards.dtype)


def nsr_only(rewards: Array, mask: Optional[Array] = None, *, threshold: float = 0.5) -> Array:
  """Negative-sample reinforcement only (Zhu et al. 2025, Eq. 5): A_i = −1 if wrong, 0 otherwise.

  Args: as :func:`w_reinforce`. Returns f32 of ``rewards``' shape.
  """
  rewards, mask = _prepare_pointwise(rewards, mask)
  return jnp.where(mask & (rewards < threshold), -1.0, 0.0).astype(rewards.dtype)


# ----------------------------------------------------------------------------------------------------------
# Group filters (keep-masks).
# ----------------------------------------------------------------------------------------------------------


def dapo_group_filter(rewards: Array, mask: Optional[Array] = None) -> Array:
  """DAPO dynamic-sampling filter (Yu et al. 2025, arXiv 2503.14476, Eq. 11): keep 0 < #correct < G.

  Implemented as "keep groups whose valid rewards are not all equal" (works for continuous rewards too).

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G].

  Returns:
    bool[num_groups] keep-mask; empty groups are dropped.
  """
  return ~group_stats(rewards, mask, ddof=0).is_constant & (_count(rewards, mask) > 0)


def dapo_group_filter_ragged(rewards: Array, group_ids: Array, num_groups: int,
                             valid: Optional[Array] = None) -> Array:
  """Ragged :func:`dapo_group_filter` → bool[num_groups]."""
  s = group_stats_ragged(rewards, group_ids, num_groups, valid, ddof=0)
  return ~s.is_constant & (s.count > 0)


def ngrpo_group_filter(rewards: Array, mask: Optional[Array] = None, *, r_max: float = 1.0) -> Array:
  """NGRPO filter (Nan et al. 2025, §4.1): drop only homogeneous-correct groups (every reward == r_max).

  Homogeneous-incorrect groups are *kept* (NGRPO learns from them); all-r_max groups have A' = 0 anyway.

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G]; r_max: the maximum (correct) reward.

  Returns:
    bool[num_groups] keep-mask; empty groups are dropped.
  """
  s = group_stats(rewards, mask, ddof=0, correct_threshold=r_max)
  return ~s.all_correct & (s.count > 0)


def ngrpo_group_filter_ragged(rewards: Array, group_ids: Array, num_groups: int,
                              valid: Optional[Array] = None, *, r_max: float = 1.0) -> Array:
  """Ragged :func:`ngrpo_group_filter` → bool[num_groups]."""
  s = group_stats_ragged(rewards, group_ids, num_groups, valid, ddof=0, correct_threshold=r_max)
  return ~s.all_correct & (s.count > 0)


def _count(rewards, mask):
  rewards = jnp.asarray(rewards)
  if mask is None:
    return jnp.full(rewards.shape[:1], rewards.shape[-1], dtype=jnp.float32)
  return jnp.sum(jnp.asarray(mask).astype(jnp.float32), axis=-1)


# ----------------------------------------------------------------------------------------------------------
# GAE for the PPO baseline.
# ----------------------------------------------------------------------------------------------------------


def gae(rewards_per_token: Array, values: Array, mask: Array, *, gamma: float = 1.0,
        lam: float = 1.0) -> tuple[Array, Array]:
  """Generalised advantage estimation over response tokens (Schulman et al. 2016, arXiv 1506.02438, Eq. 16).

  δ_t = r_t + γ V_{t+1} − V_t,   A_t = δ_t + γλ A_{t+1},   returns_t = A_t + V_t,

  where t runs over the *valid* tokens of each row in order (masked tokens are skipped, as if removed) and
  V after the last valid token is 0 (the episode ends with the response). For LLM RL the terminal reward
  sits on the last response token and ``gamma = lam = 1`` is usual.

  Args:
    rewards_per_token: f32[B, T] per-token rewards (e.g. the verifier reward at the last token, minus a
      per-token KL penalty if any).
    values: f32[B, T] critic values V_t.
    mask: bool[B, T] response mask.
    gamma: discount in [0, 1].
    lam: GAE λ in [0, 1].

  Returns:
    (advantages f32[B, T], returns f32[B, T]), both 0 at masked tokens.
  """
  rewards_per_token = as_float(rewards_per_token)
  values = as_float(values)
  check_rank(rewards_per_token, 2, "rewards_per_token")
  check_shape(values, rewards_per_token.shape, "values", "rewards_per_token")
  mask = jnp.asarray(mask)
  check_shape(mask, rewards_per_token.shape, "mask", "rewards_per_token")
  mask = mask.astype(bool)
  for name, v in (("gamma", gamma), ("lam", lam)):
    if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
      raise ValueError(f"`{name}` must be a number in [0, 1], got {v!r}.")
  if _is_concrete(rewards_per_token) and _is_concrete(values) and _is_concrete(mask):
    _check_finite(jnp.where(mask, rewards_per_token, 0.0), "rewards_per_token")
    _check_finite(jnp.where(mask, values, 0.0), "values")
  r = jnp.where(mask, rewards_per_token, 0.0)
  v = jnp.where(mask, values, 0.0)

  def step(carry, xs):
    next_value, next_adv = carry
    r_t, v_t, m_t = xs
    delta = r_t + gamma * next_value - v_t
    adv = delta + gamma * lam * next_adv
    new_carry = (jnp.where(m_t, v_t, next_value), jnp.where(m_t, adv, next_adv))
    return new_carry, jnp.where(m_t, adv, 0.0)

  zeros = jnp.zeros(r.shape[:1], r.dtype)
  xs = (r.T[::-1], v.T[::-1], mask.T[::-1])
  _, adv_rev = jax.lax.scan(step, (zeros, zeros), xs)
  adv = adv_rev[::-1].T
  returns = jnp.where(mask, adv + v, 0.0)
  return adv, returns


# ----------------------------------------------------------------------------------------------------------
# Batch-normalised estimators: REINFORCE++, REINFORCE++-baseline, Lite-PPO's batch std.
# ----------------------------------------------------------------------------------------------------------


def _batch_mean_std(x, mask, ddof):
  """Mean and std (with ``ddof``) of ``x`` over every valid entry of the batch (scalars; 0 when undefined)."""
  w = mask.astype(x.dtype)
  n = jnp.sum(w)
  mean = _safe_div(jnp.sum(jnp.where(mask, x, 0.0)), n)
  var = _safe_div(jnp.sum(jnp.where(mask, (x - mean) ** 2, 0.0)), n - ddof)
  return mean, _safe_sqrt(var)


def _whiten(x, mask, ddof, eps):
  mean, std = _batch_mean_std(x, mask, ddof)
  return jnp.where(mask, _safe_div(x - mean, std + eps), 0.0)


def reinforce_pp(rewards: Array, mask: Optional[Array] = None, *, ddof: int = 1, eps: float = 1e-6) -> Array:
  """REINFORCE++ (Hu et al. 2025, arXiv 2501.03262): the reward whitened over the whole batch.

  A_i = (r_i − mean_B(r)) / (std_B(r) + eps),   mean / std over every valid sample of the batch (all groups)

  For an outcome reward with γ = 1 and no KL in the reward, the token return equals the sequence reward, so
  this is REINFORCE++'s global advantage normalisation. OpenRLHF whitens over *tokens* (each sequence weighted
  by its length); we whiten over samples, which is the paper's description and keeps the estimator a function
  of rewards only. Invariant to a constant shift and a positive scale of all rewards.

  Args:
    rewards: f32[num_groups, G] (or any shape; the statistics run over all valid entries).
    mask: optional bool of the same shape; invalid samples are excluded and get 0.
    ddof / eps: std's delta degrees of freedom (default 1) and the additive epsilon.
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, mask = _prepare_pointwise(rewards, mask)
  return _whiten(rewards, mask, ddof, eps)


def reinforce_pp_baseline(rewards: Array, mask: Optional[Array] = None, *, ddof: int = 1,
                          eps: float = 1e-6) -> Array:
  """REINFORCE++-baseline (Hu et al. 2025, arXiv 2501.03262; OpenRLHF ``reinforce_baseline``).

  r'_i = r_i − mean_group(r),   A_i = (r'_i − mean_B(r')) / (std_B(r') + eps)   (whitened over the batch)

  The group-mean baseline removes the prompt's difficulty, the batch whitening fixes the scale without
  GRPO's per-group std (which inflates near-homogeneous groups). mean_B(r') is 0 by construction unless
  groups have padded samples. Homogeneous groups get 0.

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G]; ddof / eps as :func:`reinforce_pp`.
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, mask, layout = _prepare_dense(rewards, mask)
  return _whiten(_dr_grpo_core(rewards, mask, layout), mask, ddof, eps)


def grpo_batch_std(rewards: Array, mask: Optional[Array] = None, *, ddof: int = 1, eps: float = 1e-6) -> Array:
  """Group mean, batch std (Lite PPO, Liu et al. 2025, "Tricks or Traps?", arXiv 2508.08221;
  TRL ``scale_rewards="batch"``).

  A_i = (r_i − mean_group(r)) / (std_B(r) + eps),   std_B over every valid reward of the batch

  As TRL: the std is of the raw rewards over the whole batch (ddof 1, ``torch.std``), not of the centred
  ones. Invariant to a constant shift of all rewards (both terms are), and scale-equivariant.

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G]; ddof / eps as :func:`reinforce_pp`.
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, mask, layout = _prepare_dense(rewards, mask)
  _, std = _batch_mean_std(rewards, mask, ddof)
  return jnp.where(mask, _safe_div(_dr_grpo_core(rewards, mask, layout), std + eps), 0.0)


# ----------------------------------------------------------------------------------------------------------
# Multi-component rewards: GDPO.
# ----------------------------------------------------------------------------------------------------------


def gdpo(rewards: Array, mask: Optional[Array] = None, *, weights=None, batch_normalize: bool = True,
         ddof: int = 1, eps: float = 1e-6) -> Array:
  """GDPO, group reward-decoupled normalisation (Liu et al. 2026, arXiv 2601.05242).

  A^(c)_i = grpo(r^(c))_i            each reward component normalised within its group on its own
  A^sum_i = Σ_c w_c A^(c)_i          weighted sum (w = 1 by default)
  A_i     = (A^sum_i − mean_B) / (std_B + eps)   batch-wise normalisation (``batch_normalize``)

  GRPO on the summed reward lets an easy component (e.g. format) swamp a hard one (correctness) and maps
  different reward combinations to the same advantage; normalising each component first keeps them apart.
  The final batch normalisation keeps the scale independent of the number of components. With one component
  and ``batch_normalize=False`` this is exactly :func:`grpo`; with it, the batch-whitened GRPO advantage.

  Args:
    rewards: f32[num_groups, G, C] (C reward components, e.g. correctness and format).
    mask: optional bool[num_groups, G] of valid samples.
    weights: optional sequence of C non-negative component weights (default all 1).
    batch_normalize: whiten the summed advantage over the batch's valid samples (default True, the paper).
    ddof / eps: for the per-group std and the batch std.

  Returns:
    f32[num_groups, G].
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards = as_float(rewards)
  check_rank(rewards, 3, "rewards")
  n, g, c = rewards.shape
  if weights is None:
    weights = (1.0,) * c
  weights = tuple(weights)
  if len(weights) != c:
    raise ValueError(f"`weights` has {len(weights)} entries for {c} reward components (rewards.shape[-1]).")
  for w in weights:
    check_nonnegative(w, "weights[i]")
  mask = _as_mask(mask, rewards[..., 0], "mask")
  _check_finite(jnp.where(mask[..., None], rewards, 0.0) if _is_concrete(rewards) else rewards, "rewards")
  layout = _dense_layout()
  total = sum(w * _grpo_core(rewards[..., k], mask, layout, ddof, eps) for k, w in enumerate(weights))
  return _whiten(total, mask, ddof, eps) if batch_normalize else jnp.where(mask, total, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Rivals of NGRPO for homogeneous groups: RL-ZVP and LENS.
# ----------------------------------------------------------------------------------------------------------


def rl_zvp(rewards: Array, mask: Optional[Array], entropy: Array, token_mask: Array, *, alpha: float = 0.1,
           threshold: float = 0.5, ddof: int = 1, eps: float = 1e-6) -> Array:
  """RL-ZVP, entropy-guided advantages for zero-variance groups (Le et al. 2025, arXiv 2509.21880, §3.2, Eq. 5).

  Groups with varied rewards keep GRPO's advantage (on every token). A zero-variance group (all valid
  rewards equal) gets token-level advantages from the token entropies H_{i,t} (treated as constants):

    all correct (r >= threshold):  A_{i,t} = α · H_{i,t}
    all wrong:                      A_{i,t} = −α · (max_k H_{i,k} − H_{i,t})      (max over the response)

  so confident tokens of wrong answers are pushed down hardest and high-entropy "forking" tokens least. The
  paper conditions on R_i > 0; ``threshold`` is our generalisation to any reward range (0.5 for 0/1 rewards).
  The paper takes H under the current policy (detached); the trainer passes the rollout policy's entropies
  (equal at the first, on-policy minibatch). α = 0.1 is the paper's best value.

  Args:
    rewards: f32[num_groups, G]; mask: optional bool[num_groups, G] of valid samples.
    entropy: f32[num_groups, G, T] token entropies; token_mask: bool[num_groups, G, T] response tokens.
    alpha, threshold, ddof, eps: see above (ddof / eps for GRPO's std).

  Returns:
    f32[num_groups, G, T] token advantages (0 outside ``token_mask`` and on invalid samples).
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  check_nonnegative(alpha, "alpha")
  rewards, mask, layout = _prepare_dense(rewards, mask)
  entropy = as_float(entropy)
  check_rank(entropy, 3, "entropy")
  check_shape(entropy[..., 0], rewards.shape, "entropy[..., 0]", "rewards")
  token_mask = jnp.asarray(token_mask).astype(bool)
  check_shape(token_mask, entropy.shape, "token_mask", "entropy")
  tm = token_mask & mask[..., None]
  h = jax.lax.stop_gradient(jnp.where(tm, entropy, 0.0))
  stats = group_stats(rewards, mask, ddof=ddof, correct_threshold=threshold)
  grpo_adv = _grpo_core(rewards, mask, layout, ddof, eps)[..., None]
  h_max = jnp.max(jnp.where(tm, h, -jnp.inf), axis=-1, keepdims=True)
  h_max = jnp.where(jnp.isfinite(h_max), h_max, 0.0)
  correct = (rewards >= threshold)[..., None]
  zvp = jnp.where(correct, alpha * h, -alpha * (h_max - h))
  constant = stats.is_constant[:, None, None]
  return jnp.where(tm, jnp.where(constant, zvp, grpo_adv), 0.0)


def lens_rewards(rewards: Array, mask: Optional[Array], seq_logp: Array, lengths: Array, *,
                 threshold: float = 0.5) -> Array:
  """LENS calibrated rewards (Feng et al. 2025, "Don't Waste Mistakes", arXiv 2510.08696, §5.1, Eq. 10, 14).

  With c_i ∈ {0, 1} correctness, π̄_i = exp(log π_old(y_i) / |y_i|) the length-normalised (geometric-mean)
  sequence probability under the rollout policy:

    r̃_i = c_i − (1 − c_i) · (1/G) · π̄_i / (D − π̄_i)
    D   = max(D_imp, 2 · max_j π̄_j)  for a group with a correct sample, D_imp = [ (1/G) Σ_j c_j / π̄_j ]⁻¹
    D   = 2 · max_j π̄_j              for an all-wrong group

  Confident mistakes (π̄ close to D) are penalised most; the 1/G factor keeps every wrong answer below every
  correct one. G counts the group's valid samples. r̃ ∈ [−1, 1]. Returns f32[num_groups, G] (0 on invalid).

  Args:
    rewards: f32[num_groups, G]; c_i = rewards >= threshold. mask: optional bool[num_groups, G].
    seq_logp: f32[num_groups, G] Σ_t log π_old(y_t) of each response. lengths: int/f32[num_groups, G] |y_i|.
  """
  rewards, mask, layout = _prepare_dense(rewards, mask)
  seq_logp, lengths = as_float(seq_logp), as_float(lengths)
  check_shape(seq_logp, rewards.shape, "seq_logp", "rewards")
  check_shape(lengths, rewards.shape, "lengths", "rewards")
  c = jnp.where(mask, (rewards >= threshold).astype(rewards.dtype), 0.0)
  pbar = jnp.where(mask, jnp.exp(seq_logp / jnp.maximum(lengths, 1.0)), 0.0)
  count = layout.reduce(mask.astype(rewards.dtype))
  inv = layout.reduce(jnp.where(mask & (c > 0), 1.0 / jnp.maximum(pbar, 1e-30), 0.0))
  d_imp = _safe_div(count, inv)                                   # [(1/G) Σ c/π̄]⁻¹; 0 without a correct one
  d = jnp.maximum(d_imp, 2.0 * jnp.max(pbar, axis=-1))
  penalty = _safe_div(pbar, layout.gather(d) - pbar) / jnp.maximum(layout.gather(count), 1.0)
  return jnp.where(mask, c - (1.0 - c) * penalty, 0.0)


def lens(rewards: Array, mask: Optional[Array], seq_logp: Array, lengths: Array, *, alpha: float = 1.0,
         threshold: float = 0.5, ddof: int = 1, eps: float = 1e-6) -> Array:
  """LENS advantages (Feng et al. 2025, arXiv 2510.08696, §5.1 "Final Objective").

  Mixed groups: GRPO's normalisation of the calibrated rewards r̃ (:func:`lens_rewards`). All-wrong
  ("negative") groups: r̃ − mean_group(r̃) (de-meaning only, as the paper), scaled by ``alpha`` (the paper's
  one hyper-parameter down-weighting these groups; the default 1 is ours, the paper tunes it). All-correct
  groups: 0 (r̃ = 1 for all). Returns f32[num_groups, G].
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  check_nonnegative(alpha, "alpha")
  calibrated = lens_rewards(rewards, mask, seq_logp, lengths, threshold=threshold)
  rewards, mask, layout = _prepare_dense(rewards, mask)
  negative = group_stats(rewards, mask, ddof=0, correct_threshold=threshold).all_incorrect[:, None]
  mixed = _grpo_core(calibrated, mask, layout, ddof, eps)
  centred = _dr_grpo_core(calibrated, mask, layout)
  return jnp.where(mask, jnp.where(negative, alpha * centred, mixed), 0.0)


# ----------------------------------------------------------------------------------------------------------
# GPG's estimator.
# ----------------------------------------------------------------------------------------------------------


def gpg(rewards: Array, mask: Optional[Array] = None, *, normalize_std: bool = True, ddof: int = 1,
        eps: float = 1e-6) -> Array:
  """GPG's advantage (Chu et al. 2025, arXiv 2504.02546): group-relative, rescaled for dead groups.

  A_i = α · (r_i − mean_group(r)) / F,   F = std_group(r) + eps (``normalize_std``) or 1,
  α = B / (B − M),   B valid samples in the batch, M of them in zero-variance groups (advantage 0)

  α compensates for the samples that carry no gradient, so the batch's gradient is not shrunk by the share of
  homogeneous groups (α = 1 when none). Returns f32[num_groups, G].
  """
  _check_ddof(ddof)
  check_nonnegative(eps, "eps")
  rewards, mask, layout = _prepare_dense(rewards, mask)
  adv = _grpo_core(rewards, mask, layout, ddof, eps) if normalize_std else _dr_grpo_core(rewards, mask, layout)
  stats = group_stats(rewards, mask, ddof=ddof)
  total = jnp.sum(stats.count)
  dead = jnp.sum(jnp.where(stats.is_constant, stats.count, 0.0))
  scale = _safe_div(total, total - dead)
  return jnp.where(mask, scale * adv, 0.0)
