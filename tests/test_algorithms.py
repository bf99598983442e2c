"""Algorithms as compositions of named functions: registry, presets, ablations, serialisation, and the checks
that refuse an objective whose needs nothing provides."""
import dataclasses
import json
import sys
import textwrap

import jax
import numpy as np
import pytest

from ngrpo_jax import advantages
from ngrpo_jax import grading
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import config
from ngrpo_jax.training import objective
from ngrpo_jax.training import registry
from ngrpo_jax.training import rollout
from ngrpo_jax.training import step as step_lib

import fake_rollout as fake


def test_presets_and_ablations():
  ngrpo = algorithms.PRESETS["ngrpo"]
  assert ngrpo.term("policy_gradient").kwargs == (("eps_neg", 0.16), ("eps_pos", 0.24))
  assert ngrpo.group_filter == "ngrpo" and not ngrpo.uses_reference and not ngrpo.uses_critic
  assert algorithms.PRESETS["grpo"].uses_reference and algorithms.PRESETS["ppo"].uses_critic
  assert dict(algorithms.PRESETS["psr_nsr"].advantage_kwargs) == {"lam": 0.1}
  for cal in (True, False):
    for keep in (True, False):
      for asym in (True, False):
        a = algorithms.ngrpo_ablation(calibration=cal, keep_all_wrong=keep, asymmetric_clip=asym)
        assert a.advantage == ("ngrpo" if cal else "grpo") and a.group_filter == ("ngrpo" if keep else "dapo")
        assert dict(a.term("policy_gradient").kwargs)["eps_pos"] == (0.24 if asym else 0.2)
  assert algorithms.ngrpo_ablation() == dataclasses.replace(ngrpo, name="ngrpo")
  for vc in (1, 2, 4):
    assert dict(algorithms.ngrpo_ablation(virtual_count=vc).advantage_kwargs)["num_virtual"] == vc
  with pytest.raises(ValueError, match="virtual_reward"):
    algorithms.ngrpo_ablation(virtual_reward="huge")


@pytest.mark.parametrize("level,expected", [("max", 1.1), ("medium", 0.55), ("min", 0.0)])
def test_virtual_reward_levels_follow_the_task_reward_range(level, expected):
  rewards = np.array([[1.1, 0.1, 0.0, 0.0]], np.float32)
  got = registry.ADVANTAGE_ESTIMATORS.get("ngrpo").fn(rewards, np.ones((1, 4), bool), r_max=1.1, r_min=0.0,
                                                      virtual_reward_level=level)
  np.testing.assert_allclose(got, advantages.ngrpo(rewards, r_virtual=expected), rtol=1e-6)


def test_algorithm_round_trips_through_json_and_config_dict():
  for algo in list(algorithms.PRESETS.values()) + [algorithms.ngrpo_ablation(virtual_count=4, keep_all_wrong=False)]:
    assert algorithms.from_dict(json.loads(json.dumps(algo.to_dict()))) == algo
  cfg = config.ExperimentConfig(algorithm=algorithms.PRESETS["ppo"])
  assert config.from_config_dict(config.to_config_dict(cfg)) == cfg
  with pytest.raises(ValueError, match="unknown algorithm fields"):
    algorithms.from_dict({**algorithms.PRESETS["grpo"].to_dict(), "kl_coef": 0.1})


def test_unknown_names_and_bad_compositions_fail_with_clear_errors():
  with pytest.raises(ValueError, match="unknown advantage estimator 'nope'.*registered"):
    algorithms.Algorithm(name="x", advantage="nope")
  with pytest.raises(ValueError, match="cannot import module"):
    algorithms.Algorithm(name="x", advantage="no_such_module_xyz:fn")
  with pytest.raises(ValueError, match="has no attribute"):
    algorithms.Algorithm(name="x", advantage="ngrpo_jax.advantages:nope")
  with pytest.raises(ValueError, match="unknown objective term"):
    objective.Term("nope")
  with pytest.raises(ValueError, match="advantage estimator 'grpo' cannot take.*lam"):
    algorithms.Algorithm(name="x", advantage="grpo", advantage_kwargs={"lam": 0.1})
  with pytest.raises(ValueError, match="objective term 'policy_gradient' cannot take.*eps"):
    algorithms.Algorithm(name="x", objective=(objective.Term("policy_gradient", 1.0, {"eps": 0.2}),))
  with pytest.raises(ValueError, match="aggregation"):
    algorithms.Algorithm(name="x", aggregation="mean")
  with pytest.raises(TypeError, match="by name"):
    algorithms.Algorithm(name="x", advantage=lambda r: r)          # callables never enter a config
  with pytest.raises(ValueError, match="already registered"):
    registry.advantage_estimator("grpo")(lambda *a, **k: None)


def test_a_critic_term_with_an_estimator_that_provides_no_returns_is_refused():
  # Regression: use_critic=True with a custom advantage_fn passed validation and was silently ignored.
  with pytest.raises(ValueError, match="value_loss.*returns.*gae"):
    algorithms.Algorithm(name="x", advantage="grpo", objective=(objective.policy_gradient_term(),
                                                                 objective.value_term()))

  @registry.advantage_estimator("test_gae_like", needs=("values", "response_mask"),
                                provides=("advantages", "returns"), replace=True)
  def gae_like(rewards, valid, *, r_max, r_min, values, response_mask):
    del r_max, r_min
    adv = (rewards[..., None] - values) * response_mask * valid[..., None]
    return {"advantages": adv, "returns": adv + values}

  algo = algorithms.Algorithm(name="mine", advantage="test_gae_like",
                              objective=(objective.policy_gradient_term(), objective.value_term()))
  assert algo.uses_critic                                  # the custom estimator is used, with a value head
  cfg = rollout.RolloutConfig(group_size=4, groups_per_batch=2, max_prompt_len=4, max_new_tokens=6)
  parts, recorded = fake.parts(algo, cfg, ["mixed", "none"] * 8)
  step_lib.rl_step(fake.state(algo), parts)
  b = recorded[0]
  assert "returns" in b and "old_values" in b
  m = b["loss_mask"] > 0
  assert m.any()
  np.testing.assert_allclose((b["returns"] - b["advantages"])[m], 0.1, atol=1e-6)   # returns = A + V


def test_a_custom_jitted_estimator_compiles_once_whatever_survives_the_filter():
  # Regression: a custom estimator ran on unpadded shapes, so a jitted one recompiled per kept-group count.
  traces = []

  @registry.advantage_estimator("test_counting", replace=True)
  def counting(rewards, valid, *, r_max, r_min):
    traces.append(rewards.shape)
    return jax.numpy.where(valid, rewards - 0.5 * (r_max + r_min), 0.0)

  algo = dataclasses.replace(algorithms.get_algorithm("ngrpo"), advantage="test_counting", advantage_kwargs=())
  cfg = rollout.RolloutConfig(group_size=4, groups_per_batch=4, max_prompt_len=4, max_new_tokens=6, max_refills=0)
  parts, recorded = fake.parts(algo, cfg, ["all", "mixed", "none", "all"] * 2 + ["all"] * 3 + ["mixed"])
  state = fake.state(algo)
  kept = []
  for _ in range(3):
    state, m = step_lib.rl_step(state, parts)
    kept.append(m["groups/kept"])
  assert len(set(kept)) > 1, kept                      # different numbers of groups survived the filter
  assert traces == [(4, 4)]                            # one trace, on the fixed [groups_per_batch, G] shape


def test_user_functions_by_import_path(tmp_path, monkeypatch):
  (tmp_path / "user_rl_fns.py").write_text(textwrap.dedent('''
      import jax.numpy as jnp
      def centred(rewards, valid, *, r_max, r_min, scale=1.0):
        return jnp.where(valid, scale * (rewards - 0.5 * (r_max + r_min)), 0.0)
      def length_penalty(outputs, batch, agg):
        mask = batch["loss_mask"] > 0
        return agg(outputs["logp"] * 0.0 + 1.0, mask), {"length_penalty": agg(mask * 1.0, mask)}
      length_penalty.needs = ("logp",)
  '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  algo = algorithms.Algorithm(name="mine", advantage="user_rl_fns:centred", advantage_kwargs={"scale": 2.0},
                              objective=(objective.policy_gradient_term(),
                                         objective.Term("length", 0.1, fn="user_rl_fns:length_penalty")))
  assert json.loads(json.dumps(algo.to_dict()))["objective"]["length"]["fn"] == "user_rl_fns:length_penalty"
  fn = batch_lib.make_advantages(algo, grading.RewardConfig(), 2)
  out = fn({"rewards": np.array([1.0, 0.0], np.float32), "valid": np.ones(2, bool),
            "response_mask": np.ones((2, 3), bool)})
  np.testing.assert_allclose(out["seq_advantages"], [1.0, -1.0])
  sys.modules.pop("user_rl_fns", None)


def test_new_presets_round_trip_through_the_config_dict_and_declare_what_they_need():
  for name in ("grpo_kl_in_reward", "adaptive_entropy", "high_entropy", "gdpo", "lens", "rl_zvp", "kl_cov"):
    cfg = config.ExperimentConfig(algorithm=algorithms.PRESETS[name])
    assert config.from_config_dict(config.to_config_dict(cfg)) == cfg, name
  kl = algorithms.PRESETS["grpo_kl_in_reward"]
  assert kl.uses_reference and kl.initial_controllers() == {"kl_coef": 0.001}
  assert config.state_structure(kl)["controllers"] == ["kl_coef"]
  assert config.state_structure(algorithms.PRESETS["grpo"])["controllers"] is None
  assert algorithms.PRESETS["adaptive_entropy"].initial_controllers() == {"entropy_coef": 0.0,
                                                                          "entropy_coef_applied": 0.0}
  assert "old_entropy" in algorithms.PRESETS["high_entropy"].needs
  assert algorithms.PRESETS["grpo_unbiased_kl"].term("kl_to_reference").kwargs == (
      ("estimator", "k3"), ("importance_weighted", True))


def test_new_fields_and_terms_are_validated():
  with pytest.raises(ValueError, match="reward_kl_target"):
    algorithms.Algorithm(name="x", reward_kl_target=0.1)
  with pytest.raises(ValueError, match="reward_kl_coef"):
    algorithms.Algorithm(name="x", reward_kl_coef=-1.0)
  with pytest.raises(ValueError, match="may not be called"):
    objective.Term("kl_cov", 1.0, {"coef": 2.0})
  with pytest.raises(ValueError, match="cannot take the arguments"):
    algorithms.Algorithm(name="x", objective=(objective.Term("gspo", 1.0, {"eps": 0.1}),))
  with pytest.raises(ValueError, match="is_level"):
    rollout.RolloutConfig(is_level="row")
  with pytest.raises(ValueError, match="reject"):
    rollout.RolloutConfig(reject="always")


def test_cpu_switches_swap_pieces_by_registry_name():
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  cfg = cpu.build("smoke,advantage=pkpo,policy=cispo,term=adaptive_entropy_bonus,aggregation=token_sum")
  algo = cfg.algorithm
  assert algo.advantage == "pkpo" and dict(algo.advantage_kwargs) == {"k": 4}
  assert algo.term("policy_gradient") is None and dict(algo.term("cispo").kwargs) == {"eps_high": 0.28}
  assert algo.term("adaptive_entropy_bonus") is not None and algo.aggregation == "token_sum"
  cd = cpu.get_config("smoke,advantage=gdpo")
  assert cd.algorithm.advantage_kwargs.batch_normalize is True      # defaults present: overridable by flag
  assert cpu.build("gspo").algorithm.term("gspo") is not None
  with pytest.raises(ValueError, match="unknown switches"):
    cpu.build("smoke,polcy=gspo")
  with pytest.raises(ValueError, match="unknown objective term"):
    cpu.build("smoke,policy=nope")
