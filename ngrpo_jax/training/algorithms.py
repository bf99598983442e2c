"""RL algorithms as data: each preset names an advantage estimator, a group filter, clip bounds, an
aggregation mode and KL / entropy coefficients.  An ablation is a config change, never a code branch.

The trainer (``ngrpo_jax.training.update`` / ``rollout``) reads only the fields of :class:`Algorithm`;
researchers can build their own instance (``dataclasses.replace(PRESETS["ngrpo"], ...)``) or pass their
own callables:

* ``advantage_fn(rewards f32[num_groups, G]) -> f32[num_groups, G]`` replaces the named estimator;
* ``loss_fn(logp, old_logp, advantages, mask, **loss_kwargs) -> (loss, diagnostics)`` replaces
  ``ngrpo_jax.losses.policy_loss`` (same signature, same ``(scalar, dict)`` return).

Paper references: NGRPO (Nan et al. 2025, arXiv 2509.18851) Eq. 6-8; GRPO (Shao et al. 2024); DAPO (Yu et
al. 2025); W-REINFORCE / PSR / NSR (Zhu et al. 2025, arXiv 2506.01347); PPO (Schulman et al. 2017).
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional

ADVANTAGE_ESTIMATORS = ("grpo", "ngrpo", "dr_grpo", "rloo", "psr_only", "nsr_only", "w_reinforce", "gae")
GROUP_FILTERS = ("none", "dapo", "ngrpo")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")

# Virtual-reward magnitudes of the NGRPO ablation (paper Table 3) for rewards in {0, 1}: the task's
# maximum reward (the paper's default), the midpoint, and the minimum reward.
VIRTUAL_REWARD_LEVELS = {"max": 1.0, "medium": 0.5, "min": 0.0}


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One RL algorithm as data.

  Attributes:
    name: label used in logs.
    advantage: name of an estimator in ``ngrpo_jax.advantages`` (one of ``ADVANTAGE_ESTIMATORS``).
    advantage_kwargs: keyword arguments for the estimator, as a tuple of ``(key, value)`` pairs (hashable),
      e.g. ``(("r_virtual", 1.0), ("num_virtual", 1), ("ddof", 1))`` for NGRPO.
    group_filter: ``"none"`` keeps every group; ``"dapo"`` drops homogeneous groups (all equal rewards) and
      triggers dynamic sampling; ``"ngrpo"`` drops homogeneous-correct groups only and keeps all-wrong ones.
    dynamic_sampling: refill the batch with new prompts until enough groups survive the filter (bounded
      by the trainer's ``max_refills``).
    eps_pos: clip bound for A >= 0 (ratio <= 1 + eps_pos).  eps_neg: clip bound for A < 0 (ratio >= 1 - eps_neg).
    dual_clip: optional dual-clip constant c > 1 for A < 0 (None disables).
    aggregation: loss aggregation (one of ``AGGREGATIONS``): DAPO's token mean over the batch, GRPO/NGRPO's
      sequence-mean of token-means (Eq. 1 / Eq. 7), or Dr. GRPO's token-sum over a constant length.
    kl_coef: weight beta of KL(pi_theta || pi_ref) (0 disables the reference model).
    kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman's low-variance estimator).
    entropy_coef: weight of the entropy bonus (loss -= entropy_coef * H).
    learning_rate: peak AdamW learning rate tuned for this algorithm (the trainer may override it).
    correct_threshold: a reward >= this counts as "correct" (homogeneous-group bookkeeping, PSR/NSR).
    use_critic: train a value head with GAE and a clipped value loss (PPO).
    gae_gamma, gae_lambda: GAE discount and trace parameters (PPO).
    value_coef: weight of the value loss.  value_clip: clip range of the value loss (PPO's eps_v).
    advantage_fn: optional user callable replacing the named estimator (see module docstring).
    loss_fn: optional user callable replacing ``losses.policy_loss`` (see module docstring).
  """
  name: str
  advantage: str = "grpo"
  advantage_kwargs: tuple = ()
  group_filter: str = "none"
  dynamic_sampling: bool = False
  eps_pos: float = 0.2
  eps_neg: float = 0.2
  dual_clip: Optional[float] = None
  aggregation: str = "seq_mean_token_mean"
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  learning_rate: float = 1e-6
  correct_threshold: float = 0.5
  use_critic: bool = False
  gae_gamma: float = 1.0
  gae_lambda: float = 0.95
  value_coef: float = 0.5
  value_clip: float = 0.2
  advantage_fn: Optional[Callable[..., Any]] = None
  loss_fn: Optional[Callable[..., Any]] = None

  def __post_init__(self):
    if self.advantage not in ADVANTAGE_ESTIMATORS:
      raise ValueError(f"advantage={self.advantage!r} is not one of {ADVANTAGE_ESTIMATORS}")
    if self.group_filter not in GROUP_FILTERS:
      raise ValueError(f"group_filter={self.group_filter!r} is not one of {GROUP_FILTERS}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation={self.aggregation!r} is not one of {AGGREGATIONS}")
    if self.kl_estimator not in KL_ESTIMATORS:
      raise ValueError(f"kl_estimator={self.kl_estimator!r} is not one of {KL_ESTIMATORS}")
    for field in ("eps_pos", "eps_neg", "kl_coef", "entropy_coef", "value_coef", "value_clip"):
      if getattr(self, field) < 0:
        raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
    if self.eps_neg >= 1:
      raise ValueError(f"eps_neg must be < 1 (the lower clip bound 1 - eps_neg must stay positive), "
                       f"got {self.eps_neg}")
    if self.dual_clip is not None and self.dual_clip <= 1:
      raise ValueError(f"dual_clip must be > 1 or None, got {self.dual_clip}")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.advantage == "gae" and not self.use_critic:
      raise ValueError("advantage='gae' needs use_critic=True (GAE bootstraps from the value head)")
    if self.use_critic and self.advantage != "gae" and self.advantage_fn is None:
      raise ValueError(f"use_critic=True needs advantage='gae', got {self.advantage!r}")
    if not isinstance(self.advantage_kwargs, tuple):
      raise TypeError("advantage_kwargs must be a tuple of (key, value) pairs "
                      f"(hashable), got {type(self.advantage_kwargs).__name__}")
    if self.advantage_fn is not None and not callable(self.advantage_fn):
      raise TypeError("advantage_fn must be callable")
    if self.loss_fn is not None and not callable(self.loss_fn):
      raise TypeError("loss_fn must be callable")

  @property
  def advantage_options(self) -> dict:
    """The estimator keyword arguments as a dict."""
    return dict(self.advantage_kwargs)

  def describe(self) -> dict:
    """A JSON-serialisable summary (logged at the start of every run; callables by name)."""
    out = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if callable(v):
        v = getattr(v, "__qualname__", repr(v))
      elif f.name == "advantage_kwargs":
        v = dict(v)
      out[f.name] = v
    return out


def _kw(**kwargs) -> tuple:
  return tuple(sorted(kwargs.items()))


# Paper presets (NGRPO.md, "Paper's training setup").  Learning rates are the paper's 7B values; CPU
# configs override them per algorithm.
PRESETS: Mapping[str, Algorithm] = {
    # NGRPO: virtual max reward 1.0, count 1, ddof=1; clip [1-0.16, 1+0.24]; no KL; drops all-correct
    # groups and keeps all-wrong ones; Eq. 7 sequence-mean of token-means.
    "ngrpo": Algorithm(
        name="ngrpo", advantage="ngrpo", advantage_kwargs=_kw(r_virtual=1.0, num_virtual=1, ddof=1),
        group_filter="ngrpo", dynamic_sampling=True, eps_pos=0.24, eps_neg=0.16,
        aggregation="seq_mean_token_mean", entropy_coef=0.001),
    # GRPO: symmetric clip 0.2, KL 0.001 (k3), no filter (homogeneous groups have zero advantage).
    "grpo": Algorithm(
        name="grpo", advantage="grpo", advantage_kwargs=_kw(ddof=1), group_filter="none",
        eps_pos=0.2, eps_neg=0.2, aggregation="seq_mean_token_mean", kl_coef=0.001, kl_estimator="k3",
        entropy_coef=0.001),
    # DAPO: clip-higher 0.2 / 0.28, dynamic sampling drops every homogeneous group, token-level loss.
    "dapo": Algorithm(
        name="dapo", advantage="grpo", advantage_kwargs=_kw(ddof=1), group_filter="dapo",
        dynamic_sampling=True, eps_pos=0.28, eps_neg=0.2, aggregation="token_mean"),
    # W-REINFORCE (the NGRPO paper's "PSR-NSR"): A = +lambda if correct, -1 if wrong; lambda = 0.1 EXPLICIT.
    "psr_nsr": Algorithm(
        name="psr_nsr", advantage="w_reinforce", advantage_kwargs=_kw(lam=0.1), eps_pos=0.2, eps_neg=0.2,
        aggregation="seq_mean_token_mean"),
    "psr_only": Algorithm(
        name="psr_only", advantage="psr_only", eps_pos=0.2, eps_neg=0.2, aggregation="seq_mean_token_mean"),
    "nsr_only": Algorithm(
        name="nsr_only", advantage="nsr_only", eps_pos=0.2, eps_neg=0.2, aggregation="seq_mean_token_mean"),
    # PPO: token-level value head, GAE(gamma=1, lambda=0.95), clipped value loss, symmetric clip 0.2.
    "ppo": Algorithm(
        name="ppo", advantage="gae", group_filter="none", eps_pos=0.2, eps_neg=0.2,
        aggregation="token_mean", kl_coef=0.001, use_critic=True, gae_gamma=1.0, gae_lambda=0.95,
        value_coef=0.5, value_clip=0.2),
}


def ngrpo_ablation(*, calibration: bool = True, keep_all_wrong: bool = True, asymmetric_clip: bool = True,
                   virtual_reward: str = "max", virtual_count: int = 1, base: Optional[Algorithm] = None
                   ) -> Algorithm:
  """The NGRPO ablation grid (paper Tables 2 and 3) as one function of its switches.

  All switches on (the defaults) give the ``ngrpo`` preset.  ``calibration=False`` uses GRPO's estimator;
  ``keep_all_wrong=False`` filters like DAPO (drops every homogeneous group); ``asymmetric_clip=False``
  uses the symmetric clip 0.2; ``virtual_reward`` in ``{"max", "medium", "min"}`` sets r_virtual to 1.0 /
  0.5 / 0.0 (rewards in {0, 1}); ``virtual_count`` in ``{1, 2, 4}`` (any int >= 1) sets the number of
  virtual samples.
  """
  if virtual_reward not in VIRTUAL_REWARD_LEVELS:
    raise ValueError(f"virtual_reward must be one of {tuple(VIRTUAL_REWARD_LEVELS)}, got {virtual_reward!r}")
  if not isinstance(virtual_count, int) or virtual_count < 1:
    raise ValueError(f"virtual_count must be an int >= 1, got {virtual_count!r}")
  if not calibration and (virtual_reward != "max" or virtual_count != 1):
    raise ValueError("virtual_reward / virtual_count only apply with calibration=True")
  base = base or PRESETS["ngrpo"]
  parts = []
  if calibration:
    adv, kw = "ngrpo", _kw(r_virtual=VIRTUAL_REWARD_LEVELS[virtual_reward], num_virtual=virtual_count, ddof=1)
    if virtual_reward != "max":
      parts.append(f"vr_{virtual_reward}")
    if virtual_count != 1:
      parts.append(f"vc{virtual_count}")
  else:
    adv, kw = "grpo", _kw(ddof=1)
    parts.append("no_calib")
  if not keep_all_wrong:
    parts.append("drop_all_wrong")
  eps_pos, eps_neg = (0.24, 0.16) if asymmetric_clip else (0.2, 0.2)
  if not asymmetric_clip:
    parts.append("sym_clip")
  name = "ngrpo" + ("" if not parts else "-" + "-".join(parts))
  return dataclasses.replace(base, name=name, advantage=adv, advantage_kwargs=kw,
                             group_filter="ngrpo" if keep_all_wrong else "dapo",
                             eps_pos=eps_pos, eps_neg=eps_neg)


def get_algorithm(name: str, **overrides) -> Algorithm:
  """A preset by name with optional field overrides (``get_algorithm("grpo", learning_rate=1e-5)``)."""
  if name not in PRESETS:
    raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(PRESETS)}")
  unknown = set(overrides) - {f.name for f in dataclasses.fields(Algorithm)}
  if unknown:
    raise ValueError(f"unknown Algorithm fields {sorted(unknown)}")
  if "advantage_kwargs" in overrides and isinstance(overrides["advantage_kwargs"], dict):
    overrides["advantage_kwargs"] = _kw(**overrides["advantage_kwargs"])
  return dataclasses.replace(PRESETS[name], **overrides)
