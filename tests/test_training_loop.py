"""Resume bit-identity, HF export, config files and validation, the metrics writer, JSONL tasks."""
import dataclasses
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import grading
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import builders
from ngrpo_jax.training import checkpoint
from ngrpo_jax.training import config
from ngrpo_jax.training import rollout
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import step as step_lib
from ngrpo_jax.training import update

import fake_rollout as fake

# ----------------------------------------------------------------------------------------------------------
# Resume: checkpoint round trip is bitwise and a resumed step sequence equals an uninterrupted one.

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)


def _run_steps(state, n, parts):
  for _ in range(n):
    state, _ = step_lib.rl_step(state, parts)
  return state


def test_resume_is_bit_identical(tmp_path):
  algo = algorithms.get_algorithm("grpo", learning_rate=1e-2)     # KL on: reference params are checkpointed
  rcfg = rollout.RolloutConfig(group_size=4, groups_per_batch=2, max_prompt_len=4, max_new_tokens=5)
  ucfg = update.UpdateConfig(num_minibatches=2, logprob_chunk_size=8)
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(), algo.learning_rate)
  train_step = update.make_train_step(CFG, algo, ucfg, opt, sched)
  parts, _ = fake.parts(algo, rcfg, ["a", "b", "c"] * 3, train_step=train_step, r_len=5,
                        grader=lambda golds, texts: [len(t) % 3 == 0 for t in texts])
  parts.score = batch_lib.make_scorer(update.make_scorer(CFG, ucfg), algo)
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))

  fresh = lambda: state_lib.create_train_state(params, opt, 7, keep_reference=True)
  straight = jax.device_get(_run_steps(fresh(), 4, parts))

  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
  half = _run_steps(fresh(), 2, parts)
  ckpt.save(half, {"note": "test"})
  del half
  restored, meta = ckpt.restore_latest(fresh())
  assert meta["config"] == {"note": "test"} and int(restored.step) == 2
  resumed = jax.device_get(_run_steps(restored, 2, parts))
  flat_a = jax.tree_util.tree_leaves(straight)
  flat_b = jax.tree_util.tree_leaves(resumed)
  assert len(flat_a) == len(flat_b)
  for a, b in zip(flat_a, flat_b):
    np.testing.assert_array_equal(a, b)
  for _ in range(2):                                            # keep-last-N
    ckpt.save(resumed.replace(step=resumed.step + 1 + _), {})
  assert len(ckpt.all_steps()) == 2
  ckpt.close()


def test_hf_export_reloads_in_transformers_with_equal_logits(tmp_path):
  torch = pytest.importorskip("torch")
  import transformers  # pylint: disable=g-import-not-at-top
  params = qwen2.init_params(CFG, jax.random.PRNGKey(3))
  path = checkpoint.export_hf(tmp_path / "hf", CFG, params)
  model = transformers.Qwen2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
  tokens = np.array([[1, 5, 7, 3, 9, 2]], np.int32)
  ours, _ = qwen2.forward(params, CFG, jnp.asarray(tokens))
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Presets and overrides.


def test_every_config_file_preset_builds():
  from experiments import configs  # pylint: disable=g-import-not-at-top
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  from experiments.configs import paper  # pylint: disable=g-import-not-at-top
  for name in cpu.PRESETS:
    cfg = config.from_config_dict(cpu.get_config(name))
    assert cfg.algorithm.learning_rate > 0 and cfg.algorithm.term("entropy_bonus").coef == cpu.CPU_ENTROPY_COEF
  for name in paper.PRESETS:
    want = (paper.QWEN3_4B_ALGORITHMS[name[:-len("_qwen3_4b")]]() if name.endswith("_qwen3_4b")
            else algorithms.PRESETS[name])
    assert config.from_config_dict(paper.get_config(name)).algorithm == want
  abl = cpu.build("ngrpo_ablation,virtual_count=2,keep_all_wrong=False")
  assert dict(abl.algorithm.advantage_kwargs)["num_virtual"] == 2 and abl.algorithm.group_filter == "dapo"
  assert len(configs.list_configs()) == len(cpu.PRESETS) + 2 + len(paper.PRESETS)   # + switches, + ablation
  with pytest.raises(ValueError, match="unknown cpu.py config"):
    cpu.build("nope")


def test_paper_qwen3_4b_presets():
  """Zhu et al. 2025's Qwen3-4B runs: RLVR-Decomposed's run_qwen3-4b_*.sh values (experiments/configs/paper.py)."""
  from experiments.configs import paper  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.data import prompts  # pylint: disable=g-import-not-at-top
  names = {a: f"{a}_qwen3_4b" for a in ("psr", "nsr", "w_reinforce", "ppo", "grpo")}
  assert set(names.values()) <= set(paper.PRESETS)
  cfgs = {a: config.from_config_dict(paper.get_config(n)) for a, n in names.items()}
  for a, cfg in cfgs.items():
    assert cfg.name == f"paper_{a}_qwen3_4b" and cfg.model.init_from == "Qwen3-4B"
    assert cfg.task.template == "qwen3_no_thinking"
    assert (cfg.rollout.group_size, cfg.rollout.groups_per_batch, cfg.rollout.max_prompt_len,
            cfg.rollout.max_new_tokens, cfg.rollout.temperature) == (8, 1024, 1024, 31744, 1.0)
    assert cfg.optim.learning_rate == cfg.algorithm.learning_rate == 1e-6
    assert (cfg.learner.ppo_epochs, cfg.learner.num_minibatches) == (1, 4)
    assert cfg.algorithm.aggregation == "token_mean" and cfg.algorithm.term("entropy_bonus").coef == 0.001
    assert dict(cfg.algorithm.term("policy_gradient").kwargs) == {"eps_pos": 0.2, "eps_neg": 0.2}
    assert (cfg.eval.num_samples, cfg.eval.temperature, cfg.eval.top_p) == (256, 0.6, 0.95)
  assert cfgs["psr"].algorithm.advantage == "psr_only" and cfgs["nsr"].algorithm.advantage == "nsr_only"
  assert dict(cfgs["w_reinforce"].algorithm.advantage_kwargs) == {"lam": 0.1}
  for a in ("psr", "nsr", "w_reinforce"):
    assert not cfgs[a].algorithm.uses_reference                     # kl_coef=0.0
  assert cfgs["grpo"].algorithm.term("kl_to_reference").coef == 0.001
  assert dict(cfgs["grpo"].algorithm.term("kl_to_reference").kwargs) == {"estimator": "k3"}
  assert cfgs["ppo"].algorithm.reward_kl_coef == 0.001 and cfgs["ppo"].algorithm.uses_critic
  assert dict(cfgs["ppo"].algorithm.advantage_kwargs) == {"gamma": 1.0, "lam": 1.0}
  prompt = prompts.format_prompt("What is 1+1?", None, "qwen3_no_thinking")
  assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 1+1?\n"
                    "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n\n</think>\n")


def test_no_config_field_is_shadowed_by_a_config_dict_attribute():
  # Regression: a section called `update` was unreachable from the command line (ConfigDict.update is a method).
  import ml_collections  # pylint: disable=g-import-not-at-top

  def walk(cd, prefix=""):
    for key in cd.keys():
      assert not hasattr(ml_collections.ConfigDict, key), f"{prefix}{key} shadows ConfigDict.{key}"
      if isinstance(cd[key], ml_collections.ConfigDict):
        walk(cd[key], f"{prefix}{key}.")

  for name in ("default", "ppo"):
    from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
    walk(cpu.get_config(name))


def test_config_validation_errors_name_the_field():
  base = config.ExperimentConfig()
  with pytest.raises(ValueError, match="unknown config keys \\['nope'\\]"):
    config.from_dict({**config.to_dict(base), "nope": 1})
  with pytest.raises(ValueError, match="unknown config keys"):
    config.from_dict({**config.to_dict(base), "rollout": {**config.to_dict(base.rollout), "grup_size": 4}})
  with pytest.raises(ValueError, match="divisible"):
    config.validate_config(dataclasses.replace(base, learner=update.UpdateConfig(num_minibatches=3)))
  with pytest.raises(ValueError, match="unknown grading backend 'nope'"):
    config.validate_config(dataclasses.replace(base, grading_backend="nope"))
  with pytest.raises(ValueError, match="overlong_buffer"):
    config.validate_config(dataclasses.replace(base, reward=grading.RewardConfig(overlong_buffer=64)))


@pytest.mark.parametrize("task,match", [
    (config.TaskSpec(kind="csv"), "task.kind must be 'synthetic' or 'jsonl', got 'csv'"),
    (config.TaskSpec(template="alpaca"), "task.template must be one of"),
    (config.TaskSpec(num_eval_problems=0), "task.num_eval_problems must be an int >= 1, got 0"),
    (config.TaskSpec(rl_difficulty=(0.5, 2.0)), r"task.rl_difficulty=\(0.5, 2.0\): "),
    (config.TaskSpec(eval_path="x.jsonl"), "task.eval_path='x.jsonl' does not apply to task.kind='synthetic'"),
    (config.TaskSpec(kind="jsonl", train_path="t.jsonl"), "task.kind='jsonl' needs task.eval_path"),
])
def test_bad_task_values_are_named(task, match):
  # Regression: these raised later, from deep inside the data builders (or were silently ignored).
  with pytest.raises(ValueError, match=match):
    config.validate_config(dataclasses.replace(config.ExperimentConfig(), task=task))


def test_settings_the_task_ignores_are_warned_about_and_no_warm_start_is_allowed():
  jsonl = config.TaskSpec(kind="jsonl", train_path="t.jsonl", eval_path="e.jsonl", rl_difficulty=(2.0, 3.0))
  cfg = dataclasses.replace(config.ExperimentConfig(), task=jsonl)
  assert config.inapplicable_keys(cfg) == ["task.rl_difficulty, sft.* do(es) not apply to task.kind='jsonl' (no "
                                           "synthetic problems, no warm-start data) and are ignored"]
  no_sft = dataclasses.replace(config.ExperimentConfig(), sft=dataclasses.replace(config.ExperimentConfig().sft,
                                                                                 steps=0))
  config.validate_config(no_sft)                    # refused before: "needs a warm-start (sft.steps >= 1)"
  assert [w.split(":")[0] for w in config.inapplicable_keys(no_sft)] == ["sft.steps=0"]
  assert config.inapplicable_keys(config.ExperimentConfig()) == []


def test_metrics_writer(tmp_path):
  from ngrpo_jax.training import logging as logging_lib  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  w = logging_lib.MetricsWriter(tmp_path, stream=out)
  w.write(1, {"accuracy": 0.5, "pg/clip_frac_pos": np.float32(0.1), "sampling/refills": 2}, phase="rl")
  w.close()
  line = out.getvalue()
  assert "acc 0.500" in line and "refill 2" in line
  rec = (tmp_path / "metrics.jsonl").read_text().strip()
  assert '"accuracy": 0.5' in rec
  assert list((tmp_path / "tb").iterdir())


@pytest.mark.needs_shared
def test_jsonl_task_builds_prompts_with_the_qwen_math_template(shared_dir):
  from ngrpo_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  files = sorted((shared_dir / "data" / "amc23").glob("*.jsonl"))
  if not files:
    pytest.skip("no amc23 JSONL in ../shared/data")
  tok = tokenizer_lib.build_tokenizer()
  task = config.TaskSpec(kind="jsonl", train_path=str(files[0]), eval_path=str(files[0]), template="qwen_math",
                       num_rl_prompts=5, num_eval_problems=3)
  data = builders.build_data(task, tok, 0)
  assert len(data["rl"]) == 5 and len(data["eval"]) == 3 and data["sft"] == []
  text = tok.decode(data["rl"][0]["prompt_ids"])
  assert "Please reason step by step" in text and text.endswith("<|im_start|>assistant\n")
  assert data["rl"][0]["answer"]


# ----------------------------------------------------------------------------------------------------------
# A researcher's own estimator and loss term through the whole loop (the README example).


def _plugin_run(workdir, rl_steps):
  from experiments.examples import ngrpo_p90  # pylint: disable=g-import-not-at-top  (registers the functions)
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = config.from_config_dict(ngrpo_p90.get_config("smoke"))
  cfg = dataclasses.replace(cfg, rl_steps=rl_steps, checkpoint_every=1, export_hf=False, tensorboard=False,
                            eval=dataclasses.replace(cfg.eval, num_samples=2))
  grader = lambda golds, texts: [len(t) % 3 == 0 for t in texts]
  loop.run(cfg, workdir, log_stream=io.StringIO(), grade_fn=grader)
  rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows if r.get("phase") == "rl"}


def test_custom_advantage_and_loss_term_run_checkpoint_and_resume_bit_identically(tmp_path):
  # Regression: a custom advantage_fn landed in the checkpoint's JSON metadata (a callable is not JSON).
  straight = _plugin_run(tmp_path / "a", 3)
  assert "loss/log_ratio_l2" in straight[1] and straight[1]["loss/log_ratio_l2"] >= 0
  saved = json.loads((tmp_path / "a" / "config.json").read_text())
  assert saved["algorithm"]["advantage"] == "ngrpo_p90"
  assert saved["algorithm"]["objective"]["log_ratio_l2"] == {"coef": 0.1}
  _plugin_run(tmp_path / "b", 2)
  resumed = _plugin_run(tmp_path / "b", 3)
  for key in ("loss", "loss/log_ratio_l2", "grad_norm", "adv_mean", "reward_mean", "data_position"):
    assert straight[3][key] == resumed[3][key], key
