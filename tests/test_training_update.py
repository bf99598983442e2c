"""The jitted RL update on a tiny Qwen2 with hand-made batches: directions, filters, exact accumulation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ngrpo_jax import losses
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import objective
from ngrpo_jax.training import rollout
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
P, R = 3, 4      # prompt and response lengths
UPD = update.UpdateConfig(logprob_chunk_size=8)


def _params(seed=0):
  return qwen2.init_params(CFG, jax.random.PRNGKey(seed))


def _batch(params, rewards, algo, *, lengths=None, seed=1):
  """One group: G = len(rewards) responses of R tokens after a shared P-token prompt, scored on-policy."""
  g = len(rewards)
  rng = np.random.default_rng(seed)
  prompt = rng.integers(1, CFG.vocab_size, P)
  tokens = np.concatenate([np.tile(prompt, (g, 1)), rng.integers(1, CFG.vocab_size, (g, R))], 1).astype(np.int32)
  attn = np.ones_like(tokens, bool)
  loss_mask = np.zeros((g, P + R - 1), np.float32)
  lengths = lengths if lengths is not None else [R] * g
  for i, n in enumerate(lengths):
    loss_mask[i, P - 1:P - 1 + n] = 1
    attn[i, P + n:] = False
  scorer = update.make_scorer(CFG, UPD)
  old = np.asarray(scorer(params, jnp.asarray(tokens), jnp.asarray(attn))["logp"])
  r = np.asarray([rewards], np.float32)
  adv = np.asarray(algo.estimator().fn(r, np.ones_like(r, bool), r_max=1.0, r_min=0.0,
                                       **dict(algo.advantage_kwargs)))[0]
  correct = r > 0.5
  kinds = np.where(correct.all(-1), rollout.KIND_ALL_CORRECT, np.where((~correct).all(-1), rollout.KIND_ALL_WRONG,
                                                                     rollout.KIND_MIXED))
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask, "old_logp": old,
          "ref_logp": old, "advantages": (adv[:, None] * loss_mask).astype(np.float32),
          "group_kind": np.repeat(kinds, g)}


def _seq_logp(params, batch):
  scorer = update.make_scorer(CFG, UPD)
  lp = np.asarray(scorer(params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["attention_mask"]))["logp"])
  return (lp * batch["loss_mask"]).sum(-1)


def _step(algo, params, batch, *, lr=3e-3, weight_decay=0.0, cfg=UPD, value_params=None):
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=lr, weight_decay=weight_decay), lr)
  st = state_lib.create_train_state(params, opt, 0, value_params=value_params, keep_reference=algo.uses_reference)
  step = update.make_train_step(CFG, algo, cfg, opt, sched)
  new_state, metrics = step(st, {k: jnp.asarray(v) for k, v in batch.items()})
  return new_state, jax.device_get(metrics)


# Which rows must move which way after one step on rewards [1, 0, 0, 0].
_DIRECTIONS = {
    "ngrpo": (True, True), "grpo": (True, True), "dapo": (True, True), "psr_nsr": (True, True),
    "psr_only": (True, False), "nsr_only": (False, True),
}


@pytest.mark.parametrize("name", sorted(_DIRECTIONS))
def test_one_step_moves_logprobs_in_the_advantage_direction(name):
  algo = algorithms.without_term(algorithms.get_algorithm(name), "entropy_bonus")
  params = _params()
  batch = _batch(params, [1.0, 0.0, 0.0, 0.0], algo)
  before = _seq_logp(params, batch)
  new_state, metrics = _step(algo, params, batch)
  after = _seq_logp(new_state.params["policy"], batch)
  up, down = _DIRECTIONS[name]
  if up:
    assert after[0] > before[0], (name, before, after)
  if down:
    assert np.all(after[1:] < before[1:]), (name, before, after)
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  # On-policy first step: ratio starts at 1, nothing is clipped at the first minibatch.
  assert abs(metrics["pg/ratio_mean"] - 1.0) < 1e-5


def test_all_wrong_group_pushes_down_under_ngrpo_and_is_inert_under_grpo():
  params = _params()
  ngrpo = algorithms.without_term(algorithms.get_algorithm("ngrpo"), "entropy_bonus")
  batch = _batch(params, [0.0] * 4, ngrpo)
  aug = np.array([0.0, 0.0, 0.0, 0.0, 1.0])                    # numpy reference: one virtual r_max
  expected = (0.0 - aug.mean()) / (aug.std(ddof=1) + 1e-6)
  np.testing.assert_allclose(batch["advantages"][batch["loss_mask"] > 0], expected, rtol=1e-5)
  before = _seq_logp(params, batch)
  new_state, metrics = _step(ngrpo, params, batch)
  after = _seq_logp(new_state.params["policy"], batch)
  assert np.all(after < before) and np.all(np.isfinite(after))
  # Bounded: one step at this lr moves each sequence's log-prob by a modest amount, no blow-up.
  assert np.all(before - after < 5.0), before - after

  grpo = algorithms.without_term(algorithms.without_term(algorithms.get_algorithm("grpo"), "entropy_bonus"), "kl_to_reference")
  batch = _batch(params, [0.0] * 4, grpo)
  assert np.all(batch["advantages"] == 0)
  new_state, metrics = _step(grpo, params, batch)
  same = jax.tree_util.tree_map(lambda a, b: bool(jnp.all(a == b)), params, new_state.params["policy"])
  assert all(jax.tree_util.tree_leaves(same))
  assert metrics["grad_norm"] == 0


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
def test_gradient_accumulation_is_exact(aggregation):
  params = _params()
  algo = dataclasses.replace(algorithms.without_term(algorithms.get_algorithm("grpo"), "kl_to_reference"), aggregation=aggregation)
  batch = _batch(params, [1.0, 0.0, 1.0, 0.0], algo, lengths=[4, 1, 2, 0])
  opt = optax.sgd(1.0)
  outs = []
  for micro in (1, 2, 4):
    cfg = dataclasses.replace(UPD, num_microbatches=micro)
    st = state_lib.create_train_state(params, opt, 0)
    new_state, metrics = update.make_train_step(CFG, algo, cfg, opt)(st, {k: jnp.asarray(v) for k, v in batch.items()})
    outs.append((new_state.params, float(metrics["loss"])))
  for p, loss in outs[1:]:
    np.testing.assert_allclose(loss, outs[0][1], rtol=1e-5, atol=1e-7)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), p, outs[0][0])


def test_logprob_chunking_does_not_change_the_update():
  """Chunked (logits recomputed in the backward) and unchunked (logits kept) log-probs give the same step,
  entropy bonus included; a bad chunk size is rejected by name."""
  params = _params()
  algo = algorithms.with_term(algorithms.get_algorithm("ngrpo"), objective.entropy_term(0.01))
  batch = _batch(params, [1.0, 0.0, 0.0, 0.0], algo, lengths=[4, 3, 2, 1])
  outs = []
  for chunk in (None, 2, 8):
    new_state, metrics = _step(algo, params, batch, cfg=dataclasses.replace(UPD, logprob_chunk_size=chunk))
    outs.append((new_state.params, float(metrics["loss"])))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), outs[0][0]["policy"], params))
  assert any(moved)  # the step changed the params
  for p, loss in outs[1:]:
    np.testing.assert_allclose(loss, outs[0][1], rtol=1e-5, atol=1e-7)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p, outs[0][0])
  with pytest.raises(ValueError, match="logprob_chunk_size"):
    update.UpdateConfig(logprob_chunk_size=0)


def test_ppo_step_trains_the_critic_and_bf16_compute_runs():
  params = _params()
  algo = algorithms.without_term(algorithms.get_algorithm("ppo"), "kl_to_reference")
  vparams = qwen2.init_value_head(CFG, jax.random.PRNGKey(3))
  g = 4
  batch = _batch(params, [1.0, 0.0, 0.0, 1.0], algorithms.get_algorithm("grpo"))
  scorer = update.make_scorer(CFG, UPD)
  out = scorer(params, jnp.asarray(batch["tokens"]), jnp.asarray(batch["attention_mask"]), vparams)
  values = np.asarray(out["values"])
  rew = np.zeros_like(values)
  rew[:, -1] = [1.0, 0.0, 0.0, 1.0]
  from ngrpo_jax import advantages as adv_lib
  adv, ret = adv_lib.gae(jnp.asarray(rew), jnp.asarray(values), jnp.asarray(batch["loss_mask"] > 0), gamma=1.0,
                         lam=0.95)
  batch.update(advantages=np.asarray(adv), returns=np.asarray(ret), old_values=values)
  cfg = dataclasses.replace(UPD, ppo_epochs=2, num_minibatches=2, compute_dtype="bfloat16", remat=True)
  new_state, metrics = _step(algo, params, batch, cfg=cfg, value_params=vparams, lr=1e-2)
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["loss/value_loss"])
  assert not np.allclose(new_state.params["value"]["kernel"], vparams["kernel"])
  del g


def test_group_grad_norm_shares():
  params = _params()
  algo = algorithms.get_algorithm("ngrpo")
  b1 = _batch(params, [1.0, 0.0, 0.0, 0.0], algo, seed=1)
  b2 = _batch(params, [0.0] * 4, algo, seed=2)
  batch = {k: np.concatenate([b1[k], b2[k]]) for k in b1}
  fn = update.make_group_grad_norms(CFG, algo, UPD)
  out = jax.device_get(fn({"policy": params}, {k: jnp.asarray(v) for k, v in batch.items()}))
  assert out["grad_norm/all_correct"] == 0
  assert out["grad_norm/mixed"] > 0 and out["grad_norm/all_wrong"] > 0
  np.testing.assert_allclose(sum(out[f"grad_share/{k}"] for k in update.GROUP_KINDS), 1.0, rtol=1e-5)
