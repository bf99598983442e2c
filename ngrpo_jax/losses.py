"""Per-token policy-gradient losses: clipped surrogate (asymmetric / dual clip), KL, entropy, value loss.

All losses take per-token arrays ``[B, T]`` with a response ``mask: bool[B, T]`` and return
``(loss, diagnostics)`` where ``loss`` is a scalar to *minimise* and ``diagnostics`` a flat dict of scalars
(already under ``stop_gradient``). The policy loss is three functions composed: the per-token
``clipped_surrogate``, ``aggregate`` and ``clip_diagnostics``; each can be used on its own.

Aggregation (``aggregation=``), with m the mask and l the per-token loss:

* ``"token_mean"`` (DAPO, the NGRPO authors' code; verl / TRL ``token-mean``):   L = Σ_{b,t} m·l / N_tok
* ``"token_sum"`` (no normalisation):                                              L = Σ_{b,t} m·l
* ``"seq_mean_token_sum"`` (verl / tunix ``seq-mean-token-sum``):                 L = Σ_b Σ_t m·l / N_seq
* ``"seq_mean_token_mean"`` (GRPO Eq. 1, NGRPO Eq. 7; verl ``seq-mean-token-mean``, tunix
  ``sequence-mean-token-mean``):                                                   L = Σ_b [Σ_t m·l / Σ_t m] / N_seq
* ``"seq_mean_token_sum_norm"`` (Dr. GRPO, arXiv 2503.20783 §3.2; verl ``seq-mean-token-sum-norm`` with
  ``loss_scale_factor = max_length``):                                             L = Σ_{b,t} m·l / (N_seq · max_length)
* ``"sequence_mean_token_scale"`` (tunix's name): the same formula as ``seq_mean_token_sum_norm`` — tunix
  computes Σ_b (Σ_t m·l) / norm / N_seq with norm the response width; kept as its own name so a tunix config
  translates by name. (tunix's ``sequence-mean-token-sum-norm`` divides by N_seq only, i.e. our
  ``seq_mean_token_sum``; verl before its ``loss_scale_factor`` divided Σ m·l by the width only.)

``N_tok`` / ``N_seq`` default to this batch's valid-token count / number of rows with at least one valid
token. **Gradient accumulation**: pass ``normalizer=batch_normalizer(full_mask, aggregation)`` computed on the
*full* batch to every micro-batch (split along B); then the sum of the micro-batch losses (and gradients)
equals the full-batch loss exactly, for every mode (tested per mode; the peers' bug class TRL #3021,
verl #2776 is a micro-batch normalised by its own count). Rows without valid tokens contribute nothing; masked tokens never leak
(inputs are sanitised with a double ``where``, so NaN/inf at masked positions cannot reach values or grads).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from ngrpo_jax._checks import as_float, check_nonnegative, check_rank, check_shape

Array = jax.Array  # (the math core needs only jax and numpy at run time)

# The names the ``aggregation=`` and ``estimator=`` arguments accept (configs validate against these).
AGGREGATIONS = ("token_mean", "token_sum", "seq_mean_token_sum", "seq_mean_token_mean", "seq_mean_token_sum_norm",
                "sequence_mean_token_scale")
# Modes divided by a constant length (``max_length``).
_LENGTH_NORMALISED = ("seq_mean_token_sum_norm", "sequence_mean_token_scale")
KL_ESTIMATORS = ("k1", "k2", "k3", "k3_plus")


# ----------------------------------------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------------------------------------


def _check_aggregation(aggregation, max_length):
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"`aggregation` must be one of {AGGREGATIONS}, got {aggregation!r}.")
  if aggregation in _LENGTH_NORMALISED:
    if max_length is None or not isinstance(max_length, (int, float)) or max_length <= 0:
      raise ValueError("`max_length` (a constant > 0, e.g. the generation budget) is required for "
                       f"aggregation={aggregation!r}, got {max_length!r}.")


def _mask(mask, shape, ref_name):
  mask = jnp.asarray(mask)
  check_shape(mask, shape, "mask", ref_name)
  return mask.astype(bool)


def _token_arrays(mask, **arrays):
  """Float versions of the [B, T] ``arrays`` (the first keyword sets B, T) and the bool ``mask``, shape-checked."""
  (ref_name, ref), *others = arrays.items()
  ref = as_float(ref)
  check_rank(ref, 2, ref_name)
  out = [ref]
  for name, x in others:
    out.append(as_float(x))
    check_shape(out[-1], ref.shape, name, ref_name)
  return (*out, _mask(mask, ref.shape, ref_name))


def _sanitise(x, mask):
  """Zero masked entries so neither their values nor their gradients can leak (double-where trick)."""
  return jnp.where(mask, x, jnp.zeros_like(x))


# ----------------------------------------------------------------------------------------------------------
# Aggregation.
# ----------------------------------------------------------------------------------------------------------


def batch_normalizer(mask: Array, aggregation: str) -> Array:
  """The denominator ``aggregate`` uses by default, computed over a (full) batch's ``mask: bool[B, T]``.

  Returns the valid-token count for ``"token_mean"``, 1 for ``"token_sum"`` and the number of rows with >= 1
  valid token for the sequence-level modes. Pass it as ``normalizer=`` to every micro-batch for exact gradient
  accumulation.
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"`aggregation` must be one of {AGGREGATIONS}, got {aggregation!r}.")
  mask = jnp.asarray(mask)
  check_rank(mask, 2, "mask")
  mask = mask.astype(bool)
  if aggregation == "token_mean":
    return jnp.sum(mask).astype(jnp.float32)
  if aggregation == "token_sum":
    return jnp.ones((), jnp.float32)
  return jnp.sum(jnp.any(mask, axis=-1)).astype(jnp.float32)


def aggregate(per_token: Array, mask: Array, *, aggregation: str = "seq_mean_token_mean",
              normalizer: Optional[Array] = None, max_length: Optional[int] = None) -> Array:
  """Reduces a per-token quantity ``f32[B, T]`` to a scalar (see the module docstring for the formulas).

  Args:
    per_token: f32[B, T].
    mask: bool[B, T] of valid (response) tokens.
    aggregation: one of ``AGGREGATIONS``.
    normalizer: optional scalar N_tok (token_mean), 1 (token_sum) or N_seq (sequence modes) of the full batch;
      defaults to ``batch_normalizer(mask, aggregation)``. A zero normaliser gives a loss of 0, not NaN.
    max_length: constant length L for ``"seq_mean_token_sum_norm"`` / ``"sequence_mean_token_scale"``
      (required there, ignored otherwise).

  Returns:
    f32 scalar.
  """
  _check_aggregation(aggregation, max_length)
  per_token, mask = _token_arrays(mask, per_token=per_token)
  x = _sanitise(per_token, mask)
  if normalizer is None:
    normalizer = batch_normalizer(mask, aggregation)
  normalizer = jnp.asarray(normalizer, per_token.dtype)
  if aggregation in ("token_mean", "token_sum", "seq_mean_token_sum"):
    total = jnp.sum(x)
  elif aggregation == "seq_mean_token_mean":
    lengths = jnp.sum(mask, axis=-1).astype(per_token.dtype)
    seq = jnp.sum(x, axis=-1) / jnp.maximum(lengths, 1.0)
    total = jnp.sum(seq)
  else:
    total = jnp.sum(x) / max_length
  safe = jnp.where(normalizer > 0, normalizer, 1.0)
  return jnp.where(normalizer > 0, total / safe, 0.0)


def _masked_stats(x, mask):
  n = jnp.sum(mask)
  nonempty = n > 0
  mean = jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(n, 1)
  mn = jnp.where(nonempty, jnp.min(jnp.where(mask, x, jnp.inf)), 0.0)
  mx = jnp.where(nonempty, jnp.max(jnp.where(mask, x, -jnp.inf)), 0.0)
  return mean, mn, mx


def _frac(num_mask, den_mask):
  return jnp.sum(num_mask) / jnp.maximum(jnp.sum(den_mask), 1)


# ----------------------------------------------------------------------------------------------------------
# Policy loss.
# ----------------------------------------------------------------------------------------------------------


def _check_clip_args(eps_pos, eps_neg, dual_clip):
  check_nonnegative(eps_pos, "eps_pos")
  check_nonnegative(eps_neg, "eps_neg")
  if eps_neg >= 1:
    raise ValueError(f"`eps_neg` must be < 1 (the lower clip bound 1 − eps_neg must stay positive), got "
                     f"{eps_neg!r}.")
  if dual_clip is not None and (not isinstance(dual_clip, (int, float)) or not dual_clip > 1):
    raise ValueError(f"`dual_clip` must be None or a number > 1, got {dual_clip!r}.")


def policy_inputs(logp, old_logp, advantages, mask, stop_gradient_advantages):
  """Checks shapes; returns (logp, old_logp, advantages, mask), all [B, T], zero at masked tokens.

  ``old_logp`` is under ``stop_gradient``; ``advantages`` too when ``stop_gradient_advantages``; a per-sequence
  ``advantages: [B]`` is broadcast over tokens.
  """
  logp, old_logp, mask = _token_arrays(mask, logp=logp, old_logp=old_logp)
  advantages = as_float(advantages)
  if advantages.ndim == 1:
    check_shape(advantages, logp.shape[:1], "advantages", "logp[:, 0]")
    advantages = jnp.broadcast_to(advantages[:, None], logp.shape)
  elif advantages.ndim == 2:
    check_shape(advantages, logp.shape, "advantages", "logp")
  else:
    raise ValueError(f"`advantages` must have rank 1 ([B]) or 2 ([B, T]), got shape {tuple(advantages.shape)}.")
  if stop_gradient_advantages:
    advantages = jax.lax.stop_gradient(advantages)
  return (_sanitise(logp, mask), _sanitise(jax.lax.stop_gradient(old_logp), mask),
          _sanitise(advantages, mask), mask)


def clipped_surrogate(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_pos: float = 0.2,
                      eps_neg: float = 0.2, dual_clip: Optional[float] = None,
                      stop_gradient_advantages: bool = True) -> Array:
  """Per-token clipped surrogate with an asymmetric clip range (NGRPO's Asymmetric Clipping, Eq. 8).

  ρ = exp(logp − old_logp);   l = −min(ρ·A, clip(ρ, 1 − eps_neg, 1 + eps_pos)·A)
  dual clip, for A < 0 only:  l = min(l, −dual_clip·A)

  NGRPO: Nan et al. 2025, arXiv 2509.18851, Eq. 8, as the authors' code implements it (PPO's pessimistic
  objective with separate lower / upper clip widths). For A >= 0 only the upper bound binds (no gradient once
  ρ > 1 + eps_pos); for A < 0 only the lower one (no gradient once ρ < 1 − eps_neg). eps_pos = eps_neg = ε
  is PPO (Schulman et al. 2017, arXiv 1707.06347, Eq. 7); eps_neg = 0.2, eps_pos = 0.28 is DAPO's
  clip-higher; NGRPO uses eps_neg = 0.16, eps_pos = 0.24. The dual clip (Ye et al. 2020, arXiv 1912.09729)
  bounds the loss when ρ ≫ 1 on a negative sample.

  Args:
    logp: f32[B, T] log π_θ of the sampled tokens (differentiated).
    old_logp: f32[B, T] log π_old (behaviour policy; treated as a constant).
    advantages: f32[B] (one per sequence, broadcast over tokens) or f32[B, T]; under ``stop_gradient``
      unless ``stop_gradient_advantages=False``.
    mask: bool[B, T] response-token mask.
    eps_pos: upper clip width for A >= 0 (clip-ratio-high), >= 0. Default 0.2.
    eps_neg: lower clip width for A < 0 (clip-ratio-low), in [0, 1). Default 0.2.
    dual_clip: None (off) or a constant c > 1.
    stop_gradient_advantages: wrap ``advantages`` in ``jax.lax.stop_gradient`` (default True).

  Returns:
    f32[B, T] per-token loss l (to minimise); 0 at masked tokens, whatever the inputs hold there.
  """
  _check_clip_args(eps_pos, eps_neg, dual_clip)
  logp, old_logp, adv, _ = policy_inputs(logp, old_logp, advantages, mask, stop_gradient_advantages)
  ratio = jnp.exp(logp - old_logp)
  clipped_ratio = jnp.clip(ratio, 1.0 - eps_neg, 1.0 + eps_pos)
  per_token = jnp.maximum(-adv * ratio, -adv * clipped_ratio)
  if dual_clip is not None:
    per_token = jnp.where(adv < 0, jnp.minimum(per_token, -dual_clip * adv), per_token)
  return per_token


def clip_diagnostics(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_pos: float = 0.2,
                     eps_neg: float = 0.2, dual_clip: Optional[float] = None) -> dict:
  """Clipping and ratio statistics of :func:`clipped_surrogate` over the valid tokens, under stop_gradient.

  Args: as :func:`clipped_surrogate` (shapes [B, T], advantages [B] or [B, T]).

  Returns:
    dict of f32 scalars: ``clip_frac`` (tokens whose gradient is clipped away: A > 0 and ρ > 1 + eps_pos, or
    A < 0 and ρ < 1 − eps_neg), ``clip_frac_pos`` / ``clip_frac_neg`` (among A > 0 / A < 0 tokens),
    ``dual_clip_frac`` (A < 0 and ρ > dual_clip), ``ratio_mean`` / ``ratio_min`` / ``ratio_max``,
    ``approx_kl_k3`` = E[(ρ − 1) − log ρ] and ``approx_kl_k2`` = E[½ (log ρ)²] (estimates of KL(π_old‖π_θ)),
    ``num_tokens``, ``num_pos_tokens``, ``num_neg_tokens``, ``num_seqs``.
  """
  _check_clip_args(eps_pos, eps_neg, dual_clip)
  sg = jax.lax.stop_gradient
  logp, old_logp, adv, mask = policy_inputs(logp, old_logp, advantages, mask, True)
  log_ratio = sg(logp - old_logp)
  ratio = jnp.exp(log_ratio)
  pos = mask & (adv > 0)
  neg = mask & (adv < 0)
  clipped_pos = pos & (ratio > 1.0 + eps_pos)
  clipped_neg = neg & (ratio < 1.0 - eps_neg)
  dual = neg & (ratio > dual_clip) if dual_clip is not None else jnp.zeros_like(mask)
  r_mean, r_min, r_max = _masked_stats(ratio, mask)
  return {
      "clip_frac": _frac(clipped_pos | clipped_neg, mask),
      "clip_frac_pos": _frac(clipped_pos, pos),
      "clip_frac_neg": _frac(clipped_neg, neg),
      "dual_clip_frac": _frac(dual, mask),
      "ratio_mean": r_mean, "ratio_min": r_min, "ratio_max": r_max,
      "approx_kl_k3": _masked_stats(jnp.expm1(log_ratio) - log_ratio, mask)[0],
      "approx_kl_k2": _masked_stats(0.5 * log_ratio ** 2, mask)[0],
      "num_tokens": jnp.sum(mask).astype(jnp.float32),
      "num_pos_tokens": jnp.sum(pos).astype(jnp.float32),
      "num_neg_tokens": jnp.sum(neg).astype(jnp.float32),
      "num_seqs": jnp.sum(jnp.any(mask, axis=-1)).astype(jnp.float32),
  }


def policy_loss(logp: Array, old_logp: Array, advantages: Array, mask: Array, *, eps_pos: float = 0.2,
                eps_neg: float = 0.2, dual_clip: Optional[float] = None,
                aggregation: str = "seq_mean_token_mean", normalizer: Optional[Array] = None,
                max_length: Optional[int] = None,
                stop_gradient_advantages: bool = True) -> tuple[Array, dict]:
  """NGRPO / PPO policy loss: the aggregated :func:`clipped_surrogate` and its :func:`clip_diagnostics`.

  L = aggregate(l, mask),   l = −min(ρ·A, clip(ρ, 1 − eps_neg, 1 + eps_pos)·A)   (NGRPO Eq. 7–8)

  Args:
    logp, old_logp, advantages, mask, eps_pos, eps_neg, dual_clip, stop_gradient_advantages: as
      :func:`clipped_surrogate`.
    aggregation: see the module docstring; default "seq_mean_token_mean" (GRPO Eq. 1 / NGRPO Eq. 7).
    normalizer: full-batch N_tok / N_seq for exact micro-batch accumulation (see ``batch_normalizer``).
    max_length: constant for "seq_mean_token_sum_norm".

  Returns:
    (loss, diagnostics): the f32 scalar to minimise, and the dict of :func:`clip_diagnostics`.
  """
  _check_clip_args(eps_pos, eps_neg, dual_clip)
  _check_aggregation(aggregation, max_length)
  clip = dict(eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=dual_clip)
  per_token = clipped_surrogate(logp, old_logp, advantages, mask, **clip,
                                stop_gradient_advantages=stop_gradient_advantages)
  loss = aggregate(per_token, mask, aggregation=aggregation, normalizer=normalizer, max_length=max_length)
  return loss, clip_diagnostics(logp, old_logp, advantages, mask, **clip)


# ----------------------------------------------------------------------------------------------------------
# KL penalty.
# ----------------------------------------------------------------------------------------------------------


def kl_per_token(logp: Array, ref_logp: Array, *, estimator: str = "k3",
                 clip_max: Optional[float] = None) -> Array:
  """Per-token estimators of KL(π_θ‖π_ref) from samples of π_θ (Schulman 2020, "Approximating KL").

  With x = log π_ref − log π_θ:  k1 = −x,  k2 = ½ x²,  k3 = eˣ − 1 − x (>= 0, unbiased, low variance; the
  GRPO paper's Eq. 4). k3 is evaluated as ``expm1(x) − x`` for accuracy near x = 0.

  ``"k3_plus"`` is the straight-through estimator: the value of k3 with the gradient of k2,
  ``k2 + stop_gradient(k3 − k2)`` (verl's ``low_var_kl+`` / ``k3+``). Its gradient ∇½x² = −x ∇log π_θ is the
  score-function form whose expectation under π_θ is ∇KL(π_θ‖π_ref) when the loss is a mean over sampled
  tokens, while the logged value stays the non-negative, low-variance k3.

  ``clip_max`` optionally caps the per-token value (verl / the NGRPO authors cap k3 at 10); None (default)
  leaves it uncapped.
  """
  if estimator not in KL_ESTIMATORS:
    raise ValueError(f"`estimator` must be one of {KL_ESTIMATORS}, got {estimator!r}.")
  if clip_max is not None and (not isinstance(clip_max, (int, float)) or not clip_max > 0):
    raise ValueError(f"`clip_max` must be None or a number > 0, got {clip_max!r}.")
  x = as_float(ref_logp) - as_float(logp)
  k3 = lambda: jnp.maximum(jnp.expm1(x) - x, 0.0)
  if estimator == "k1":
    out = -x
  elif estimator == "k2":
    out = 0.5 * x * x
  elif estimator == "k3":
    out = k3()
  else:
    k2 = 0.5 * x * x
    out = k2 + jax.lax.stop_gradient(k3() - k2)
  return out if clip_max is None else jnp.minimum(out, clip_max)


def kl_penalty(logp: Array, ref_logp: Array, mask: Array, *, estimator: str = "k3",
               aggregation: str = "seq_mean_token_mean", normalizer: Optional[Array] = None,
               max_length: Optional[int] = None, clip_max: Optional[float] = None,
               old_logp: Optional[Array] = None) -> tuple[Array, dict]:
  """KL(π_θ‖π_ref) penalty aggregated over response tokens (GRPO, Shao et al. 2024, Eq. 3–4).

  With ``old_logp`` (log π_old, the policy that sampled the tokens) each token's estimate is weighted by the
  importance ratio ρ_t = π_θ / π_old, gradient included:

    D_t = ρ_t · k(t),   ρ_t = exp(log π_θ − sg(log π_old))

  DeepSeek-V3.2's unbiased KL estimate (arXiv 2512.02556, §3.1, "Unbiased KL Estimate", with k = k3): the
  tokens come from π_old, not π_θ, so the unweighted k3 (and its gradient) is biased once π_θ ≠ π_old;
  E_{π_old}[ρ·k3] = KL(π_θ‖π_ref) and its gradient is ∇KL exactly. At ρ = 1 it equals the plain estimate.

  Args:
    logp: f32[B, T] log π_θ (differentiated).
    ref_logp: f32[B, T] log π_ref (constant).
    mask: bool[B, T].
    estimator: "k1", "k2", "k3" (default, the GRPO paper's) or "k3_plus" (see :func:`kl_per_token`).
    clip_max: optional cap of the per-token estimate (see :func:`kl_per_token`).
    aggregation / normalizer / max_length: as :func:`aggregate`.
    old_logp: optional f32[B, T] log π_old (constant) for the importance-weighted form.

  Returns:
    (kl, {"kl_mean": token-mean of the (weighted) estimate, "kl_max": its max over valid tokens}). Multiply by
    β and add to the loss.
  """
  _check_aggregation(aggregation, max_length)
  logp, ref_logp, mask = _token_arrays(mask, logp=logp, ref_logp=ref_logp)
  logp = _sanitise(logp, mask)
  per_token = kl_per_token(logp, _sanitise(jax.lax.stop_gradient(ref_logp), mask),
                           estimator=estimator, clip_max=clip_max)
  if old_logp is not None:
    old_logp = as_float(old_logp)
    check_shape(old_logp, logp.shape, "old_logp", "logp")
    per_token = per_token * jnp.exp(logp - _sanitise(jax.lax.stop_gradient(old_logp), mask))
  loss = aggregate(per_token, mask, aggregation=aggregation, normalizer=normalizer, max_length=max_length)
  mean, _, mx = _masked_stats(jax.lax.stop_gradient(per_token), mask)
  return loss, {"kl_mean": mean, "kl_max": mx}


# ----------------------------------------------------------------------------------------------------------
# Entropy.
# ----------------------------------------------------------------------------------------------------------


def token_entropy(logits: Array) -> Array:
  """Entropy of softmax(logits) over the last axis, from logits: H = logsumexp(z) − Σ_v p_v z_v.

  Computed on max-shifted logits (stable for large |z|); entries of −inf (banned tokens) contribute 0.
  Shape: [..., V] → [...].
  """
  logits = as_float(logits)
  if logits.ndim < 1:
    raise ValueError("`logits` must have rank >= 1 (last axis = vocabulary).")
  finite = jnp.isfinite(logits)
  # Shift by the (constant) max first: H is shift-invariant and the shift avoids cancellation in
  # logsumexp(z) − Σ p z when |z| is large.
  shift = jax.lax.stop_gradient(jnp.max(jnp.where(finite, logits, -jnp.inf), axis=-1, keepdims=True))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  safe = jnp.where(finite, logits - shift, 0.0)
  logz = jax.nn.logsumexp(jnp.where(finite, safe, -jnp.inf), axis=-1)
  p = jnp.where(finite, jnp.exp(safe - logz[..., None]), 0.0)
  return logz - jnp.sum(p * safe, axis=-1)


def entropy(logits: Array, mask: Optional[Array] = None, *, aggregation: str = "token_mean",
            normalizer: Optional[Array] = None, max_length: Optional[int] = None) -> tuple[Array, dict]:
  """Mean policy entropy over response tokens (for an entropy bonus: ``loss − coef · entropy``).

  Args:
    logits: f32[B, T, V].
    mask: optional bool[B, T] (default all valid).
    aggregation / normalizer / max_length: as :func:`aggregate` (default "token_mean").

  Returns:
    (aggregated entropy — a quantity to *maximise*, {"per_token": f32[B, T] entropies (0 at masked
    tokens), "entropy_mean": token mean, "entropy_min", "entropy_max"}).
  """
  logits = as_float(logits)
  check_rank(logits, 3, "logits")
  mask = jnp.ones(logits.shape[:2], bool) if mask is None else _mask(mask, logits.shape[:2], "logits[..., 0]")
  h = jnp.where(mask, token_entropy(_sanitise(logits, mask[..., None])), 0.0)
  value = aggregate(h, mask, aggregation=aggregation, normalizer=normalizer, max_length=max_length)
  mean, mn, mx = _masked_stats(jax.lax.stop_gradient(h), mask)
  return value, {"per_token": jax.lax.stop_gradient(h), "entropy_mean": mean, "entropy_min": mn,
                 "entropy_max": mx}


# ----------------------------------------------------------------------------------------------------------
# Value loss.
# ----------------------------------------------------------------------------------------------------------


def value_loss(values: Array, old_values: Array, returns: Array, mask: Array, *,
               clip_eps: Optional[float] = 0.2, aggregation: str = "token_mean",
               normalizer: Optional[Array] = None, max_length: Optional[int] = None) -> tuple[Array, dict]:
  """Clipped value loss of the PPO critic (Schulman et al. 2017; as in OpenAI baselines / verl).

  V_clip = V_old + clip(V − V_old, −ε, ε);   l = ½ max((V − R)², (V_clip − R)²)   (ε = None: ½ (V − R)²).

  Args:
    values: f32[B, T] current critic values (differentiated).
    old_values: f32[B, T] values at rollout time (constant).
    returns: f32[B, T] targets R (e.g. from :func:`ngrpo_jax.advantages.gae`, constant).
    mask: bool[B, T].
    clip_eps: ε >= 0 or None (no clipping). Default 0.2.
    aggregation / normalizer / max_length: as :func:`aggregate` (default "token_mean").

  Returns:
    (loss, {"value_clip_frac", "value_mean", "return_mean", "value_error"}: fraction of tokens where the
    clipped branch is active, masked means of V and R, and the token mean of (V − R)²).
  """
  if clip_eps is not None and (not isinstance(clip_eps, (int, float)) or not clip_eps >= 0):
    raise ValueError(f"`clip_eps` must be None or a number >= 0, got {clip_eps!r}.")
  _check_aggregation(aggregation, max_length)
  values, old_values, returns, mask = _token_arrays(mask, values=values, old_values=old_values, returns=returns)
  v = _sanitise(values, mask)
  v_old = _sanitise(jax.lax.stop_gradient(old_values), mask)
  ret = _sanitise(jax.lax.stop_gradient(returns), mask)
  err = (v - ret) ** 2
  if clip_eps is None:
    per_token = 0.5 * err
    clipped = jnp.zeros_like(mask)
  else:
    v_clip = v_old + jnp.clip(v - v_old, -clip_eps, clip_eps)
    err_clip = (v_clip - ret) ** 2
    per_token = 0.5 * jnp.maximum(err, err_clip)
    clipped = mask & (jax.lax.stop_gradient(err_clip) > jax.lax.stop_gradient(err))
  loss = aggregate(per_token, mask, aggregation=aggregation, normalizer=normalizer, max_length=max_length)
  sg = jax.lax.stop_gradient
  return loss, {
      "value_clip_frac": _frac(clipped, mask),
      "value_mean": _masked_stats(sg(v), mask)[0],
      "return_mean": _masked_stats(ret, mask)[0],
      "value_error": _masked_stats(sg(err), mask)[0],
  }
