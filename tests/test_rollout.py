"""The rollout: draws of graded groups, the group filter with dynamic sampling, the fixed-shape batch, and the
pipelined path (grading on a background thread, speculative draws) equal to the sequential one."""
import dataclasses

import jax
import numpy as np
import pytest

from ngrpo_jax import advantages
from ngrpo_jax import grading
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import rollout
from ngrpo_jax.training import step as step_lib

import fake_rollout as fake


def _step(algo_name, kinds, *, pipeline=True, lookahead=1, max_refills=2, g=4, n=4, reward=grading.RewardConfig(),
          grader=None, algo=None):
  """One RL step with the fakes → (the batch the train step received, metrics, new data position)."""
  algo = algo or algorithms.get_algorithm(algo_name)
  cfg = rollout.RolloutConfig(group_size=g, groups_per_batch=n, max_prompt_len=4, max_new_tokens=6,
                              max_refills=max_refills, pipeline_grading=pipeline)
  parts, recorded = fake.parts(algo, cfg, kinds, reward=reward, grader=grader)
  state = fake.state(algo)
  state = state.replace(data_position=state.data_position + 5)
  new_state, metrics = step_lib.rl_step(state, parts, lookahead=lookahead)
  return recorded[0], metrics, int(new_state.data_position)


CASES = [
    ("ngrpo", ["all", "mixed", "none", "all", "all", "mixed", "all", "none"] * 4),   # refills
    ("ngrpo", ["all"] * 30 + ["mixed", "none"]),                                     # refills + padding
    ("ngrpo", ["mixed", "none"] * 16),                                               # the first draw fills
    ("dapo", ["all", "none", "mixed", "none"] * 8),
    ("grpo", ["all", "mixed", "none"] * 8),
]


@pytest.mark.parametrize("algo_name,kinds", CASES)
@pytest.mark.parametrize("lookahead", [1, 3])
def test_pipelined_step_equals_the_sequential_path(algo_name, kinds, lookahead):
  seq_batch, seq_m, seq_pos = _step(algo_name, kinds, pipeline=False)
  pipe_batch, pipe_m, pipe_pos = _step(algo_name, kinds, pipeline=True, lookahead=lookahead)
  assert seq_pos == pipe_pos and sorted(seq_batch) == sorted(pipe_batch)
  for k in seq_batch:
    np.testing.assert_array_equal(seq_batch[k], pipe_batch[k], err_msg=k)
  for k in seq_m:
    if not k.startswith(("time/", "tokens_per_sec/")) and k != "sampling/discarded_draws":
      assert seq_m[k] == pipe_m[k], k
  assert seq_m["sampling/discarded_draws"] == 0 and seq_m["time/grading_overlap"] == 0
  max_draws = 3 if algorithms.get_algorithm(algo_name).dynamic_sampling else 1
  # Speculation samples up to `lookahead` draws ahead; one beyond those needed is discarded, never used.
  assert pipe_m["sampling/discarded_draws"] == max(min(lookahead, max_draws) - pipe_m["sampling/draws"], 0)


def test_the_cases_exercise_refills_padding_and_speculation():
  _, m, pos = _step("ngrpo", ["all"] * 30 + ["mixed", "none"], lookahead=3)
  assert m["sampling/draws"] == 3 and m["groups/padding"] >= 2 and pos == 5 + 3 * 4
  _, m, _ = _step("ngrpo", ["all", "mixed", "none", "all", "all", "mixed", "all", "none"] * 4, lookahead=3)
  assert m["sampling/draws"] == 2 and m["sampling/discarded_draws"] == 1     # the third draw was not needed


@pytest.mark.parametrize("max_refills", [0, 20])
def test_dapo_dynamic_sampling_fills_the_batch_within_the_refill_cap(max_refills):
  kinds = ["all", "none", "mixed", "none", "all", "all", "none", "all"] * 4      # 1 in 8 useful
  batch, m, pos = _step("dapo", kinds, max_refills=max_refills)
  group_kinds = batch["group_kind"].reshape(4, 4)[:, 0]
  if max_refills == 0:
    assert m["sampling/draws"] == 1 and m["groups/padding"] > 0
  else:
    assert m["groups/kept"] == 4 and m["groups/padding"] == 0 and 1 <= m["sampling/refills"] <= max_refills
  kept = m["groups/kept"]
  assert np.all(group_kinds[:kept] == rollout.KIND_MIXED) and np.all(group_kinds[kept:] == rollout.KIND_PAD)
  assert np.all(batch["loss_mask"][kept * 4:] == 0) and np.all(batch["advantages"][kept * 4:] == 0)
  assert pos == 5 + 4 * m["sampling/draws"]


def test_ngrpo_filter_keeps_all_wrong_and_drops_all_correct_groups():
  kinds = ["all", "none", "mixed"] * 6
  batch, _, _ = _step("ngrpo", kinds, max_refills=5, n=3)
  group_kinds = batch["group_kind"].reshape(3, 4)[:, 0]
  assert rollout.KIND_ALL_CORRECT not in group_kinds and rollout.KIND_ALL_WRONG in group_kinds
  adv = batch["advantages"].reshape(3, 4, -1)
  assert np.all(adv[group_kinds == rollout.KIND_ALL_WRONG].sum(-1) < 0)      # all-wrong groups pushed down
  grpo_batch, _, _ = _step("grpo", kinds, n=3)
  gk = grpo_batch["group_kind"].reshape(3, 4)[:, 0]
  assert np.all(grpo_batch["advantages"].reshape(3, 4, -1)[gk != rollout.KIND_MIXED] == 0)


def test_ngrpo_virtual_sample_is_the_task_maximum_reward_including_the_format_bonus():
  # Regression: with a format bonus the filter used r_max = 1 + bonus while the virtual sample stayed at 1.0.
  reward = grading.RewardConfig(format_reward=0.25)
  algo = algorithms.get_algorithm("ngrpo")
  cfg = rollout.RolloutConfig(group_size=4, groups_per_batch=2, max_prompt_len=4, max_new_tokens=6)
  parts, _ = fake.parts(algo, cfg, ["mixed", "none"] * 16, reward=reward)
  stats = rollout.DrawStats()
  draws = rollout.draw_groups(parts.sample, parts.grade, parts.decode, None, parts.stream, 0, jax.random.PRNGKey(0),
                              cfg=cfg, reward=reward, pad_id=0, stats=stats)
  groups = rollout.fill(draws, parts.keep, 2, stats)
  assert reward.max_reward == 1.25 and groups.rewards.max() == pytest.approx(1.25)
  packed = parts.advantages(parts.score({"policy": None}, None, batch_lib.pack(groups, cfg, 0)))
  got = packed["seq_advantages"].reshape(2, 4)
  np.testing.assert_allclose(got, advantages.ngrpo(groups.rewards, r_virtual=1.25), rtol=1e-6, atol=1e-6)
  assert not np.allclose(got, advantages.ngrpo(groups.rewards, r_virtual=1.0), atol=1e-3)   # the old defect
  # The filter and the estimator agree: an all-correct group (every reward = 1.25) is dropped.
  assert not parts.keep(np.full((1, 4), 1.25))[0] and parts.keep(np.full((1, 4), 1.0))[0]


def test_grader_errors_surface_from_the_background_thread():
  with pytest.raises(ValueError, match="grader exploded"):
    _step("ngrpo", ["none"] * 8, grader=fake.GroupGrader(fail=True))


def test_overlong_shaping_and_truncation_mask():
  pen = grading.rewards(np.ones(4, bool), np.ones(4, bool), grading.RewardConfig(overlong_buffer=4),
                        lengths=np.array([10, 12, 14, 16]), max_new_tokens=16)
  np.testing.assert_allclose(pen, [1.0, 1.0, 0.5, 0.0])
  algo = algorithms.get_algorithm("grpo")
  cfg = rollout.RolloutConfig(group_size=4, groups_per_batch=2, max_prompt_len=4, max_new_tokens=6,
                              mask_truncated=True)
  parts, recorded = fake.parts(algo, cfg, ["mixed"] * 8, r_len=6)
  step_lib.rl_step(fake.state(algo), parts)
  b = recorded[0]
  lengths = (b["attention_mask"][:, 4:]).sum(-1)
  assert np.all(b["loss_mask"][lengths == 6] == 0) and np.all(b["loss_mask"][lengths < 6].sum(-1) == lengths[lengths < 6])


def test_groups_record_pads_and_concatenates():
  algo = algorithms.get_algorithm("grpo")
  cfg = rollout.RolloutConfig(group_size=2, groups_per_batch=3, max_prompt_len=4, max_new_tokens=5)
  parts, _ = fake.parts(algo, cfg, ["all", "none", "mixed"] * 3)
  stats = rollout.DrawStats()
  draws = rollout.draw_groups(parts.sample, parts.grade, parts.decode, None, parts.stream, 0, jax.random.PRNGKey(0),
                              cfg=dataclasses.replace(cfg, pipeline_grading=False), reward=parts.reward, pad_id=0,
                              stats=stats, max_draws=2)
  first = next(draws)
  draws.close()
  assert first.tokens.shape == (3, 2, 6) and first.rewards.shape == (3, 2) and first.valid.all()
  padded = first.select(np.array([True, False, True])).pad_to(4)
  assert padded.num_groups == 4 and list(padded.valid) == [True, True, False, False]
  assert list(padded.kinds()[2:]) == [rollout.KIND_PAD] * 2
  assert rollout.concat([first, first]).num_groups == 6
