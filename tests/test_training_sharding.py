"""The trainer on a device mesh (issue 6) and its resume checks: the loop's own placement / update code path
(``loop.place_train_state``, ``update.make_train_step(mesh=...)``, ``loop.place_batch``) on the 8 virtual CPU
devices equals the single-device run; sharded checkpoints restore into their shardings; a changed model or
batch shape is refused with a message naming it."""
import dataclasses
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import sharding
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import checkpoint
from ngrpo_jax.training import config
from ngrpo_jax.training import loop
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update

CFG = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)
MESH = "data=2,fsdp=2,tensor=2"


def _batch(rng, rows=16, prompt=4, resp=6):
  """A rollout-shaped batch (left-padded prompts, right-padded responses, mixed-sign advantages)."""
  length = prompt + resp
  tokens = rng.integers(3, CFG.vocab_size, (rows, length)).astype(np.int32)
  attn = np.ones((rows, length), bool)
  attn[::3, 0] = False
  tokens[~attn] = 0
  loss_mask = np.zeros((rows, length - 1), np.float32)
  loss_mask[:, prompt - 1:] = 1.0
  loss_mask[1::4, -2:] = 0.0
  adv = np.repeat(rng.normal(size=(rows, 1)), length - 1, axis=1).astype(np.float32)
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask,
          "old_logp": (-2.0 + 0.1 * rng.normal(size=(rows, length - 1))).astype(np.float32),
          "advantages": adv, "ref_logp": np.full((rows, length - 1), -2.0, np.float32),
          "group_kind": np.zeros(rows, np.int32)}


def _run(mesh, steps=2):
  algo = algorithms.get_algorithm("grpo", learning_rate=1e-2)            # KL on: reference params sharded too
  ucfg = update.UpdateConfig(ppo_epochs=1, num_minibatches=2, num_microbatches=2, logprob_chunk_size=4)
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(), algo.learning_rate)
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  state = state_lib.create_train_state(params, opt, 3, keep_reference=True)
  state, shardings = loop.place_train_state(state, CFG, mesh)             # the loop's own code path
  step_fn = update.make_train_step(CFG, algo, ucfg, opt, sched, mesh=mesh, state_shardings=shardings)
  rng = np.random.default_rng(0)
  metrics = []
  for _ in range(steps):
    state, m = step_fn(state, loop.place_batch(_batch(rng), mesh))
    metrics.append(jax.device_get(m))
  return state, metrics


def test_sharded_train_steps_equal_single_device():
  mesh = sharding.make_mesh(MESH)
  ref_state, ref_metrics = _run(None)
  state, metrics = _run(mesh)
  # The params really are split as the partition rules say (q_proj: [L, D/fsdp, H·hd/tensor]).
  q = state.params["policy"]["layers"]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding.spec == sharding.param_partition_spec("layers/self_attn/q_proj/kernel", q.shape, CFG, mesh)
  assert {s.data.shape for s in q.addressable_shards} == {(q.shape[0], q.shape[1] // 2, q.shape[2] // 2)}
  mu = jax.tree_util.tree_leaves(state.opt_state)                         # optimiser moments follow the params
  assert any(getattr(x, "sharding", None) == q.sharding and x.shape == q.shape for x in mu)
  for a, b in zip(ref_metrics, metrics):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(ref_state)), jax.tree_util.tree_leaves(
      sharding.gather_to_host(state))):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)   # Adam (lr 1e-2) amplifies f32 reduction-order noise


def test_sharded_checkpoint_restores_into_shardings_and_refuses_other_shapes(tmp_path):
  mesh = sharding.make_mesh(MESH)
  state, _ = _run(mesh, steps=1)
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", keep=1)
  ckpt.save(state, {"model": {"hidden_size": 16}})
  opt, _ = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-2)
  like = state_lib.create_train_state(qwen2.init_params(CFG, jax.random.PRNGKey(1)), opt, 0, keep_reference=True)
  shardings = sharding.train_state_shardings(CFG, like, mesh)
  restored, meta = ckpt.restore_latest(like, shardings=shardings)
  assert meta["step"] == 1 and ckpt.latest_metadata()["config"] == {"model": {"hidden_size": 16}}
  for a, b, sh in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state),
                      jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
    assert a.sharding == sh
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  wide = dataclasses.replace(CFG, hidden_size=32)
  other = state_lib.create_train_state(qwen2.init_params(wide, jax.random.PRNGKey(1)), opt, 0, keep_reference=True)
  with pytest.raises(ValueError, match=r"does not match the train state.*embed_tokens/embedding: saved \(32, 16\)"):
    ckpt.restore_latest(other)
  ckpt.close()


def test_resume_compatibility_names_what_changed():
  base = json.loads(json.dumps(config.to_dict(config.ExperimentConfig()), default=str))
  config.check_resume_compatible(base, {**base, "rl_steps": 500, "time_budget_s": 10.0})   # allowed changes
  cfg = config.ExperimentConfig()
  changed = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_hidden_layers=4),
                                rollout=dataclasses.replace(cfg.rollout, max_new_tokens=9))
  new = json.loads(json.dumps(config.to_dict(changed), default=str))
  with pytest.raises(ValueError, match=r"model.num_hidden_layers: 3 → 4; rollout.max_new_tokens: \d+ → 9"):
    config.check_resume_compatible(base, new, where="run")


def test_mesh_config_is_validated():
  cfg = dataclasses.replace(config.ExperimentConfig(), mesh=MESH)
  config.validate_config(cfg)
  with pytest.raises(ValueError, match="needs 16 devices"):
    config.validate_config(dataclasses.replace(cfg, mesh="data=2,fsdp=4,tensor=2"))
  with pytest.raises(ValueError, match="divisible by the mesh's data × fsdp = 8"):
    config.validate_config(dataclasses.replace(
        cfg, mesh="data=8", rollout=dataclasses.replace(cfg.rollout, groups_per_batch=1, group_size=4),
        learner=dataclasses.replace(cfg.learner, num_minibatches=1)))
  with pytest.raises(ValueError, match="unknown mesh axis"):
    config.validate_config(dataclasses.replace(cfg, mesh="pipe=8"))


@pytest.mark.slow
def test_sharded_loop_run_matches_single_device_run(tmp_path):
  """The whole experiment (warm-start, sampling, grading, updates, evaluation) with and without the mesh."""
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cpu.smoke(), rl_steps=2, export_hf=False, tensorboard=False)
  loop.run(cfg, tmp_path / "single", log_stream=io.StringIO())
  log = io.StringIO()
  loop.run(dataclasses.replace(cfg, mesh=MESH), tmp_path / "mesh", log_stream=log)
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in log.getvalue()
  rows = {}
  for name in ("single", "mesh"):
    rows[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
                  if '"phase": "rl"' in line]
  assert len(rows["single"]) == len(rows["mesh"]) == 2
  for a, b in zip(rows["single"], rows["mesh"]):
    for k in ("loss", "grad_norm", "pg/ratio_mean", "reward_mean", "policy_entropy", "response_len_mean"):
      assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k
  for tag in ("before", "after"):
    a, b = (json.loads((tmp_path / n / f"eval_{tag}.json").read_text()) for n in ("single", "mesh"))
    assert a["per_problem_correct"] == b["per_problem_correct"]
