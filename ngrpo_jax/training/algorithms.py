"""RL algorithms as compositions of named functions: an advantage estimator, a group filter and an objective.

    Algorithm(name="ngrpo", advantage="ngrpo", group_filter="ngrpo", dynamic_sampling=True,
              objective=(policy_gradient_term(eps_pos=0.24, eps_neg=0.16), entropy_term(0.001)))

Everything is a name (``registry``) or a number, so an algorithm is data: it round-trips through JSON
(``to_dict`` / ``from_dict``, checkpoint metadata, ``config.json``) and every field can be overridden from
the command line. A researcher's own estimator, filter or loss term is registered under a name, or given as
an import path ``"my_pkg.my_module:my_function"``.

What the trainer builds follows from what the pieces declare (``needs``): a frozen reference policy iff a term
reads ``ref_logp``, a value head iff the estimator or a term reads ``values``. An entry a term needs that
no stage provides (e.g. ``returns`` for the value loss without GAE) is refused when the algorithm is built.

Paper references: NGRPO (Nan et al. 2025, arXiv 2509.18851) §4, Eq. 5–8; GRPO (Shao et al. 2024); DAPO
(Yu et al. 2025); W-REINFORCE / PSR / NSR (Zhu et al. 2025, arXiv 2506.01347); PPO (Schulman et al. 2017).
"""
import dataclasses
import inspect
from typing import Mapping, Optional

from ngrpo_jax import losses
from ngrpo_jax.training import estimators
from ngrpo_jax.training import objective as objective_lib
from ngrpo_jax.training import registry

# Batch entries the rollout always provides before the advantages (``training.batch.pack`` / the scorer).
BASE_ENTRIES = ("logp", "entropy", "old_logp", "loss_mask", "response_mask", "lengths", "values", "old_values",
                "ref_logp", "old_entropy", "rng")
# Estimator inputs beyond (rewards, valid): ``[N, G, ...]`` views of these batch entries. ``sampler_logp``:
# log π_sampler of each response token (0 elsewhere; Σ over T is the sequence log-prob); ``entropy``: the
# rollout policy's token entropies; ``reward_components``: ``[N, G, C]`` (correctness, format).
ESTIMATOR_INPUTS = ("values", "response_mask", "lengths", "sampler_logp", "entropy", "reward_components")


def _kw(kwargs) -> tuple:
  return tuple(sorted(dict(kwargs).items()))


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One RL algorithm as data.

  Attributes:
    name: label used in logs.
    advantage: an advantage estimator's name (``registry.ADVANTAGE_ESTIMATORS``; built-ins in
      ``training.estimators``) or an import path. Called as
      ``fn(rewards f32[N, G], valid bool[N, G], *, r_max, r_min, **advantage_kwargs)``.
    advantage_kwargs: the estimator's keyword arguments as ``(key, value)`` pairs (a dict is accepted).
    group_filter: a group filter's name (``"none"``, ``"dapo"``: drop groups with equal rewards, ``"ngrpo"``:
      drop all-correct groups) or an import path; ``fn(rewards f32[n, G], *, r_max, r_min) -> bool[n]``.
    dynamic_sampling: draw further prompt batches until enough groups survive the filter (bounded by the
      rollout's ``max_refills``).
    objective: the loss as a tuple of :class:`~ngrpo_jax.training.objective.Term`, summed with their coefs
      (kept in name order, so the float sum does not depend on how a config lists them).
    aggregation: how every term reduces tokens to a scalar (one of ``losses.AGGREGATIONS``): DAPO's token
      mean, GRPO / NGRPO's sequence mean of token means (Eq. 1 / Eq. 7), Dr. GRPO's token sum / constant.
    learning_rate: the peak learning rate tuned for this algorithm (``OptimConfig.learning_rate`` overrides).
    reward_kl_coef: β of a KL penalty folded into the reward before the advantages (0 = off):
      R' = R − β Σ_t (log π_old − log π_ref) (``controllers.kl_in_reward``; verl ``use_kl_in_reward``).
    reward_kl_target: None (a fixed β) or the target KL per sequence of the adaptive controller
      (``controllers.adaptive_kl_coef``, Ziegler et al. 2019) which then updates β every step.
    reward_kl_horizon: the adaptive controller's horizon (in sequences).
  """
  name: str
  advantage: str = "grpo"
  advantage_kwargs: tuple = ()
  group_filter: str = "none"
  dynamic_sampling: bool = False
  objective: tuple = (objective_lib.policy_gradient_term(),)
  aggregation: str = "seq_mean_token_mean"
  learning_rate: float = 1e-6
  reward_kl_coef: float = 0.0
  reward_kl_target: Optional[float] = None
  reward_kl_horizon: float = 10000.0

  def __post_init__(self):
    if isinstance(self.advantage_kwargs, Mapping):
      object.__setattr__(self, "advantage_kwargs", _kw(self.advantage_kwargs))
    if not isinstance(self.advantage_kwargs, tuple):
      raise TypeError(f"advantage_kwargs must be a dict or (key, value) pairs, got {self.advantage_kwargs!r}")
    if not self.objective or not all(isinstance(t, objective_lib.Term) for t in self.objective):
      raise TypeError("objective must be a non-empty tuple of objective.Term")
    # Terms in name order: the float sum is the same however a config lists them (ConfigDict sorts keys).
    object.__setattr__(self, "objective", tuple(sorted(self.objective, key=lambda t: t.name)))
    names = [t.name for t in self.objective]
    if len(set(names)) != len(names):
      raise ValueError(f"objective term names must be unique, got {names}")
    if self.aggregation not in losses.AGGREGATIONS:
      raise ValueError(f"aggregation={self.aggregation!r} is not one of {losses.AGGREGATIONS}")
    if not isinstance(self.learning_rate, (int, float)) or self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
    if not isinstance(self.reward_kl_coef, (int, float)) or self.reward_kl_coef < 0:
      raise ValueError(f"reward_kl_coef must be a number >= 0, got {self.reward_kl_coef!r}")
    if self.reward_kl_target is not None and not (isinstance(self.reward_kl_target, (int, float))
                                                  and self.reward_kl_target > 0 and self.reward_kl_coef > 0):
      raise ValueError(f"reward_kl_target must be None or a number > 0 with reward_kl_coef > 0, got "
                       f"{self.reward_kl_target!r} (reward_kl_coef={self.reward_kl_coef!r})")
    if not isinstance(self.reward_kl_horizon, (int, float)) or self.reward_kl_horizon <= 0:
      raise ValueError(f"reward_kl_horizon must be > 0, got {self.reward_kl_horizon!r}")
    self.estimator()
    registry.GROUP_FILTERS.get(self.group_filter)
    self._check_needs()

  def estimator(self) -> registry.Entry:
    return registry.ADVANTAGE_ESTIMATORS.get(self.advantage)

  def _check_needs(self):
    est = self.estimator()
    _check_signature(f"advantage estimator {self.advantage!r}", est.fn, (None, None),
                     {"r_max": 1.0, "r_min": 0.0, **dict(self.advantage_kwargs), **{n: None for n in est.needs}})
    for term in self.objective:
      _check_signature(f"objective term {term.name!r}", term.entry().fn, (None, None, None), dict(term.kwargs))
    unknown = set(est.needs) - set(ESTIMATOR_INPUTS)
    if unknown:
      raise ValueError(f"advantage estimator {self.advantage!r} needs {sorted(unknown)}, which the trainer does "
                       f"not provide to estimators (available: {list(ESTIMATOR_INPUTS)})")
    available = set(BASE_ENTRIES) | set(est.provides) | set(self.initial_controllers())
    for term in self.objective:
      missing = set(term.needs) - available
      if missing:
        raise ValueError(f"objective term {term.name!r} needs batch entries {sorted(missing)} that nothing "
                         f"provides: the estimator {self.advantage!r} provides {list(est.provides)}"
                         + (" (a value loss needs an estimator that provides 'returns', e.g. 'gae')"
                            if "returns" in missing else ""))

  @property
  def needs(self) -> frozenset:
    """Every model output / batch entry the estimator and the objective read."""
    return frozenset(self.estimator().needs) | frozenset(objective_lib.needs(self.objective))

  @property
  def uses_reference(self) -> bool:
    """A term reads the frozen reference policy's log-probs (KL), or the reward carries a KL penalty."""
    return "ref_logp" in self.needs or self.reward_kl_coef > 0

  def adaptive_entropy_term(self) -> Optional[objective_lib.Term]:
    """The objective's ``adaptive_entropy_bonus`` term (by function), or None."""
    return next((t for t in self.objective if (t.fn or t.name) == "adaptive_entropy_bonus"), None)

  def initial_controllers(self) -> dict:
    """The coefficients this algorithm adapts across steps, at their initial values (``TrainState.controllers``):
    ``kl_coef`` with KL in the reward, ``entropy_coef`` / ``entropy_coef_applied`` with the adaptive entropy
    bonus. Empty when there are none."""
    out = {}
    if self.reward_kl_coef > 0:
      out["kl_coef"] = float(self.reward_kl_coef)
    ent = self.adaptive_entropy_term()
    if ent is not None:
      init = float(dict(ent.kwargs).get("init", 0.0))
      out.update(entropy_coef=init, entropy_coef_applied=init)
    return out

  @property
  def uses_critic(self) -> bool:
    """The estimator or a term reads a value head's outputs."""
    return bool({"values", "old_values"} & self.needs)

  def term(self, name: str) -> Optional[objective_lib.Term]:
    return next((t for t in self.objective if t.name == name), None)

  def to_dict(self) -> dict:
    """A JSON-serialisable dict (the inverse of :func:`from_dict`); the objective as ``{name: {...}}``."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "objective"}
    out["advantage_kwargs"] = dict(self.advantage_kwargs)
    out["objective"] = {t.name: {"coef": t.coef, **dict(t.kwargs), **({"fn": t.fn} if t.fn else {})}
                        for t in self.objective}
    return out


def _check_signature(what: str, fn, args: tuple, kwargs: dict) -> None:
  """Raises a ValueError when ``fn`` cannot be called with these arguments (e.g. a misspelt keyword)."""
  try:
    inspect.signature(fn).bind(*args, **kwargs)
  except TypeError as e:
    raise ValueError(f"{what} cannot take the arguments {sorted(kwargs)}: {e}") from None
  except ValueError:           # no signature to inspect (a builtin): checked when it is called
    pass


def from_dict(d: Mapping) -> Algorithm:
  """An :class:`Algorithm` from :meth:`Algorithm.to_dict`'s format (unknown keys raise, naming them)."""
  d = dict(d)
  fields = {f.name for f in dataclasses.fields(Algorithm)}
  unknown = set(d) - fields
  if unknown:
    raise ValueError(f"unknown algorithm fields {sorted(unknown)}; known: {sorted(fields)}")
  terms = []
  for name, spec in dict(d.pop("objective", {}) or {}).items():
    spec = dict(spec)
    coef = spec.pop("coef", 1.0)
    fn = spec.pop("fn", None)
    terms.append(objective_lib.Term(name, coef, _kw({k: v for k, v in spec.items()}), fn=fn))
  if terms:
    d["objective"] = tuple(terms)
  d["advantage_kwargs"] = _kw(d.get("advantage_kwargs") or {})
  return Algorithm(**d)


_pg = objective_lib.policy_gradient_term

# Paper presets. Learning rates are the paper's 7B values; CPU configs override them per algorithm.
PRESETS: Mapping[str, Algorithm] = {
    # NGRPO: virtual sample at the task's max reward (count 1, ddof 1); clip [1 − 0.16, 1 + 0.24]; no KL;
    # drops all-correct groups, keeps all-wrong ones; Eq. 7's sequence mean of token means.
    "ngrpo": Algorithm(
        name="ngrpo", advantage="ngrpo", advantage_kwargs={"virtual_reward_level": "max", "num_virtual": 1, "ddof": 1},
        group_filter="ngrpo", dynamic_sampling=True,
        objective=(_pg(0.24, 0.16), objective_lib.entropy_term(0.001))),
    # GRPO: symmetric clip 0.2, KL 0.001 (k3), no filter (homogeneous groups have zero advantage).
    "grpo": Algorithm(
        name="grpo", advantage="grpo", advantage_kwargs={"ddof": 1},
        objective=(_pg(0.2, 0.2), objective_lib.entropy_term(0.001), objective_lib.kl_term(0.001, "k3"))),
    # DAPO: clip-higher 0.2 / 0.28, dynamic sampling drops every homogeneous group, token-level loss.
    "dapo": Algorithm(
        name="dapo", advantage="grpo", advantage_kwargs={"ddof": 1}, group_filter="dapo", dynamic_sampling=True,
        objective=(_pg(0.28, 0.2),), aggregation="token_mean"),
    # W-REINFORCE (the NGRPO paper's "PSR-NSR"): A = +λ if correct, −1 if wrong; λ = 0.1 explicit.
    "psr_nsr": Algorithm(name="psr_nsr", advantage="w_reinforce", advantage_kwargs={"lam": 0.1}),
    "psr_only": Algorithm(name="psr_only", advantage="psr_only"),
    "nsr_only": Algorithm(name="nsr_only", advantage="nsr_only"),
    # PPO: token-level value head, GAE(γ = 1, λ = 0.95), clipped value loss, symmetric clip 0.2, KL 0.001.
    "ppo": Algorithm(
        name="ppo", advantage="gae", advantage_kwargs={"gamma": 1.0, "lam": 0.95}, aggregation="token_mean",
        objective=(_pg(0.2, 0.2), objective_lib.kl_term(0.001, "k3"), objective_lib.value_term(0.5, 0.2))),
}

# The methods of the last year as presets (docs/algorithms.md has the equations, papers and peers' option
# names). Each is GRPO's recipe with the method's one change unless the paper changes more.
_pg_only = (_pg(0.2, 0.2),)
_term = lambda name, **kw: objective_lib.Term(name, 1.0, kw)
PRESETS = {
    **PRESETS,
    # Advantage estimators / reward transforms.
    "reinforce_pp": Algorithm(name="reinforce_pp", advantage="reinforce_pp", objective=_pg_only,
                              aggregation="token_mean"),
    "reinforce_pp_baseline": Algorithm(name="reinforce_pp_baseline", advantage="reinforce_pp_baseline",
                                       objective=_pg_only, aggregation="token_mean"),
    "lite_ppo": Algorithm(name="lite_ppo", advantage="grpo_batch_std", objective=_pg_only, aggregation="token_mean"),
    "gdpo": Algorithm(name="gdpo", advantage="gdpo", objective=_pg_only),
    "grpo_passk": Algorithm(name="grpo_passk", advantage="grpo_passk", objective=_pg_only),
    "passk_training": Algorithm(name="passk_training", advantage="passk_training", advantage_kwargs={"k": 4},
                                objective=_pg_only),
    "pkpo": Algorithm(name="pkpo", advantage="pkpo", advantage_kwargs={"k": 4}, objective=_pg_only),
    "unlikeliness": Algorithm(name="unlikeliness", advantage="unlikeliness", advantage_kwargs={"beta": 0.25},
                              objective=_pg_only),
    "lens": Algorithm(name="lens", advantage="lens", objective=_pg_only),
    "rl_zvp": Algorithm(name="rl_zvp", advantage="rl_zvp", advantage_kwargs={"alpha": 0.1}, objective=_pg_only),
    "gpg": Algorithm(name="gpg", advantage="gpg", objective=(_term("gpg"),), aggregation="token_mean"),
    # Policy objectives (GRPO's advantage).
    "gspo": Algorithm(name="gspo", objective=(_term("gspo", eps_low=3e-4, eps_high=4e-4),)),
    "gspo_token": Algorithm(name="gspo_token", objective=(_term("gspo_token", eps_low=3e-4, eps_high=4e-4),)),
    "gmpo": Algorithm(name="gmpo", objective=(_term("gmpo", eps_low=0.4, eps_high=0.4),)),
    "cispo": Algorithm(name="cispo", objective=(_term("cispo", eps_high=0.28),), aggregation="token_mean"),
    "sapo": Algorithm(name="sapo", objective=(_term("sapo", tau_pos=1.0, tau_neg=1.05),), aggregation="token_mean"),
    "dppo": Algorithm(name="dppo", objective=(_term("dppo", divergence="tv", delta=0.15),), aggregation="token_mean"),
    "clip_cov": Algorithm(name="clip_cov", objective=(_term("clip_cov", clip_ratio=2e-4, cov_low=1.0, cov_high=5.0),),
                          aggregation="token_mean"),
    "kl_cov": Algorithm(name="kl_cov", objective=(_term("kl_cov", top_frac=2e-3, kl_coef=1.0),), aggregation="token_mean"),
    "two_sided_clip": Algorithm(name="two_sided_clip", objective=(_term("two_sided_clip", delta=4.0),)),
    "high_entropy": Algorithm(name="high_entropy", advantage="grpo", group_filter="dapo", dynamic_sampling=True,
                              objective=(_term("high_entropy_policy_gradient", top_frac=0.2, eps_pos=0.28,
                                               eps_neg=0.2),), aggregation="token_mean"),
    # KL and entropy.
    "grpo_kl_in_reward": Algorithm(name="grpo_kl_in_reward", objective=_pg_only, reward_kl_coef=0.001,
                                   reward_kl_target=0.1, reward_kl_horizon=10000.0),
    "grpo_unbiased_kl": Algorithm(name="grpo_unbiased_kl", objective=(
        _pg(0.2, 0.2), objective_lib.kl_term(0.001, "k3", importance_weighted=True))),
    "adaptive_entropy": Algorithm(name="adaptive_entropy", objective=(
        _pg(0.2, 0.2), _term("adaptive_entropy_bonus", target=0.2, delta=0.005, coef_max=0.05, init=0.0))),
}


def ngrpo_ablation(*, calibration: bool = True, keep_all_wrong: bool = True, asymmetric_clip: bool = True,
                   virtual_reward: str = "max", virtual_count: int = 1, base: Optional[Algorithm] = None
                   ) -> Algorithm:
  """The NGRPO ablation grid (paper Tables 2 and 3) as one function of its switches.

  All switches on (the defaults) give the ``ngrpo`` preset. ``calibration=False`` uses GRPO's estimator;
  ``keep_all_wrong=False`` filters like DAPO (drops every homogeneous group); ``asymmetric_clip=False`` uses
  the symmetric clip 0.2; ``virtual_reward`` in ``{"max", "medium", "min"}`` puts the virtual sample at the
  task's maximum reward / the midpoint / the minimum; ``virtual_count`` (Table 3: 1, 2, 4) virtual samples.
  """
  if virtual_reward not in estimators.VIRTUAL_REWARD_LEVELS:
    raise ValueError(f"virtual_reward must be one of {estimators.VIRTUAL_REWARD_LEVELS}, got {virtual_reward!r}")
  if not isinstance(virtual_count, int) or isinstance(virtual_count, bool) or virtual_count < 1:
    raise ValueError(f"virtual_count must be an int >= 1, got {virtual_count!r}")
  if not calibration and (virtual_reward != "max" or virtual_count != 1):
    raise ValueError("virtual_reward / virtual_count only apply with calibration=True")
  base = base or PRESETS["ngrpo"]
  parts = [p for p, on in ((f"vr_{virtual_reward}", virtual_reward != "max"), (f"vc{virtual_count}", virtual_count != 1),
                           ("no_calib", not calibration), ("drop_all_wrong", not keep_all_wrong),
                           ("sym_clip", not asymmetric_clip)) if on]
  if calibration:
    adv, kw = "ngrpo", {"virtual_reward_level": virtual_reward, "num_virtual": virtual_count, "ddof": 1}
  else:
    adv, kw = "grpo", {"ddof": 1}
  pg = _pg(*((0.24, 0.16) if asymmetric_clip else (0.2, 0.2)))
  terms = tuple(pg if t.name == "policy_gradient" else t for t in base.objective)
  return dataclasses.replace(base, name="-".join(["ngrpo"] + parts), advantage=adv, advantage_kwargs=_kw(kw),
                             group_filter="ngrpo" if keep_all_wrong else "dapo", objective=terms)


def get_algorithm(name: str, **overrides) -> Algorithm:
  """A preset by name with optional field overrides (``get_algorithm("grpo", learning_rate=1e-5)``)."""
  if name not in PRESETS:
    raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(PRESETS)}")
  unknown = set(overrides) - {f.name for f in dataclasses.fields(Algorithm)}
  if unknown:
    raise ValueError(f"unknown Algorithm fields {sorted(unknown)}")
  return dataclasses.replace(PRESETS[name], **overrides)


def with_term(algo: Algorithm, term: objective_lib.Term) -> Algorithm:
  """``algo`` with ``term`` added to its objective, or replacing the term of the same name."""
  return dataclasses.replace(algo, objective=tuple(t for t in algo.objective if t.name != term.name) + (term,))


def without_term(algo: Algorithm, name: str) -> Algorithm:
  """``algo`` without the objective term called ``name`` (unchanged when it has none)."""
  return dataclasses.replace(algo, objective=tuple(t for t in algo.objective if t.name != name))
