"""The built-in advantage estimators and group filters, registered by name for the trainer.

Every estimator is called the same way, on a fixed-shape batch (padding groups have ``valid`` False, so
a jitted estimator compiles once however many groups survive the filter)::

    estimator(rewards f32[N, G], valid bool[N, G], *, r_max, r_min, **kwargs) -> f32[N, G] | f32[N, G, T] | dict

``r_max`` / ``r_min`` are the task's maximum and minimum reward (``grading.RewardConfig``: the correct reward
plus any format bonus, and the wrong reward), so e.g. NGRPO's virtual sample is the real maximum reward.
Each wraps one pure function of ``ngrpo_jax.advantages``; the equations are in their docstrings.
"""
import jax.numpy as jnp

from ngrpo_jax import advantages
from ngrpo_jax import passk_credit
from ngrpo_jax.training import registry

# NGRPO's virtual-reward levels (paper Table 3): the task's maximum reward (the default), the midpoint, the
# minimum reward.
VIRTUAL_REWARD_LEVELS = ("max", "medium", "min")


def virtual_reward(level, r_max: float, r_min: float) -> float:
  """r_virtual of NGRPO: ``"max"`` → r_max, ``"medium"`` → (r_max + r_min) / 2, ``"min"`` → r_min, or a number."""
  if isinstance(level, (int, float)) and not isinstance(level, bool):
    return float(level)
  levels = {"max": r_max, "medium": 0.5 * (r_max + r_min), "min": r_min}
  if level not in levels:
    raise ValueError(f"virtual_reward must be one of {VIRTUAL_REWARD_LEVELS} or a number, got {level!r}")
  return float(levels[level])


def _threshold(threshold, r_max, r_min):
  return 0.5 * (r_max + r_min) if threshold is None else threshold


@registry.advantage_estimator("grpo")
def grpo(rewards, valid, *, r_max, r_min, ddof: int = 1, eps: float = 1e-6):
  """GRPO (Shao et al. 2024, Eq. 3): A_i = (r_i − mean(r)) / (std(r) + eps) per group (``advantages.grpo``)."""
  del r_max, r_min
  return advantages.grpo(rewards, valid, ddof=ddof, eps=eps)


@registry.advantage_estimator("ngrpo")
def ngrpo(rewards, valid, *, r_max, r_min, virtual_reward_level="max", num_virtual: int = 1, ddof: int = 1,
          eps: float = 1e-6):
  """NGRPO advantage calibration (Nan et al. 2025, §4.1, Eq. 5–6; ``advantages.ngrpo``).

  ``virtual_reward_level``: ``"max"`` (the paper; r_virtual = the task's maximum reward), ``"medium"``,
  ``"min"`` (Table 3) or a number; ``num_virtual`` virtual samples (Table 3: 1 / 2 / 4).
  """
  r_virtual = virtual_reward(virtual_reward_level, r_max, r_min)
  return advantages.ngrpo(rewards, valid, r_virtual=r_virtual, num_virtual=num_virtual, ddof=ddof, eps=eps)


@registry.advantage_estimator("dr_grpo")
def dr_grpo(rewards, valid, *, r_max, r_min):
  """Dr. GRPO (Liu et al. 2025): A_i = r_i − mean(r) (``advantages.dr_grpo``)."""
  del r_max, r_min
  return advantages.dr_grpo(rewards, valid)


@registry.advantage_estimator("rloo")
def rloo(rewards, valid, *, r_max, r_min):
  """RLOO (Ahmadian et al. 2024): A_i = r_i − mean_{j≠i} r_j (``advantages.rloo``)."""
  del r_max, r_min
  return advantages.rloo(rewards, valid)


@registry.advantage_estimator("w_reinforce")
def w_reinforce(rewards, valid, *, r_max, r_min, lam: float = 0.1, threshold=None):
  """W-REINFORCE (Zhu et al. 2025, Eq. 6): +λ if correct (r ≥ threshold), −1 otherwise.

  ``threshold`` defaults to the midpoint of [r_min, r_max].
  """
  return advantages.w_reinforce(rewards, valid, lam=lam, threshold=_threshold(threshold, r_max, r_min))


@registry.advantage_estimator("psr_only")
def psr_only(rewards, valid, *, r_max, r_min, threshold=None):
  """PSR (Zhu et al. 2025, Eq. 4): +1 if correct, 0 otherwise."""
  return advantages.psr_only(rewards, valid, threshold=_threshold(threshold, r_max, r_min))


@registry.advantage_estimator("nsr_only")
def nsr_only(rewards, valid, *, r_max, r_min, threshold=None):
  """NSR (Zhu et al. 2025, Eq. 5): −1 if wrong, 0 otherwise."""
  return advantages.nsr_only(rewards, valid, threshold=_threshold(threshold, r_max, r_min))


@registry.advantage_estimator("gae", needs=("values", "response_mask"), provides=("advantages", "returns"))
def gae(rewards, valid, *, r_max, r_min, values, response_mask, gamma: float = 1.0, lam: float = 0.95):
  """PPO's GAE (Schulman et al. 2016) on token rewards: the sequence reward on each response's last token.

  δ_t = r_t + γ V_{t+1} − V_t,  A_t = Σ_l (γλ)^l δ_{t+l},  returns R_t = A_t + V_t
  (``advantages.gae``). values / response_mask: ``[N, G, T]``. Returns ``{"advantages", "returns"}``.
  """
  del r_max, r_min
  n, g, t = values.shape
  mask = response_mask & valid[..., None]
  last = (t - 1 - jnp.argmax(mask[..., ::-1], axis=-1))            # index of the last response token
  token_rewards = jnp.where(jnp.arange(t) == last[..., None], rewards[..., None], 0.0) * mask
  adv, ret = advantages.gae(token_rewards.reshape(n * g, t), values.reshape(n * g, t), mask.reshape(n * g, t),
                            gamma=gamma, lam=lam)
  return {"advantages": adv.reshape(n, g, t), "returns": ret.reshape(n, g, t)}


@registry.group_filter("none")
def keep_all(rewards, *, r_max, r_min):
  """Keeps every group."""
  del r_max, r_min
  return jnp.ones(rewards.shape[:1], bool)


@registry.group_filter("dapo")
def dapo(rewards, *, r_max, r_min):
  """DAPO's dynamic-sampling filter (Yu et al. 2025, Eq. 11): drop groups whose rewards are all equal."""
  del r_max, r_min
  return advantages.dapo_group_filter(rewards)


@registry.group_filter("ngrpo")
def ngrpo_filter(rewards, *, r_max, r_min):
  """NGRPO's filter (Nan et al. 2025, §4.1): drop only all-correct groups (every reward = r_max)."""
  del r_min
  return advantages.ngrpo_group_filter(rewards, r_max=r_max)


# ----------------------------------------------------------------------------------------------------------
# Batch-normalised, multi-component, pass@k-aware and homogeneous-group estimators.


@registry.advantage_estimator("reinforce_pp")
def reinforce_pp(rewards, valid, *, r_max, r_min, ddof: int = 1, eps: float = 1e-6):
  """REINFORCE++ (Hu et al. 2025): the reward whitened over the batch (``advantages.reinforce_pp``)."""
  del r_max, r_min
  return advantages.reinforce_pp(rewards, valid, ddof=ddof, eps=eps)


@registry.advantage_estimator("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards, valid, *, r_max, r_min, ddof: int = 1, eps: float = 1e-6):
  """REINFORCE++-baseline: group-mean baseline, then batch whitening (``advantages.reinforce_pp_baseline``)."""
  del r_max, r_min
  return advantages.reinforce_pp_baseline(rewards, valid, ddof=ddof, eps=eps)


@registry.advantage_estimator("grpo_batch_std")
def grpo_batch_std(rewards, valid, *, r_max, r_min, ddof: int = 1, eps: float = 1e-6):
  """Lite PPO / TRL ``scale_rewards="batch"``: group mean, batch std (``advantages.grpo_batch_std``)."""
  del r_max, r_min
  return advantages.grpo_batch_std(rewards, valid, ddof=ddof, eps=eps)


@registry.advantage_estimator("gdpo", needs=("reward_components",))
def gdpo(rewards, valid, *, r_max, r_min, reward_components, weights=None, batch_normalize: bool = True,
         ddof: int = 1, eps: float = 1e-6):
  """GDPO (Liu et al. 2026): each reward component (correctness, format) GRPO-normalised in its group, summed,
  whitened over the batch (``advantages.gdpo``). ``reward_components``: [N, G, C] from the rollout."""
  del rewards, r_max, r_min
  return advantages.gdpo(reward_components, valid, weights=weights, batch_normalize=batch_normalize, ddof=ddof,
                         eps=eps)


@registry.advantage_estimator("gpg")
def gpg(rewards, valid, *, r_max, r_min, normalize_std: bool = True, ddof: int = 1, eps: float = 1e-6):
  """GPG's estimator (Chu et al. 2025): group-relative advantage × B / (B − M) (``advantages.gpg``)."""
  del r_max, r_min
  return advantages.gpg(rewards, valid, normalize_std=normalize_std, ddof=ddof, eps=eps)


@registry.advantage_estimator("grpo_passk")
def grpo_passk(rewards, valid, *, r_max, r_min, norm_by_std: bool = True, ddof: int = 1, eps: float = 1e-6):
  """verl's ``grpo_passk``: only the group's best sample gets (r_max − r_2nd) / std (``passk_credit``)."""
  del r_max, r_min
  return passk_credit.grpo_passk(rewards, valid, norm_by_std=norm_by_std, ddof=ddof, eps=eps)


@registry.advantage_estimator("passk_training")
def passk_training(rewards, valid, *, r_max, r_min, k: int = 4, threshold=None):
  """Pass@k training's closed-form advantage (Chen et al. 2025; ``passk_credit.passk_advantage``)."""
  return passk_credit.passk_advantage(rewards, valid, k=k, threshold=_threshold(threshold, r_max, r_min))


@registry.advantage_estimator("pkpo")
def pkpo(rewards, valid, *, r_max, r_min, k: int = 4):
  """PKPO (Walder & Karkhanis 2025): unbiased pass@k transform minus a leave-one-out baseline
  (``passk_credit.pkpo``)."""
  del r_max, r_min
  return passk_credit.pkpo(rewards, valid, k=k)


@registry.advantage_estimator("unlikeliness", needs=("sampler_logp",))
def unlikeliness(rewards, valid, *, r_max, r_min, sampler_logp, beta: float = 0.25, ddof: int = 1,
                 eps: float = 1e-6):
  """GRPO on the unlikeliness reward (He et al. 2025; ``passk_credit.unlikeliness_rewards``), ranking each group
  by the sampler's sequence log-probability Σ_t log π_sampler(y_t)."""
  del r_max
  shaped = passk_credit.unlikeliness_rewards(rewards, valid, jnp.sum(sampler_logp, axis=-1), beta=beta,
                                             r_min=r_min)
  return advantages.grpo(shaped, valid, ddof=ddof, eps=eps)


@registry.advantage_estimator("lens", needs=("sampler_logp", "response_mask"))
def lens(rewards, valid, *, r_max, r_min, sampler_logp, response_mask, alpha: float = 1.0, threshold=None,
         ddof: int = 1, eps: float = 1e-6):
  """LENS (Feng et al. 2025): confidence-calibrated rewards for wrong answers, GRPO on mixed groups and α ×
  de-meaned all-wrong groups (``advantages.lens``); π̄ from the sampler's per-token log-probs."""
  seq_logp = jnp.sum(jnp.where(response_mask, sampler_logp, 0.0), axis=-1)
  lengths = jnp.sum(response_mask, axis=-1)
  return advantages.lens(rewards, valid, seq_logp, lengths, alpha=alpha, threshold=_threshold(threshold, r_max, r_min),
                         ddof=ddof, eps=eps)


@registry.advantage_estimator("rl_zvp", needs=("entropy", "response_mask"))
def rl_zvp(rewards, valid, *, r_max, r_min, entropy, response_mask, alpha: float = 0.1, threshold=None,
           ddof: int = 1, eps: float = 1e-6):
  """RL-ZVP (Le et al. 2025): GRPO on mixed groups, ±α·entropy token advantages on zero-variance groups
  (``advantages.rl_zvp``); entropies of the rollout policy. Returns [N, G, T]."""
  return advantages.rl_zvp(rewards, valid, entropy, response_mask, alpha=alpha,
                           threshold=_threshold(threshold, r_max, r_min), ddof=ddof, eps=eps)
