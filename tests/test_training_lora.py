"""LoRA in the RL trainer: only the adapters are trained and held by the optimiser (the base is bit-identical
after a step and is the KL reference), the merged policy is what the sampler sees, the config fields, the
sharded step, and (slow) a tiny cpu_ngrpo run with LoRA end to end and its bit-identical resume."""
import dataclasses
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import sharding
from ngrpo_jax.models import hf_checkpoint
from ngrpo_jax.models import lora
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import checkpoint
from ngrpo_jax.training import config
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update

CFG = qwen2.Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)
UPD = update.UpdateConfig(num_minibatches=2, logprob_chunk_size=None)
LC = lora.LoRAConfig(rank=4, alpha=8, targets=("q_proj", "v_proj", "up_proj", "down_proj"))


def _batch(params, n=8, length=10, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, CFG.vocab_size, (n, length)).astype(np.int32)
  attn = np.ones_like(tokens, bool)
  loss_mask = np.zeros((n, length - 1), np.float32)
  loss_mask[:, 3:] = 1
  old = np.asarray(update.make_scorer(CFG, UPD)(params, jnp.asarray(tokens), jnp.asarray(attn))["logp"])
  adv = rng.standard_normal((n, 1)).astype(np.float32) * loss_mask
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask, "old_logp": old, "ref_logp": old,
          "advantages": adv, "group_kind": np.zeros(n, np.int32)}


def _lora_state(algo, lc=LC, lr=1e-2):
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  adapters = lora.init_lora_params(params, lc, jax.random.PRNGKey(1))
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=lr, weight_decay=0.0), lr)
  st = state_lib.create_train_state(params, opt, 0, keep_reference=algo.uses_reference, lora_params=adapters,
                                    lora_config=lc)
  return params, st, opt, sched


def _leaves_equal(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name", ["ngrpo", "grpo"])       # grpo has a KL term: its reference is the base
def test_only_adapter_params_change_in_a_train_step(name):
  algo = algorithms.get_algorithm(name)
  params, st, opt, sched = _lora_state(algo)
  assert set(st.params) == {"lora"} and st.lora_config == LC
  assert _leaves_equal(st.ref_params, params)                     # the frozen base, one copy
  # The optimiser holds moments for the adapters only.
  n_adapter = lora.num_lora_params(st.params["lora"])
  n_opt = sum(x.size for x in jax.tree_util.tree_leaves(st.opt_state) if x.ndim > 0)
  assert n_opt == 2 * n_adapter                                  # Adam: mu and nu
  base_before = jax.device_get(st.ref_params)
  adapters_before = jax.device_get(st.params["lora"])
  step = update.make_train_step(CFG, algo, UPD, opt, sched)
  batch = {k: jnp.asarray(v) for k, v in _batch(params).items()}
  new, metrics = step(st, batch)
  new = jax.device_get(new)
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  assert _leaves_equal(new.ref_params, base_before)              # base bit-identical
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new.params["lora"]),
                                                    jax.tree_util.tree_leaves(adapters_before))]
  assert all(moved)                                              # every A and B moved (B from 0)
  # The merged policy differs from the base, only in the targeted kernels.
  merged = state_lib.policy_params(new)
  for group, proj in (("self_attn", "q_proj"), ("mlp", "down_proj")):
    assert not np.array_equal(merged["layers"][group][proj]["kernel"], params["layers"][group][proj]["kernel"])
  for group, proj in (("self_attn", "k_proj"), ("self_attn", "o_proj"), ("mlp", "gate_proj")):
    assert np.array_equal(merged["layers"][group][proj]["kernel"], params["layers"][group][proj]["kernel"])
  assert np.array_equal(merged["embed_tokens"]["embedding"], params["embed_tokens"]["embedding"])


def test_lora_step_equals_the_adapters_gradient_of_the_merged_model():
  """One SGD step on the adapters: the update equals -lr · ∇_{A,B} of the loss of the model with merged
  weights W + s·A·B (the adapters' forward and the merge are the same function)."""
  algo = algorithms.get_algorithm("ngrpo")
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  adapters = jax.tree_util.tree_map(lambda x: x + 0.05, lora.init_lora_params(params, LC, jax.random.PRNGKey(1)))
  cfg = dataclasses.replace(UPD, num_minibatches=1)
  import optax  # pylint: disable=g-import-not-at-top
  opt = optax.sgd(0.1)
  st = state_lib.create_train_state(params, opt, 0, lora_params=adapters, lora_config=LC)
  batch = {k: jnp.asarray(v) for k, v in _batch(params).items()}
  new, _ = update.make_train_step(CFG, algo, cfg, opt)(st, batch)
  loss_fn = update.make_loss_fn(CFG, algo, cfg, batch["tokens"].shape[1])
  mb = {k: v for k, v in batch.items() if k != "group_kind"}
  mb["rng"] = jax.random.PRNGKey(0)
  norm = __import__("ngrpo_jax").losses.batch_normalizer(mb["loss_mask"] > 0, algo.aggregation)
  g = jax.grad(lambda ad: loss_fn({"policy": lora.merge_params(params, ad, LC)}, mb, norm)[0])(adapters)
  want = jax.tree_util.tree_map(lambda a, d: a - 0.1 * d, adapters, g)
  for x, y in zip(jax.tree_util.tree_leaves(new.params["lora"]), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_dropout_and_bf16_steps_run():
  algo = algorithms.get_algorithm("ngrpo")
  lc = dataclasses.replace(LC, dropout=0.2)
  params, st, opt, sched = _lora_state(algo, lc)
  batch = {k: jnp.asarray(v) for k, v in _batch(params).items()}
  for cfg in (UPD, dataclasses.replace(UPD, compute_dtype="bfloat16", unroll_layers=True)):
    _, st2, _, _ = _lora_state(algo, lc)
    new, metrics = update.make_train_step(CFG, algo, cfg, opt, sched)(st2, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert _leaves_equal(jax.device_get(new.ref_params), params)


def test_group_grad_norms_with_lora():
  algo = algorithms.get_algorithm("ngrpo")
  params, st, _, _ = _lora_state(algo)
  st = st.replace(params={"lora": jax.tree_util.tree_map(lambda x: x + 0.05, st.params["lora"])})
  batch = {k: jnp.asarray(v) for k, v in _batch(params).items()}
  out = jax.device_get(update.make_group_grad_norms(CFG, algo, UPD, lora_config=LC)(
      st.params, {k: v for k, v in batch.items()}, st.ref_params))
  assert out["grad_norm/mixed"] > 0 and np.isfinite(out["grad_share/mixed"])


def test_checkpoint_round_trip_keeps_adapters_and_config(tmp_path):
  algo = algorithms.get_algorithm("grpo")
  _, st, _, _ = _lora_state(algo)
  st = st.replace(params={"lora": jax.tree_util.tree_map(lambda x: x + 0.5, st.params["lora"])})
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
  ckpt.save(st, {})
  _, like, _, _ = _lora_state(algo)
  restored, _ = ckpt.restore_latest(like)
  assert restored.lora_config == LC
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(st)
  assert _leaves_equal(restored, st)
  ckpt.close()


def test_sharded_lora_step_equals_single_device():
  algo = algorithms.get_algorithm("grpo")
  params, st, opt, sched = _lora_state(algo)
  batch = {k: jnp.asarray(v) for k, v in _batch(params).items()}
  want, want_m = update.make_train_step(CFG, algo, UPD, opt, sched)(st, batch)
  want = jax.device_get(want)
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  _, st2, _, _ = _lora_state(algo)
  shardings = sharding.train_state_shardings(CFG, st2, mesh)
  st2 = sharding.device_put_global(st2, shardings)
  step = update.make_train_step(CFG, algo, UPD, opt, sched, mesh=mesh, state_shardings=shardings)
  got, got_m = step(st2, sharding.shard_batch({k: np.asarray(v) for k, v in batch.items() if k != "group_kind"},
                                              mesh))
  got = jax.device_get(got)
  for x, y in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(want.params)):
    np.testing.assert_allclose(x, y, atol=1e-5)
  assert _leaves_equal(got.ref_params, want.ref_params)
  assert abs(float(got_m["loss"]) - float(want_m["loss"])) < 1e-5


def test_config_fields():
  assert config.ModelSpec().lora_config() is None
  spec = config.ModelSpec(lora_rank=8, lora_alpha=16, lora_dropout=0.05, lora_targets="q_proj, v_proj")
  assert spec.lora_config() == lora.LoRAConfig(rank=8, alpha=16, dropout=0.05, targets=("q_proj", "v_proj"))
  # --config.model.lora_targets=q_proj,v_proj arrives as a 1-tuple of the string
  assert config.ModelSpec(lora_rank=8, lora_targets=("q_proj,v_proj",)).lora_targets == ("q_proj", "v_proj")
  with pytest.raises(ValueError, match=r"model.lora_\*: unknown LoRA target\(s\) \['attn'\]"):
    config.ModelSpec(lora_rank=2, lora_targets=("attn",))
  with pytest.raises(ValueError, match="model.lora_rank must be an int >= 0"):
    config.ModelSpec(lora_rank=-1)
  with pytest.raises(ValueError, match="dropout"):
    config.ModelSpec(lora_rank=2, lora_dropout=1.5)
  # The command-line form round-trips, and a changed rank is refused on resume (it changes the state).
  cfg = config.ExperimentConfig(model=spec)
  assert config.from_config_dict(config.to_config_dict(cfg)).model == spec
  old = config.to_dict(cfg)
  new = config.to_dict(dataclasses.replace(cfg, model=dataclasses.replace(spec, lora_rank=4)))
  with pytest.raises(ValueError, match="model.lora_rank: 8 → 4"):
    config.check_resume_compatible(old, new)


def _smoke_lora(family=None, **overrides):
  """The CI smoke pipeline with rank-4 LoRA; ``family={"model_type": "qwen3", "head_dim": 24}`` for a Qwen3."""
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  cfg = cpu.smoke()
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, lora_rank=4, lora_alpha=8, **(family or {})),
                            algorithm=dataclasses.replace(cfg.algorithm, learning_rate=1e-2))
  return dataclasses.replace(cfg, **overrides)


@pytest.mark.slow
@pytest.mark.parametrize("family", [None, {"model_type": "qwen3", "head_dim": 24}], ids=["qwen2", "qwen3"])
def test_cpu_ngrpo_with_lora_trains_end_to_end_and_exports(tmp_path, family):
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = _smoke_lora(family)
  log = io.StringIO()
  summary = loop.run(cfg, tmp_path, log_stream=log)
  assert summary["rl_steps_done"] == cfg.rl_steps
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  rl = [r for r in rows if r.get("phase") == "rl"]
  assert [r["step"] for r in rl] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rl)
  assert any(r["grad_norm"] > 0 for r in rl)
  # Checkpoints: adapters trained, base = the step-0 (warm-started) policy, bit for bit.
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  meta = ckpt.latest_metadata()
  assert meta["config"]["model"]["lora_rank"] == 4
  raw0 = ckpt._manager.restore(0)["state"]          # pylint: disable=protected-access
  raw = ckpt._manager.restore(ckpt.latest_step())["state"]   # pylint: disable=protected-access
  ckpt.close()
  assert set(raw["params"]) == {"lora"}
  assert _leaves_equal(raw["ref_params"], raw0["ref_params"])
  assert not _leaves_equal(raw["params"]["lora"], raw0["params"]["lora"])
  # Exports: merged HF weights == base + s·A·B; the PEFT adapter holds the trained adapters.
  adapters, lc = lora.load_peft_adapter(tmp_path / "peft_adapter", raw["ref_params"])
  assert lc == cfg.model.lora_config()
  assert _leaves_equal(adapters, raw["params"]["lora"])
  exported_config, exported = hf_checkpoint.load_pretrained(tmp_path / "hf_export")
  assert exported_config.model_type == cfg.model.model_type
  merged = lora.merge_params(raw["ref_params"], raw["params"]["lora"], lc)
  for x, y in zip(jax.tree_util.tree_leaves(exported), jax.tree_util.tree_leaves(merged)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


@pytest.mark.slow
def test_cpu_ngrpo_with_lora_resumes_bit_identically(tmp_path):
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = _smoke_lora(rl_steps=4, export_hf=False, checkpoint_every=1)
  loop.run(cfg, tmp_path / "a", log_stream=io.StringIO())
  loop.run(dataclasses.replace(cfg, rl_steps=2), tmp_path / "b", log_stream=io.StringIO())
  log = io.StringIO()
  loop.run(cfg, tmp_path / "b", log_stream=log)
  assert "[resume] restored step 2" in log.getvalue()
  a = json.loads((tmp_path / "a" / "eval_after.json").read_text())
  b = json.loads((tmp_path / "b" / "eval_after.json").read_text())
  assert a["per_problem_correct"] == b["per_problem_correct"]
  la = {r["step"]: r for r in map(json.loads, (tmp_path / "a" / "metrics.jsonl").read_text().splitlines())
        if r.get("phase") == "rl"}
  lb = {r["step"]: r for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").read_text().splitlines())
        if r.get("phase") == "rl"}
  for step in (3, 4):
    for key in ("loss", "grad_norm", "reward_mean", "pg/ratio_mean", "data_position"):
      assert la[step][key] == lb[step][key], (step, key)
  states = []
  for run in ("a", "b"):
    ckpt = checkpoint.Checkpointer(tmp_path / run / "checkpoints")
    states.append(ckpt._manager.restore(4)["state"])   # pylint: disable=protected-access
    ckpt.close()
  assert _leaves_equal(states[0], states[1])


def test_evaluate_loads_a_lora_checkpoint_as_the_merged_policy(tmp_path):
  from experiments import evaluate as evaluate_bin  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders  # pylint: disable=g-import-not-at-top
  spec = config.ModelSpec(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, lora_rank=2, lora_alpha=3, lora_targets=("q_proj", "down_proj"))
  checkpoint.write_json(tmp_path / "config.json", config.to_dict(dataclasses.replace(config.ExperimentConfig(),
                                                                                      model=spec)))
  model_config, params = builders.build_model(spec, data.build_tokenizer(), seed=3)
  lc = spec.lora_config()
  adapters = jax.tree_util.tree_map(lambda x: x + 0.3, lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  optimizer, _ = state_lib.make_optimizer(state_lib.OptimConfig(), 1e-3)
  ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
  ckpt.save(state_lib.create_train_state(params, optimizer, 0, lora_params=adapters, lora_config=lc), {})
  ckpt.close()
  got_config, got_params, _ = evaluate_bin.load_policy(str(tmp_path))
  assert got_config == model_config
  assert _leaves_equal(got_params, lora.merge_params(params, adapters, lc))
