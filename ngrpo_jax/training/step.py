"""One RL step, top to bottom: draw and grade groups → filter → pack → score → advantages → train step.

    state, metrics = rl_step(state, parts)

``parts`` (:class:`StepParts`) holds the functions built once per run (``training.loop`` builds them from an
``ExperimentConfig``; a researcher can build them by hand): the sampler, the grader, the algorithm's group
filter, scorer and advantage estimator, the jitted train step.
"""
import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import controllers as controllers_lib
from ngrpo_jax import grading
from ngrpo_jax import sampling
from ngrpo_jax import sharding
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import rollout as rollout_lib
from ngrpo_jax.training import state as state_lib


@dataclasses.dataclass
class StepParts:
  """The functions and settings of an RL step (built once per run).

  Attributes:
    sample: ``sampling.make_sampler`` (G responses per prompt) or any ``(params, prompt_tokens, prompt_mask,
      key) -> sampling.GenerateOutput``.
    grade: ``(golds, responses) -> results`` (``grading.Grader``).  decode: token ids → text.
    stream: the prompt stream.  rollout: its options.  reward: the reward (r_max / r_min for estimators).
    keep: the group filter ``rewards f32[n, G] -> bool[n]``.  max_draws: 1 + refills (dynamic sampling).
    score: ``batch.make_scorer``.  advantages: ``batch.make_advantages``.
    train_step: ``update.make_train_step``.  place: puts the train inputs on the devices.
    diagnose: optional ``(state, inputs, step) -> metrics`` run before the update (gradient norms by kind).
    pad_id, eos_ids, format_token_ids: token ids (padding; end-token and answer-scaffold probabilities).
    update_epochs: passes of the train step over the batch (``tokens_per_sec/update`` counts every pass).
    record: optional ``(problem_indices int[M], correct_counts int[M]) -> None`` called with every group the
      step drew and graded (kept or filtered; pool indices of ``stream``) — per-problem learning curves.
    algorithm: the algorithm (its controllers' settings; needed when ``TrainState.controllers`` is set).
    check_direction: optional ``(policy_params, tokens, attention_mask) -> {"logp": ...}`` (the scorer's
      forward pass); when set, the step re-scores the batch after the update and logs whether log-probs moved
      with the advantages (:func:`direction_metrics`).
  """
  sample: Callable
  grade: Callable
  decode: Callable
  stream: rollout_lib.PromptStream
  rollout: rollout_lib.RolloutConfig
  reward: grading.RewardConfig
  keep: Callable
  max_draws: int
  score: Callable
  advantages: Callable
  train_step: Callable
  place: Callable = lambda batch: {k: jnp.asarray(v) for k, v in batch.items()}
  diagnose: Optional[Callable] = None
  pad_id: int = 0
  eos_ids: Sequence[int] = ()
  format_token_ids: Sequence[int] = ()
  update_epochs: int = 1
  record: Optional[Callable] = None
  algorithm: Optional[object] = None
  check_direction: Optional[Callable] = None


def rl_step(state: state_lib.TrainState, parts: StepParts, lookahead: int = 1):
  """One RL step → (new state, metrics). ``lookahead``: draws to sample before grades are in (speed only)."""
  key, next_rng = jax.random.split(jnp.asarray(state.rng, jnp.uint32))
  stats, n = rollout_lib.DrawStats(), parts.rollout.groups_per_batch
  # Draw and grade: G responses per prompt (the policy in the sampler's decode layout, made once per step),
  # graded on a background thread; dynamic sampling refills until `keep` accepts n groups.
  # The policy's full weights, once per policy update (with LoRA: base + adapters merged).
  policy = state_lib.policy_params(state)
  draws = rollout_lib.draw_groups(
      parts.sample, parts.grade, parts.decode, sampling.prepare_params(policy), parts.stream,
      int(state.data_position), key, cfg=parts.rollout, reward=parts.reward, pad_id=parts.pad_id, stats=stats,
      max_draws=parts.max_draws, lookahead=min(lookahead, parts.max_draws))
  groups = rollout_lib.fill(draws, parts.keep, n, stats)                  # [n, G], padding groups invalid
  if parts.record is not None:
    seen = rollout_lib.concat(stats.seen)
    first = int(state.data_position)
    parts.record(np.array([parts.stream.index(first + i) for i in range(seen.num_groups)]),
                 seen.correct.sum(-1))
  # Pack → score (old / reference log-probs, values) → advantages, all fixed-shape.
  batch = batch_lib.pack(groups, parts.rollout, parts.pad_id)
  batch = parts.score({**state.params, "policy": policy}, state.ref_params, batch)
  del policy
  controllers = jax.device_get(state.controllers) if state.controllers is not None else None
  batch = parts.advantages(batch, controllers)
  metrics = {**rollout_lib.draw_metrics(stats, groups),
             **batch_lib.diagnostics(batch, parts.eos_ids, parts.format_token_ids)}
  # Adaptive coefficients (KL in the reward, entropy bonus): updated from this batch, used by this update.
  if controllers:
    controllers = update_controllers(parts.algorithm, controllers, batch, metrics)
    metrics.update({f"controllers/{k}": float(v) for k, v in controllers.items()})
    state = state.replace(controllers=jax.tree_util.tree_map(_like, {k: jnp.asarray(v, jnp.float32)
                                                                      for k, v in controllers.items()},
                                                             state.controllers))
  # Update.
  inputs = parts.place(batch_lib.train_inputs(batch))
  if parts.diagnose is not None:
    metrics.update(parts.diagnose(state, inputs))
  position = int(state.data_position) + stats.used * n
  state = state.replace(rng=_like(next_rng, state.rng),
                        data_position=_like(jnp.asarray(position, jnp.int32), state.data_position))
  t0 = time.perf_counter()
  state, update_metrics = parts.train_step(state, inputs)
  metrics.update(jax.device_get(update_metrics))
  seconds = time.perf_counter() - t0
  metrics.update({"time/update": seconds, "data_position": position, "tokens_per_sec/update":
                  float(batch["attention_mask"].sum()) * parts.update_epochs / max(seconds, 1e-9)})
  if parts.check_direction is not None:
    new = parts.check_direction(state_lib.policy_params(state), jnp.asarray(batch["tokens"]),
                                jnp.asarray(batch["attention_mask"]))
    metrics.update(direction_metrics(batch, np.asarray(jax.device_get(new["logp"]), np.float32)))
  return state, metrics


def direction_metrics(batch: dict, new_logp: np.ndarray) -> dict:
  """Did the update move log-probs the way the advantages point? Over trained tokens with A_t ≠ 0, with
  Δ_t = log π_new(y_t) − log π_old(y_t):

  ``update/adv_logp_change`` = Σ A_t Δ_t / Σ |A_t|   (> 0: the advantage-weighted log-prob went up)
  ``update/sign_agreement``  = share of tokens with sign(Δ_t) = sign(A_t)
  """
  m = (batch["loss_mask"] > 0) & (batch["advantages"] != 0)
  if not m.any():
    return {"update/adv_logp_change": 0.0, "update/sign_agreement": 0.0}
  a, d = batch["advantages"][m].astype(np.float64), (new_logp - batch["old_logp"])[m].astype(np.float64)
  return {"update/adv_logp_change": float(np.sum(a * d) / np.sum(np.abs(a))),
          "update/sign_agreement": float(np.mean(np.sign(d) == np.sign(a)))}


def update_controllers(algo, controllers: dict, batch: dict, metrics: dict) -> dict:
  """The controllers after this rollout batch (``TrainState.controllers``; pure, host-side):

  * ``kl_coef`` (KL in the reward): ``controllers.adaptive_kl_coef`` with the batch's mean sequence KL
    (``kl_in_reward/kl``) and its number of sequences, when ``algo.reward_kl_target`` is set (fixed otherwise);
  * ``entropy_coef`` / ``entropy_coef_applied`` (``adaptive_entropy_bonus``): ``controllers.adaptive_entropy_coef``
    with the rollout policy's mean token entropy (``policy_entropy``).
  """
  out = dict(controllers)
  if "kl_coef" in out and algo.reward_kl_target is not None:
    out["kl_coef"] = float(controllers_lib.adaptive_kl_coef(
        out["kl_coef"], metrics.get("kl_in_reward/kl", 0.0), int(np.sum(batch["valid"])),
        target=algo.reward_kl_target, horizon=algo.reward_kl_horizon))
  term = algo.adaptive_entropy_term()
  if term is not None and "policy_entropy" in metrics:
    kw = dict(term.kwargs)
    coef, applied = controllers_lib.adaptive_entropy_coef(
        out["entropy_coef"], metrics["policy_entropy"], target=kw.get("target", 0.2), delta=kw.get("delta", 0.005),
        coef_max=kw.get("coef_max", 1.0))
    out.update(entropy_coef=float(coef), entropy_coef_applied=float(applied))
  return out


def _like(value, like):
  """``value`` with the sharding of ``like`` (a replicated scalar of a sharded state stays replicated)."""
  sh = getattr(like, "sharding", None)
  if sh is None or jax.process_count() == 1 and len(sh.device_set) == 1:
    return value
  return sharding.device_put_global(np.asarray(jax.device_get(value)), sh)
