"""From graded groups to the train step's fixed-shape batch: pack → score → advantages → diagnostics.

Batch layout (a dict of arrays with fixed shapes; B = N·G rows, row = group·G + sample; L = prompt +
response length; per-target arrays have length T = L − 1 and are aligned with ``tokens[:, 1:]``):

  tokens: int32[B, L]            left-padded prompt followed by the right-padded response
  attention_mask: bool[B, L]     real tokens
  response_mask: bool[B, T]      every response target (padding groups: none)
  loss_mask: f32[B, T]           response targets that enter the loss (0: truncated with ``mask_truncated``)
  sampler_logp: f32[B, T]        log π_sampler of each response target (unfiltered, T = 1; 0 elsewhere)
  behaviour_logp: f32[B, T]      log q of the distribution each target was drawn from (0 elsewhere)
  rewards: f32[B]; lengths: int32[B]; valid: bool[B] (row of a real group); group_kind: int32[B]
  reward_components: f32[B, C]   the reward's components (correctness, format)
  old_logp, entropy: f32[B, T]   the scorer's (``score``); ref_logp / old_values: f32[B, T] when needed
  advantages: f32[B, T]          per-token advantages (``advantages``); returns: f32[B, T] (GAE)
"""
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import controllers as controllers_lib
from ngrpo_jax import grading
from ngrpo_jax import mismatch
from ngrpo_jax.training import algorithms as algorithms_lib
from ngrpo_jax.training import rollout as rollout_lib


def pack(groups: rollout_lib.Groups, cfg: rollout_lib.RolloutConfig, pad_id: int) -> dict:
  """The token batch of :class:`~ngrpo_jax.training.rollout.Groups` (numpy; layout in the module docstring)."""
  n, g, r = groups.tokens.shape
  p = groups.prompt_tokens.shape[1]
  if (p, r) != (cfg.max_prompt_len, cfg.max_new_tokens):
    raise ValueError(f"groups have prompt/response lengths {(p, r)}, the rollout config "
                     f"{(cfg.max_prompt_len, cfg.max_new_tokens)}")
  per_row = lambda x: np.repeat(x, g, axis=0)                  # a group's entry on each of its G rows
  prompt_mask = per_row(groups.prompt_mask) & per_row(groups.valid)[:, None]
  resp_mask = groups.mask.reshape(n * g, r)
  tokens = np.concatenate([np.where(prompt_mask, per_row(groups.prompt_tokens), pad_id),
                           np.where(resp_mask, groups.tokens.reshape(n * g, r), pad_id)], axis=1).astype(np.int32)
  response_mask = np.zeros((n * g, p + r - 1), bool)
  response_mask[:, p - 1:] = resp_mask
  trainable = ~(cfg.mask_truncated & groups.truncated.reshape(-1))
  def per_target(x):
    out = np.zeros((n * g, p + r - 1), np.float32)
    out[:, p - 1:] = np.where(resp_mask, x.reshape(n * g, r), 0.0)
    return out

  return {"tokens": tokens, "attention_mask": np.concatenate([prompt_mask, resp_mask], axis=1),
          "response_mask": response_mask, "loss_mask": (response_mask & trainable[:, None]).astype(np.float32),
          "sampler_logp": per_target(groups.sampler_logp), "behaviour_logp": per_target(groups.behaviour_logp),
          "reward_components": groups.reward_components.reshape(n * g, -1).astype(np.float32),
          "rewards": groups.rewards.reshape(-1).astype(np.float32),
          "lengths": groups.lengths.reshape(-1), "valid": per_row(groups.valid),
          "group_kind": per_row(groups.kinds())}


def make_scorer(score_fn, algo: algorithms_lib.Algorithm):
  """``score(params, ref_params, batch) -> batch`` adding ``old_logp`` and ``entropy`` under the policy,
  ``old_values`` when the algorithm uses a critic and ``ref_logp`` when it uses a reference policy.

  ``score_fn(policy_params, tokens, attention_mask, value_params) -> {"logp", "entropy", "values"?}`` is the
  jitted forward pass (``update.make_scorer``); its results are fetched to the host.
  """

  def score(params, ref_params, batch):
    t0 = time.perf_counter()
    tokens, attn = jnp.asarray(batch["tokens"]), jnp.asarray(batch["attention_mask"])
    out = score_fn(params["policy"], tokens, attn, params.get("value") if algo.uses_critic else None)
    ref = score_fn(ref_params, tokens, attn, None) if algo.uses_reference else None
    new = {"old_logp": np.asarray(out["logp"], np.float32), "entropy": np.asarray(out["entropy"], np.float32)}
    if algo.uses_critic:
      new["old_values"] = np.asarray(out["values"], np.float32)
    if algo.uses_reference:
      new["ref_logp"] = np.asarray(ref["logp"], np.float32)
    if "old_entropy" in algo.needs:
      new["old_entropy"] = new["entropy"]
    return {**batch, **new, "time/scoring": time.perf_counter() - t0}

  return score


def make_advantages(algo: algorithms_lib.Algorithm, reward: grading.RewardConfig, group_size: int, *,
                    rollout: rollout_lib.RolloutConfig = None, is_cap=None):
  """``advantages(batch, controllers=None) -> batch`` with per-token ``advantages`` f32[B, T] (0 outside
  response targets) and whatever else the estimator provides (GAE's ``returns``), plus ``seq_advantages``
  f32[B] when the estimator gives one advantage per sequence.

  The estimator is called on the group-major view ``rewards [N, G]``, ``valid [N, G]`` (and the ``[N, G, ...]``
  views of the entries it declares in ``needs``) with the task's ``r_max`` / ``r_min``, jitted once for the
  fixed batch shape. Before it, with ``algo.reward_kl_coef > 0``, the rewards carry the KL penalty
  R − β Σ_t (log π_old − log π_ref) (``controllers.kl_in_reward``; β from ``controllers["kl_coef"]``, the
  observed KL is returned as ``kl_in_reward/kl``). After it, ``rollout``'s mismatch options
  (``RolloutConfig.is_*``, ``reject``) weight the advantages by ``mismatch.importance_weights`` of π_trainer
  (the scorer's old log-probs) against the behaviour distribution, and drop rejected responses from the loss.
  ``is_cap`` (a number) is the older shorthand for ``is_correction=True, is_cap=is_cap``.
  """
  entry = algo.estimator()
  fn = functools.partial(entry.fn, r_max=reward.max_reward, r_min=reward.min_reward, **dict(algo.advantage_kwargs))
  names = {"values": "old_values", "response_mask": "response_mask", "lengths": "lengths",
           "sampler_logp": "sampler_logp", "entropy": "entropy", "reward_components": "reward_components"}
  ro = rollout or rollout_lib.RolloutConfig()
  if is_cap is not None:
    ro = dataclasses.replace(ro, is_correction=True, is_cap=float(is_cap))
  kl_in_reward = algo.reward_kl_coef > 0

  @jax.jit
  def estimate(rewards, valid, extra):
    n = rewards.shape[0] // group_size
    view = lambda x: x.reshape((n, group_size) + x.shape[1:])
    out = fn(view(rewards), view(valid), **{k: view(v) for k, v in extra.items()})
    return out if isinstance(out, dict) else {"advantages": out}

  @jax.jit
  def penalised(rewards, old_logp, ref_logp, mask, beta):
    seq, _ = controllers_lib.kl_in_reward(rewards, old_logp, ref_logp, mask, beta)
    return seq, jnp.sum(jnp.where(mask, old_logp - ref_logp, 0.0), axis=-1)

  @jax.jit
  def correction(old_logp, behaviour_logp, mask):
    w = mismatch.importance_weights(old_logp, behaviour_logp, mask, level=ro.is_level, mode=ro.is_mode,
                                    upper=ro.is_cap, lower=ro.is_lower) if ro.is_correction else None
    keep = mismatch.rejection_mask(old_logp, behaviour_logp, mask, statistic=ro.reject, lower=ro.reject_lower,
                                   upper=ro.reject_upper) if ro.reject != "none" else None
    return w, keep

  def advantages(batch, controllers=None):
    extra = {k: batch[names[k]] for k in entry.needs}
    rewards, new = batch["rewards"], {}
    if kl_in_reward:
      beta = (controllers or {}).get("kl_coef", algo.reward_kl_coef)
      rewards, kl = jax.device_get(penalised(batch["rewards"], batch["old_logp"], batch["ref_logp"],
                                             batch["response_mask"], beta))
      valid = batch["valid"]
      new["kl_in_reward/kl"] = float(np.mean(kl[valid])) if valid.any() else 0.0
      new["kl_in_reward/beta"] = float(beta)
      new["rewards_penalised"] = np.asarray(rewards, np.float32)
    out = jax.device_get(estimate(rewards, batch["valid"], extra))
    rows, t = batch["response_mask"].shape
    adv = np.asarray(out.pop("advantages"), np.float32)
    new.update({k: np.asarray(v, np.float32).reshape(rows, t) for k, v in out.items()})
    if adv.ndim == 2:
      new["seq_advantages"] = np.where(batch["valid"], adv.reshape(rows), 0.0).astype(np.float32)
      adv = np.broadcast_to(new["seq_advantages"][:, None], (rows, t))
    adv = adv.reshape(rows, t)
    if ro.is_correction or ro.reject != "none":
      w, keep = jax.device_get(correction(batch["old_logp"], batch["behaviour_logp"], batch["response_mask"]))
      if w is not None:
        adv = adv * np.where(batch["response_mask"], w, 1.0)
        new["mismatch/is_weight_mean"] = float(w[batch["response_mask"]].mean()) if batch["response_mask"].any() \
            else 1.0
      if keep is not None:
        keep = np.asarray(keep) | ~batch["valid"]
        new["loss_mask"] = (batch["loss_mask"] * keep[:, None]).astype(np.float32)
        new["mismatch/rejected_frac"] = float(1.0 - keep[batch["valid"]].mean()) if batch["valid"].any() else 0.0
    new["advantages"] = (adv * batch["response_mask"]).astype(np.float32)
    return {**batch, **new}

  return advantages


def diagnostics(batch: dict, eos_ids=(), format_token_ids=()) -> dict:
  """Advantage, entropy and format statistics of a scored batch (over response targets)."""
  m = batch["response_mask"]
  out = {"tokens_trained": int(batch["loss_mask"].sum()), "time/scoring": batch["time/scoring"],
         # valid samples with a NaN / inf reward: the estimators treat them as padding (advantages module)
         "rewards/nonfinite": int(np.sum(batch["valid"] & ~np.isfinite(batch["rewards"])))}
  if not m.any():
    return out
  adv = batch["seq_advantages"][batch["valid"]] if "seq_advantages" in batch else batch["advantages"][m]
  old_logp, probs, targets = batch["old_logp"], np.exp(batch["old_logp"]), batch["tokens"][:, 1:]
  out.update({"adv_mean": float(np.mean(adv)), "adv_std": float(np.std(adv)), "adv_min": float(np.min(adv)),
              "adv_max": float(np.max(adv)), "policy_entropy": float(batch["entropy"][m].mean()),
              "old_logp_mean": float(old_logp[m].mean())})
  for name, ids in (("format/end_token_prob", eos_ids), ("format/scaffold_token_prob", format_token_ids)):
    if len(ids):
      sel = m & np.isin(targets, np.asarray(ids))
      out[name] = float(probs[sel].mean()) if sel.any() else 0.0
  gap = np.abs(batch["sampler_logp"][m] - old_logp[m])
  out.update({"logp_gap/mean_abs": float(np.mean(gap)), "logp_gap/max_abs": float(np.max(gap))})
  # The sampler / trainer mismatch against the distribution the tokens were drawn from, every step.
  behaviour = batch.get("behaviour_logp", batch["sampler_logp"])
  mm = jax.device_get(_mismatch_metrics(jnp.asarray(old_logp), jnp.asarray(behaviour), jnp.asarray(m)))
  out.update({f"mismatch/{k}": float(v) for k, v in mm.items()})
  out.update({k: v for k, v in batch.items() if k.startswith(("mismatch/", "kl_in_reward/"))})
  return out


_mismatch_metrics = jax.jit(mismatch.mismatch_metrics)


# Entries the jitted train step reads (the rest is host-side bookkeeping).
TRAIN_KEYS = ("tokens", "attention_mask", "loss_mask", "old_logp", "advantages", "ref_logp", "old_values",
              "returns", "old_entropy", "group_kind")


def train_inputs(batch: dict) -> dict:
  """The entries of ``batch`` the train step reads."""
  return {k: batch[k] for k in TRAIN_KEYS if k in batch}
