"""Every new registry name in the shipped update: one step on a tiny Qwen2 moves log-probs with the
advantages; KL-in-reward, mismatch IS / rejection and the controllers through the real batch pipeline;
micro-batch invariance of the minibatch-level token selections."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ngrpo_jax import grading
from ngrpo_jax import mismatch
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import objective
from ngrpo_jax.training import rollout
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import step as step_lib
from ngrpo_jax.training import update

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
P, R, G = 3, 4, 4
UPD = update.UpdateConfig(logprob_chunk_size=None)
# Three groups: mixed, all wrong, all correct (rewards 0 / 1; the format component varies).
REWARDS = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.float32)
PARSEABLE = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]], bool)

NEW_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "grpo_batch_std", "gdpo", "gpg", "grpo_passk",
                  "passk_training", "pkpo", "unlikeliness", "lens", "rl_zvp")
NEW_TERMS = ("gspo", "gspo_token", "gmpo", "cispo", "sapo", "dppo", "gpg", "two_sided_clip", "clip_cov", "kl_cov",
             "high_entropy_policy_gradient")
ESTIMATOR_KW = {"passk_training": {"k": 2}, "pkpo": {"k": 2}}
TERM_KW = {"clip_cov": {"clip_ratio": 0.2, "cov_low": -10.0, "cov_high": 10.0}, "kl_cov": {"top_frac": 0.2},
           "gspo": {"eps_low": 0.2, "eps_high": 0.2}, "gspo_token": {"eps_low": 0.2, "eps_high": 0.2}}


def _scored(params, seed=1, ref_noise=0.0):
  """A packed, scored batch of the three groups (what ``batch.pack`` + ``batch.make_scorer`` produce)."""
  rng = np.random.default_rng(seed)
  n = REWARDS.shape[0]
  prompts = rng.integers(1, CFG.vocab_size, (n, P))
  tokens = np.concatenate([np.repeat(prompts, G, 0), rng.integers(1, CFG.vocab_size, (n * G, R))], 1).astype(np.int32)
  lengths = rng.integers(2, R + 1, n * G)
  attn = np.ones_like(tokens, bool)
  resp = np.zeros((n * G, P + R - 1), bool)
  for i, m in enumerate(lengths):
    resp[i, P - 1:P - 1 + m] = True
    attn[i, P + m:] = False
  out = update.make_scorer(CFG, UPD)(params, jnp.asarray(tokens), jnp.asarray(attn))
  old, ent = np.asarray(out["logp"]) * resp, np.asarray(out["entropy"]) * resp
  correct = REWARDS.reshape(-1) > 0.5
  kinds = np.repeat(np.where(REWARDS.min(-1) > 0.5, rollout.KIND_ALL_CORRECT,
                             np.where(REWARDS.max(-1) < 0.5, rollout.KIND_ALL_WRONG, rollout.KIND_MIXED)), G)
  behaviour = (old + rng.normal(0, 0.05, old.shape)) * resp
  return {"tokens": tokens, "attention_mask": attn, "response_mask": resp, "loss_mask": resp.astype(np.float32),
          "sampler_logp": behaviour.astype(np.float32), "behaviour_logp": behaviour.astype(np.float32),
          "rewards": REWARDS.reshape(-1), "lengths": lengths.astype(np.int32), "valid": np.ones(n * G, bool),
          "reward_components": grading.reward_components(correct, PARSEABLE.reshape(-1)),
          "group_kind": kinds.astype(np.int32), "old_logp": old.astype(np.float32),
          "entropy": ent.astype(np.float32), "old_entropy": ent.astype(np.float32),
          "ref_logp": (old + ref_noise * rng.normal(size=old.shape) * resp).astype(np.float32), "time/scoring": 0.0}


def _step(algo, params, batch, *, lr=3e-3, cfg=UPD):
  opt = optax.adam(lr)
  st = state_lib.create_train_state(params, opt, 0, keep_reference=algo.uses_reference,
                                    controllers=algo.initial_controllers())
  new_state, metrics = update.make_train_step(CFG, algo, cfg, opt)(
      st, {k: jnp.asarray(v) for k, v in batch_lib.train_inputs(batch).items()})
  return new_state, jax.device_get(metrics)


def _moves_with_advantages(algo, params):
  batch = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(_scored(params))
  assert np.abs(batch["advantages"]).sum() > 0, "degenerate test: all advantages are 0"
  new_state, metrics = _step(algo, params, batch)
  new_logp = np.asarray(update.make_scorer(CFG, UPD)(new_state.params["policy"], jnp.asarray(batch["tokens"]),
                                                      jnp.asarray(batch["attention_mask"]))["logp"])
  d = step_lib.direction_metrics(batch, new_logp)
  assert d["update/adv_logp_change"] > 0, d
  # Per sequence: the summed log-prob moves with the summed advantage (for most rows; rows share params).
  m = batch["loss_mask"] > 0
  a_seq = (batch["advantages"] * m).sum(-1)
  dl = ((new_logp - batch["old_logp"]) * m).sum(-1)
  big = np.abs(a_seq) > 0.05 * np.abs(a_seq).max()
  assert np.mean(np.sign(dl[big]) == np.sign(a_seq[big])) >= 0.75, (a_seq, dl)
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  return batch, metrics


@pytest.mark.parametrize("name", NEW_ESTIMATORS)
def test_estimator_one_step_moves_logprobs_with_the_advantages(name):
  algo = algorithms.Algorithm(name=name, advantage=name, advantage_kwargs=ESTIMATOR_KW.get(name, {}),
                              objective=(objective.policy_gradient_term(),))
  _moves_with_advantages(algo, qwen2.init_params(CFG, jax.random.PRNGKey(0)))


@pytest.mark.parametrize("name", NEW_TERMS)
def test_objective_term_one_step_moves_logprobs_with_the_advantages(name):
  term = objective.Term(name, 1.0, TERM_KW.get(name, {}))
  algo = algorithms.Algorithm(name=name, advantage="grpo", objective=(term,), aggregation="token_mean")
  _, metrics = _moves_with_advantages(algo, qwen2.init_params(CFG, jax.random.PRNGKey(0)))
  assert abs(metrics["pg/ratio_mean"] - 1.0) < 1e-5          # on-policy first minibatch


def test_registry_names_are_all_covered():
  from ngrpo_jax.training import registry  # pylint: disable=g-import-not-at-top
  # The library's own names (other tests and the README example register functions of their own modules).
  builtin = lambda reg: {n for n in reg.names() if reg.get(n).fn.__module__.startswith("ngrpo_jax.")}
  old_estimators = {"grpo", "ngrpo", "dr_grpo", "rloo", "w_reinforce", "psr_only", "nsr_only", "gae"}
  assert builtin(registry.ADVANTAGE_ESTIMATORS) == old_estimators | set(NEW_ESTIMATORS)
  old_terms = {"policy_gradient", "entropy_bonus", "kl_to_reference", "value_loss", "adaptive_entropy_bonus"}
  assert builtin(registry.OBJECTIVE_TERMS) == old_terms | set(NEW_TERMS)


@pytest.mark.parametrize("name,kw", [("clip_cov", TERM_KW["clip_cov"]), ("kl_cov", TERM_KW["kl_cov"]),
                                     ("high_entropy_policy_gradient", {}), ("gspo", {})])
def test_minibatch_selections_do_not_depend_on_the_micro_batch_split(name, kw):
  params = qwen2.init_params(CFG, jax.random.PRNGKey(2))
  algo = algorithms.Algorithm(name=name, objective=(objective.Term(name, 1.0, kw),), aggregation="token_mean")
  batch = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(_scored(params))
  outs = []
  for micro in (1, 2, 4):
    opt = optax.sgd(1.0)
    st = state_lib.create_train_state(params, opt, 0)
    new_state, metrics = update.make_train_step(CFG, algo, dataclasses.replace(UPD, num_microbatches=micro), opt)(
        st, {k: jnp.asarray(v) for k, v in batch_lib.train_inputs(batch).items()})
    outs.append((new_state.params, float(metrics["loss"])))
  for p, loss in outs[1:]:
    np.testing.assert_allclose(loss, outs[0][1], rtol=1e-5, atol=1e-7)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), p, outs[0][0])


def test_kl_in_reward_and_its_adaptive_controller_through_the_pipeline():
  params = qwen2.init_params(CFG, jax.random.PRNGKey(3))
  algo = algorithms.PRESETS["grpo_kl_in_reward"]
  algo = dataclasses.replace(algo, reward_kl_coef=0.5, reward_kl_target=0.01, reward_kl_horizon=100.0)
  assert algo.uses_reference and algo.initial_controllers() == {"kl_coef": 0.5}
  scored = _scored(params, ref_noise=0.5)
  batch = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(scored, {"kl_coef": 0.5})
  m = scored["response_mask"]
  kl = np.where(m, scored["old_logp"].astype(np.float64) - scored["ref_logp"], 0.0).sum(-1)
  penalised = scored["rewards"] - 0.5 * kl
  np.testing.assert_allclose(batch["rewards_penalised"], penalised, rtol=1e-5, atol=1e-6)
  from ngrpo_jax import advantages  # pylint: disable=g-import-not-at-top
  want = np.asarray(advantages.grpo(penalised.reshape(3, G).astype(np.float32))).reshape(-1)
  np.testing.assert_allclose(batch["seq_advantages"], want, rtol=1e-4, atol=1e-5)
  assert np.abs(batch["seq_advantages"].reshape(3, G)[2]).sum() > 0     # the KL now separates an all-correct group
  np.testing.assert_allclose(batch["kl_in_reward/kl"], kl.mean(), rtol=1e-5)
  new = step_lib.update_controllers(algo, {"kl_coef": 0.5}, batch, {"kl_in_reward/kl": batch["kl_in_reward/kl"]})
  e = np.clip(kl.mean() / 0.01 - 1, -0.2, 0.2)
  np.testing.assert_allclose(new["kl_coef"], 0.5 * (1 + e * 12 / 100.0), rtol=1e-5)


@pytest.mark.parametrize("level,mode", [("token", "truncate"), ("sequence", "mask")])
def test_mismatch_weights_and_rejection_through_the_pipeline(level, mode):
  params = qwen2.init_params(CFG, jax.random.PRNGKey(4))
  algo = algorithms.Algorithm(name="g", objective=(objective.policy_gradient_term(),))
  scored = _scored(params)
  scored["behaviour_logp"][0] -= 3.0 * scored["response_mask"][0]        # one badly mismatched response
  plain = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(scored)
  ro = rollout.RolloutConfig(is_correction=True, is_level=level, is_mode=mode, is_cap=1.2, reject="token",
                             reject_lower=0.1, reject_upper=10.0)
  got = batch_lib.make_advantages(algo, grading.RewardConfig(), G, rollout=ro)(scored)
  w = np.asarray(mismatch.importance_weights(scored["old_logp"], scored["behaviour_logp"], scored["response_mask"],
                                             level=level, mode=mode, upper=1.2))
  m = scored["response_mask"]
  np.testing.assert_allclose(got["advantages"], np.where(m, plain["advantages"] * w, 0.0), rtol=1e-5, atol=1e-7)
  assert np.all(got["loss_mask"][0] == 0) and np.all(got["loss_mask"][1:] == scored["loss_mask"][1:])
  np.testing.assert_allclose(got["mismatch/rejected_frac"], 1 / 12)
  diag = batch_lib.diagnostics(got)
  assert diag["mismatch/ratio_max"] > 10 and diag["mismatch/rejected_frac"] == got["mismatch/rejected_frac"]


def test_adaptive_entropy_bonus_reads_the_controller_and_the_controller_follows_the_target():
  params = qwen2.init_params(CFG, jax.random.PRNGKey(5))
  algo = algorithms.PRESETS["adaptive_entropy"]
  algo = algorithms.with_term(algo, objective.Term("adaptive_entropy_bonus", 1.0,
                                                   {"target": 5.0, "delta": 0.01, "coef_max": 0.05, "init": 0.02}))
  assert algo.initial_controllers() == {"entropy_coef": 0.02, "entropy_coef_applied": 0.02}
  batch = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(_scored(params))
  _, metrics = _step(algo, params, batch)
  np.testing.assert_allclose(metrics["loss/adaptive_entropy_bonus"], -0.02 * metrics["entropy"], rtol=1e-4)
  low = step_lib.update_controllers(algo, algo.initial_controllers(), batch, {"policy_entropy": 1.0})
  np.testing.assert_allclose([low["entropy_coef"], low["entropy_coef_applied"]], [0.03, 0.03], rtol=1e-6)
  high = step_lib.update_controllers(algo, algo.initial_controllers(), batch, {"policy_entropy": 9.0})
  np.testing.assert_allclose([high["entropy_coef"], high["entropy_coef_applied"]], [0.01, 0.0], atol=1e-7)


@pytest.mark.parametrize("name", ["clip_cov", "kl_cov", "high_entropy_policy_gradient"])
def test_group_gradient_norms_work_with_minibatch_prepared_terms(name):
  params = qwen2.init_params(CFG, jax.random.PRNGKey(6))
  algo = algorithms.Algorithm(name=name, objective=(objective.Term(name, 1.0, TERM_KW.get(name, {})),))
  batch = batch_lib.make_advantages(algo, grading.RewardConfig(), G)(_scored(params))
  out = jax.device_get(update.make_group_grad_norms(CFG, algo, UPD)(
      {"policy": params}, {k: jnp.asarray(v) for k, v in batch_lib.train_inputs(batch).items()}))
  assert out["grad_norm/mixed"] > 0 and out["grad_norm/all_correct"] == 0
  assert all(np.isfinite(v) for v in out.values())
