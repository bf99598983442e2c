"""The training objective as a chain of terms, composed like ``optax.chain``:

    L(θ) = Σ_i c_i · term_i(outputs_θ, batch)

e.g. NGRPO = ``(policy_gradient(eps_pos=0.24, eps_neg=0.16), entropy_bonus(0.001))`` and PPO =
``(policy_gradient(), kl_to_reference(0.001), value_loss(0.5))``. A term is a registered function
``term(outputs, batch, agg, **kwargs) -> (loss, diagnostics)`` (``registry.objective_term``) that declares
the model outputs and batch entries it reads (``needs``); the trainer scores a reference policy exactly when
a term needs ``ref_logp``, and keeps a value head exactly when one needs ``values``.

Every term is aggregated with the algorithm's one aggregation mode (``losses.aggregate``) and the whole
minibatch's normaliser, so the sum of micro-batch losses equals the minibatch loss (exact gradient
accumulation, ``losses.batch_normalizer``).
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from ngrpo_jax import losses
from ngrpo_jax import policy_objectives
from ngrpo_jax.training import registry

# Model outputs a term can read; everything else it names is a batch entry.
MODEL_OUTPUTS = ("logp", "entropy", "values")


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted term of the objective, as data: ``coef · fn(**kwargs)``.

  Attributes:
    name: the term's label (metrics ``loss/<name>``; the key in a config's ``objective`` section).
    coef: its weight c_i in the sum.
    kwargs: keyword arguments of the term, as sorted ``(key, value)`` pairs (hashable, JSON-friendly).
    fn: a registered objective term (``registry.OBJECTIVE_TERMS``) or an import path ``"pkg.mod:fn"``;
      default: ``name``.
  """
  name: str
  coef: float = 1.0
  kwargs: tuple = ()
  fn: Optional[str] = None

  def __post_init__(self):
    if isinstance(self.kwargs, dict):
      object.__setattr__(self, "kwargs", tuple(sorted(self.kwargs.items())))
    clash = {"coef", "fn"} & {k for k, _ in self.kwargs}
    if clash:
      raise ValueError(f"term {self.name!r}: keyword arguments may not be called {sorted(clash)} (the term's "
                       f"weight and function in a config's objective section)")
    self.entry()                              # unknown names fail here, naming the registered ones
    if not isinstance(self.coef, (int, float)) or isinstance(self.coef, bool):
      raise TypeError(f"term {self.name!r}: coef must be a number, got {self.coef!r}")

  def entry(self) -> registry.Entry:
    return registry.OBJECTIVE_TERMS.get(self.fn or self.name)

  @property
  def needs(self) -> tuple:
    return self.entry().needs


@dataclasses.dataclass(frozen=True)
class Aggregator:
  """Reduces per-token ``f32[B, T]`` to a scalar with one mode (``losses.aggregate``) and a fixed normaliser."""
  mode: str
  normalizer: Optional[object] = None
  max_length: Optional[int] = None

  def __call__(self, per_token, mask):
    return losses.aggregate(per_token, mask, aggregation=self.mode, normalizer=self.normalizer,
                            max_length=self.max_length)


# ----------------------------------------------------------------------------------------------------------
# The built-in terms.


@registry.objective_term("policy_gradient", needs=("logp", "old_logp", "advantages"))
def policy_gradient(outputs, batch, agg: Aggregator, *, eps_pos: float = 0.2, eps_neg: float = 0.2,
                    dual_clip: Optional[float] = None):
  """The clipped surrogate with asymmetric clip range (NGRPO §4.2, Eq. 8; PPO when eps_pos = eps_neg).

  l_t = −min(ρ_t A_t, clip(ρ_t, 1 − eps_neg, 1 + eps_pos) A_t), ρ_t = π_θ / π_old (``losses.policy_loss``).
  """
  loss, diag = losses.policy_loss(outputs["logp"], batch["old_logp"], batch["advantages"], batch["loss_mask"] > 0,
                                  eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=dual_clip, aggregation=agg.mode,
                                  normalizer=agg.normalizer, max_length=agg.max_length)
  return loss, {f"pg/{k}": v for k, v in diag.items()}


@registry.objective_term("entropy_bonus", needs=("entropy",))
def entropy_bonus(outputs, batch, agg: Aggregator):
  """−H(π_θ) aggregated over response tokens: with coef c > 0 the loss rewards entropy (loss −= c·H)."""
  h, mask = outputs["entropy"].astype(jnp.float32), batch["loss_mask"] > 0
  return -agg(h, mask), {"entropy": Aggregator(agg.mode, None, agg.max_length)(h, mask)}


@registry.objective_term("adaptive_entropy_bonus", needs=("entropy", "entropy_coef_applied"))
def adaptive_entropy_bonus(outputs, batch, agg: Aggregator, *, target: float = 0.2, delta: float = 0.005,
                           coef_max: float = 1.0, init: float = 0.0):
  """−c_k · H(π_θ) with Skywork-OR1's adaptive coefficient c_k (He et al. 2025, arXiv 2505.22312;
  ``controllers.adaptive_entropy_coef``): c moves by ±delta toward the target entropy each RL step and the
  bonus is off while the rollout entropy is above the target. The trainer keeps c in
  ``TrainState.controllers`` and passes this step's value as ``batch["entropy_coef_applied"]``; the term's coef
  should stay 1. ``target`` / ``delta`` / ``coef_max`` / ``init`` (the first c) are read by the controller."""
  del target, delta, coef_max, init
  h, mask = outputs["entropy"].astype(jnp.float32), batch["loss_mask"] > 0
  coef = batch["entropy_coef_applied"]
  return -coef * agg(h, mask), {"entropy": Aggregator(agg.mode, None, agg.max_length)(h, mask),
                                "entropy_coef": coef}


@registry.objective_term("kl_to_reference", needs=("logp", "ref_logp", "old_logp"))
def kl_to_reference(outputs, batch, agg: Aggregator, *, estimator: str = "k3", importance_weighted: bool = False):
  """KL(π_θ ‖ π_ref) with Schulman's k1 / k2 / k3 or the straight-through k3+ estimator (GRPO, Shao et al.
  2024, Eq. 4); ``importance_weighted``: each token's estimate times π_θ / π_old (DeepSeek-V3.2's unbiased
  form, ``losses.kl_penalty``)."""
  kl, diag = losses.kl_penalty(outputs["logp"], batch["ref_logp"], batch["loss_mask"] > 0, estimator=estimator,
                               aggregation=agg.mode, normalizer=agg.normalizer, max_length=agg.max_length,
                               old_logp=batch["old_logp"] if importance_weighted else None)
  return kl, {"kl_ref_mean": diag["kl_mean"], "kl_ref_max": diag["kl_max"]}


@registry.objective_term("value_loss", needs=("values", "old_values", "returns"))
def value_loss(outputs, batch, agg: Aggregator, *, clip: Optional[float] = 0.2):
  """PPO's clipped value loss ½ max((V − R)², (V_clip − R)²) (Schulman et al. 2017; ``losses.value_loss``)."""
  vl, diag = losses.value_loss(outputs["values"].astype(jnp.float32), batch["old_values"], batch["returns"],
                               batch["loss_mask"] > 0, clip_eps=clip, aggregation=agg.mode,
                               normalizer=agg.normalizer, max_length=agg.max_length)
  return vl, {f"value/{k}": v for k, v in diag.items()}


# ----------------------------------------------------------------------------------------------------------
# Policy objectives beyond the clipped surrogate (``policy_objectives``). Each replaces ``policy_gradient``
# in an algorithm's objective; the diagnostics are the ratio statistics of ``losses.clip_diagnostics``.

_PG_NEEDS = ("logp", "old_logp", "advantages")
_RATIO_KEYS = ("ratio_mean", "ratio_min", "ratio_max", "approx_kl_k3", "approx_kl_k2")


def _pg_args(outputs, batch):
  return outputs["logp"], batch["old_logp"], batch["advantages"], batch["loss_mask"] > 0


def _ratio_diagnostics(outputs, batch, **extra):
  diag = losses.clip_diagnostics(*_pg_args(outputs, batch))
  return {**{f"pg/{k}": diag[k] for k in _RATIO_KEYS}, **{f"pg/{k}": v for k, v in extra.items()}}


def _policy_term(per_token, outputs, batch, agg):
  """(aggregated per-token loss, ratio diagnostics) of a ``policy_objectives`` loss already evaluated."""
  return agg(per_token, batch["loss_mask"] > 0), _ratio_diagnostics(outputs, batch)


@registry.objective_term("gspo", needs=_PG_NEEDS)
def gspo(outputs, batch, agg: Aggregator, *, eps_low: float = 3e-4, eps_high: float = 4e-4):
  """GSPO (arXiv 2507.18071): sequence ratio exp(mean_t log ρ_t), clipped per sequence
  (``policy_objectives.gspo``); with ``aggregation="seq_mean_token_mean"`` it is the paper's loss."""
  return _policy_term(policy_objectives.gspo(*_pg_args(outputs, batch), eps_low=eps_low, eps_high=eps_high),
                      outputs, batch, agg)


@registry.objective_term("gspo_token", needs=_PG_NEEDS)
def gspo_token(outputs, batch, agg: Aggregator, *, eps_low: float = 3e-4, eps_high: float = 4e-4):
  """GSPO-token (arXiv 2507.18071, Eq. 13–14): s_{i,t} = sg[s_i] π_θ(y_t) / sg[π_θ(y_t)]; accepts token
  advantages (``policy_objectives.gspo(token_level=True)``)."""
  return _policy_term(policy_objectives.gspo(*_pg_args(outputs, batch), eps_low=eps_low, eps_high=eps_high,
                                             token_level=True), outputs, batch, agg)


@registry.objective_term("gmpo", needs=_PG_NEEDS)
def gmpo(outputs, batch, agg: Aggregator, *, eps_low: float = 0.4, eps_high: float = 0.4):
  """GMPO (arXiv 2507.20673): geometric mean of the token ratios, clipped in log space
  (``policy_objectives.gmpo``)."""
  return _policy_term(policy_objectives.gmpo(*_pg_args(outputs, batch), eps_low=eps_low, eps_high=eps_high),
                      outputs, batch, agg)


@registry.objective_term("cispo", needs=_PG_NEEDS)
def cispo(outputs, batch, agg: Aggregator, *, eps_low: Optional[float] = None, eps_high: float = 0.28):
  """CISPO (MiniMax-M1, arXiv 2506.13585): −sg(clip(ρ))·A·log π, every token keeps its gradient
  (``policy_objectives.cispo``)."""
  return _policy_term(policy_objectives.cispo(*_pg_args(outputs, batch), eps_low=eps_low, eps_high=eps_high),
                      outputs, batch, agg)


@registry.objective_term("sapo", needs=_PG_NEEDS)
def sapo(outputs, batch, agg: Aggregator, *, tau_pos: float = 1.0, tau_neg: float = 1.05):
  """SAPO (arXiv 2511.20347): −(4/τ)σ(τ(ρ − 1))·A, τ by the advantage's sign (``policy_objectives.sapo``)."""
  return _policy_term(policy_objectives.sapo(*_pg_args(outputs, batch), tau_pos=tau_pos, tau_neg=tau_neg),
                      outputs, batch, agg)


@registry.objective_term("dppo", needs=_PG_NEEDS)
def dppo(outputs, batch, agg: Aggregator, *, divergence: str = "tv", delta: float = 0.15):
  """DPPO (arXiv 2602.04879): −ρA with a divergence trust-region mask instead of the ratio clip
  (``policy_objectives.dppo``, Binary-TV / Binary-KL)."""
  return _policy_term(policy_objectives.dppo(*_pg_args(outputs, batch), divergence=divergence, delta=delta),
                      outputs, batch, agg)


@registry.objective_term("gpg", needs=_PG_NEEDS)
def gpg(outputs, batch, agg: Aggregator):
  """GPG's loss (arXiv 2504.02546): −A·log π, no ratio, no clip (``policy_objectives.gpg``); pair it with the
  ``gpg`` estimator."""
  return _policy_term(policy_objectives.gpg(*_pg_args(outputs, batch)), outputs, batch, agg)


@registry.objective_term("two_sided_clip", needs=_PG_NEEDS)
def two_sided_clip(outputs, batch, agg: Aggregator, *, eps_pos: float = 0.2, eps_neg: float = 0.2,
                   delta: float = 4.0):
  """INTELLECT-2's two-sided clipping (Prime Intellect 2025, arXiv 2505.07291): for A < 0 the ratio's
  contribution is also bounded above by delta, l = min(l_PPO, −delta·A). This is the dual clip of Ye et al.
  (``policy_gradient(dual_clip=delta)``) under INTELLECT-2's name and default delta = 4."""
  return policy_gradient(outputs, batch, agg, eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=delta)


def _cov(mb):
  """Clip-Cov / KL-Cov's token covariance over the whole minibatch, from the rollout policy's log-probs (the
  paper's centred covariance at θ_old; identical to the current policy's at the first on-policy minibatch)."""
  mask = mb["loss_mask"] > 0
  return policy_objectives.cov_scores(mb["old_logp"], mb["advantages"], mask), mask


def _clip_cov_prepare(mb, key, *, clip_ratio=2e-4, cov_low=1.0, cov_high=5.0, eps_low=0.2, eps_high=0.2):
  del eps_low, eps_high
  cov, mask = _cov(mb)
  return {"clip_cov_mask": policy_objectives.clip_cov_mask(cov, mask, key, clip_ratio=clip_ratio, cov_low=cov_low,
                                                           cov_high=cov_high)}


def _kl_cov_prepare(mb, key, *, top_frac=2e-3, kl_coef=1.0):
  del key, kl_coef
  cov, mask = _cov(mb)
  return {"kl_cov_mask": policy_objectives.kl_cov_mask(cov, mask, top_frac=top_frac)}


@registry.objective_term("clip_cov", needs=_PG_NEEDS, prepare=_clip_cov_prepare)
def clip_cov(outputs, batch, agg: Aggregator, *, clip_ratio: float = 2e-4, cov_low: float = 1.0,
             cov_high: float = 5.0, eps_low: float = 0.2, eps_high: float = 0.2):
  """Clip-Cov (Cui et al. 2025, arXiv 2505.22617): PPO's clipped surrogate with a random clip_ratio share of the
  tokens whose covariance lies in [cov_low, cov_high] detached; the selection is made once per minibatch."""
  del clip_ratio, cov_low, cov_high
  args = _pg_args(outputs, batch)
  sel = batch["clip_cov_mask"]
  return agg(policy_objectives.clip_cov(*args, sel, eps_low=eps_low, eps_high=eps_high), args[3]), \
      _ratio_diagnostics(outputs, batch, cov_selected_frac=jnp.sum(sel) / jnp.maximum(jnp.sum(args[3]), 1))


@registry.objective_term("kl_cov", needs=_PG_NEEDS, prepare=_kl_cov_prepare)
def kl_cov(outputs, batch, agg: Aggregator, *, top_frac: float = 2e-3, kl_coef: float = 1.0):
  """KL-Cov (Cui et al. 2025, arXiv 2505.22617): −ρA plus kl_coef·|log ρ| on the top_frac highest-covariance
  tokens, selected once per minibatch (``kl_coef``: the paper's β; not ``coef``, which is the term's weight)."""
  del top_frac
  args = _pg_args(outputs, batch)
  sel = batch["kl_cov_mask"]
  return agg(policy_objectives.kl_cov(*args, sel, coef=kl_coef), args[3]), \
      _ratio_diagnostics(outputs, batch, cov_selected_frac=jnp.sum(sel) / jnp.maximum(jnp.sum(args[3]), 1))


def _high_entropy_prepare(mb, key, *, top_frac=0.2, eps_pos=0.2, eps_neg=0.2):
  del key, eps_pos, eps_neg
  return {"high_entropy_mask": policy_objectives.top_entropy_mask(mb["old_entropy"], mb["loss_mask"] > 0,
                                                                  top_frac=top_frac)}


@registry.objective_term("high_entropy_policy_gradient", needs=_PG_NEEDS + ("old_entropy",),
                         prepare=_high_entropy_prepare)
def high_entropy_policy_gradient(outputs, batch, agg: Aggregator, *, top_frac: float = 0.2, eps_pos: float = 0.2,
                                 eps_neg: float = 0.2):
  """The clipped surrogate on the top ``top_frac`` entropy tokens of the minibatch only (Wang et al. 2025,
  "Beyond the 80/20 Rule", arXiv 2506.01939; TRL ``top_entropy_quantile``). Entropies are the rollout
  policy's (``old_entropy``), the quantile is over the whole minibatch; the other tokens get no policy
  gradient but still count in the aggregation's normaliser (their gradient is zeroed, as the paper)."""
  del top_frac
  logp, old, adv, mask = _pg_args(outputs, batch)
  per_token = losses.clipped_surrogate(logp, old, adv, mask, eps_pos=eps_pos, eps_neg=eps_neg)
  keep = batch["high_entropy_mask"]
  return agg(jnp.where(keep, per_token, 0.0), mask), \
      _ratio_diagnostics(outputs, batch, high_entropy_frac=jnp.sum(keep) / jnp.maximum(jnp.sum(mask), 1))


# Constructors for presets: ``objective=(policy_gradient_term(0.24, 0.16), entropy_term(0.001))``.


def policy_gradient_term(eps_pos: float = 0.2, eps_neg: float = 0.2, dual_clip: Optional[float] = None,
                         name: str = "policy_gradient") -> Term:
  kw = {"eps_pos": eps_pos, "eps_neg": eps_neg}
  if dual_clip is not None:
    kw["dual_clip"] = dual_clip
  return Term(name, 1.0, kw)


def entropy_term(coef: float) -> Term:
  return Term("entropy_bonus", coef)


def kl_term(coef: float, estimator: str = "k3", importance_weighted: bool = False) -> Term:
  kw = {"estimator": estimator}
  if importance_weighted:
    kw["importance_weighted"] = True
  return Term("kl_to_reference", coef, kw)


def value_term(coef: float = 0.5, clip: Optional[float] = 0.2) -> Term:
  return Term("value_loss", coef, {"clip": clip})


# ----------------------------------------------------------------------------------------------------------
# Composition.


def needs(terms) -> set:
  """Every model output and batch entry the terms read."""
  return {n for t in terms for n in t.needs}


def make_objective(terms, aggregation: str, max_length: Optional[int]):
  """``objective(outputs, batch, normalizer) -> (loss, aux)`` = Σ_i c_i · term_i, with per-term metrics.

  ``aux`` has ``loss`` (the total) and ``loss/<term name>`` (each term's unweighted value), which add up
  over micro-batches, and every term's scalar diagnostics, which are statistics of one micro-batch (the
  train step averages them). Terms are evaluated in the order given.
  """
  entries = [(t, t.entry().fn, dict(t.kwargs)) for t in terms]

  def prepare(minibatch, key):
    """Entries the terms compute from the whole minibatch (``registry.objective_term(prepare=...)``)."""
    out = {}
    for i, (_, fn, kwargs) in enumerate(entries):
      if getattr(fn, "prepare", None) is not None:
        out.update(fn.prepare(minibatch, jax.random.fold_in(key, i), **kwargs))
    return out

  def objective(outputs, batch, normalizer):
    agg = Aggregator(aggregation, normalizer, max_length)
    total, aux = 0.0, {}
    for term, fn, kwargs in entries:
      value, diag = fn(outputs, batch, agg, **kwargs)
      total = total + term.coef * value
      aux[f"loss/{term.name}"] = value
      aux.update({k: v for k, v in dict(diag).items() if jnp.ndim(v) == 0})
    aux["loss"] = total
    return total, aux

  objective.prepare = prepare
  return objective
