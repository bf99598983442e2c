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

import jax.numpy as jnp

from ngrpo_jax import losses
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


@registry.objective_term("kl_to_reference", needs=("logp", "ref_logp"))
def kl_to_reference(outputs, batch, agg: Aggregator, *, estimator: str = "k3"):
  """KL(π_θ ‖ π_ref) with Schulman's k1 / k2 / k3 estimator (GRPO, Shao et al. 2024, Eq. 4)."""
  kl, diag = losses.kl_penalty(outputs["logp"], batch["ref_logp"], batch["loss_mask"] > 0, estimator=estimator,
                               aggregation=agg.mode, normalizer=agg.normalizer, max_length=agg.max_length)
  return kl, {"kl_ref_mean": diag["kl_mean"], "kl_ref_max": diag["kl_max"]}


@registry.objective_term("value_loss", needs=("values", "old_values", "returns"))
def value_loss(outputs, batch, agg: Aggregator, *, clip: Optional[float] = 0.2):
  """PPO's clipped value loss ½ max((V − R)², (V_clip − R)²) (Schulman et al. 2017; ``losses.value_loss``)."""
  vl, diag = losses.value_loss(outputs["values"].astype(jnp.float32), batch["old_values"], batch["returns"],
                               batch["loss_mask"] > 0, clip_eps=clip, aggregation=agg.mode,
                               normalizer=agg.normalizer, max_length=agg.max_length)
  return vl, {f"value/{k}": v for k, v in diag.items()}


# Constructors for presets: ``objective=(policy_gradient_term(0.24, 0.16), entropy_term(0.001))``.


def policy_gradient_term(eps_pos: float = 0.2, eps_neg: float = 0.2, dual_clip: Optional[float] = None,
                         name: str = "policy_gradient") -> Term:
  kw = {"eps_pos": eps_pos, "eps_neg": eps_neg}
  if dual_clip is not None:
    kw["dual_clip"] = dual_clip
  return Term(name, 1.0, kw)


def entropy_term(coef: float) -> Term:
  return Term("entropy_bonus", coef)


def kl_term(coef: float, estimator: str = "k3") -> Term:
  return Term("kl_to_reference", coef, {"estimator": estimator})


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

  return objective
