"""Rollout filtering / dynamic sampling, resume bit-identity, HF export, presets and config overrides."""
import dataclasses
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import checkpoint
from ngrpo_jax.training import loop
from ngrpo_jax.training import rollout
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update

# ----------------------------------------------------------------------------------------------------------
# Dynamic sampling with fake sampler / grader (no model): each prompt's answer says how its group grades.


def _fake_fns(g, r_len=5):
  def generate(params, ptoks, pmask, key):
    n = ptoks.shape[0] * g
    toks = np.asarray(jax.random.randint(key, (n, r_len), 3, 9), np.int32)
    return rollout.Samples(tokens=toks, mask=np.ones((n, r_len), bool), lengths=np.full(n, r_len, np.int32),
                           truncated=np.zeros(n, bool), logp=np.full((n, r_len), -1.0, np.float32))

  def score(params, tokens, attn, value_params):
    return {"logp": jnp.full((tokens.shape[0], tokens.shape[1] - 1), -1.0),
            "entropy": jnp.ones((tokens.shape[0], tokens.shape[1] - 1))}

  def grade(texts, golds):
    correct = []
    for i, gold in enumerate(golds):
      correct.append({"all": True, "none": False, "mixed": i % 2 == 0}[gold])
    return np.array(correct), np.ones(len(golds), bool)

  return rollout.RolloutFns(generate=generate, score=score, decode=lambda ids: "x", grade=grade)


def _stream(kinds, seed=0):
  return rollout.PromptStream([{"prompt_ids": [1, 2], "answer": k} for k in kinds], seed=seed)


@pytest.mark.parametrize("max_refills", [0, 20])
def test_dapo_dynamic_sampling_fills_the_batch_within_the_refill_cap(max_refills):
  g, n = 4, 4
  cfg = rollout.RolloutConfig(group_size=g, groups_per_batch=n, max_prompt_len=4, max_new_tokens=5,
                              max_refills=max_refills)
  algo = algorithms.get_algorithm("dapo")
  stream = _stream(["all", "none", "mixed", "none", "all", "all", "none", "all"] * 4)   # 1 in 8 useful
  batch, m, pos = rollout.collect(_fake_fns(g), algo, cfg, stream, 0, jax.random.PRNGKey(0), policy_params=None)
  kinds = batch["group_kind"].reshape(n, g)[:, 0]
  if max_refills == 0:
    assert m["sampling/draws"] == 1 and m["groups/padding"] > 0
  else:
    assert m["groups/kept"] == n and m["groups/padding"] == 0
    assert 1 <= m["sampling/refills"] <= max_refills
  assert np.all(kinds[:m["groups/kept"]] == rollout.KIND_MIXED)      # DAPO keeps only mixed groups
  assert np.all(kinds[m["groups/kept"]:] == rollout.KIND_PAD)
  assert np.all(batch["loss_mask"][m["groups/kept"] * g:] == 0)       # padding carries no loss
  assert pos == n * m["sampling/draws"]


def test_ngrpo_filter_keeps_all_wrong_and_drops_all_correct_groups():
  g, n = 4, 3
  cfg = rollout.RolloutConfig(group_size=g, groups_per_batch=n, max_prompt_len=4, max_new_tokens=5, max_refills=5)
  algo = algorithms.get_algorithm("ngrpo")
  stream = _stream(["all", "none", "mixed"] * 6)
  batch, m, _ = rollout.collect(_fake_fns(g), algo, cfg, stream, 0, jax.random.PRNGKey(1), policy_params=None)
  kinds = batch["group_kind"].reshape(n, g)[:, 0]
  assert rollout.KIND_ALL_CORRECT not in kinds and rollout.KIND_ALL_WRONG in kinds
  adv = batch["advantages"].reshape(n, g, -1)
  wrong = kinds == rollout.KIND_ALL_WRONG
  assert np.all(adv[wrong].sum(-1) < 0)                                # all-wrong groups are pushed down
  grpo_batch, _, _ = rollout.collect(_fake_fns(g), algorithms.get_algorithm("grpo"), cfg, stream, 0,
                                     jax.random.PRNGKey(1), policy_params=None, ref_params="unused")
  gk = grpo_batch["group_kind"].reshape(n, g)[:, 0]
  assert np.all(grpo_batch["advantages"].reshape(n, g, -1)[gk != rollout.KIND_MIXED] == 0)


def test_overlong_shaping_and_truncation_mask():
  pen = rollout.overlong_penalty(np.array([10, 12, 14, 16]), 16, 4, 1.0)
  np.testing.assert_allclose(pen, [0.0, 0.0, -0.5, -1.0])
  assert np.all(rollout.overlong_penalty(np.array([16]), 16, 0, 1.0) == 0)


# ----------------------------------------------------------------------------------------------------------
# Resume: checkpoint round trip is bitwise and a resumed step sequence equals an uninterrupted one.

CFG = qwen2.Qwen2Config(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                        eos_token_id=2, pad_token_id=0)


def _run_steps(state, n, train_step, stream, fns, algo, rcfg):
  for _ in range(n):
    sample_key, next_rng = jax.random.split(state.rng)
    batch, _, pos = rollout.collect(fns, algo, rcfg, stream, int(state.data_position), sample_key,
                                    policy_params=state.params["policy"], ref_params=state.ref_params, pad_id=0)
    state = state.replace(rng=next_rng, data_position=jnp.asarray(pos, jnp.int32))
    state, _ = train_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  return state


def test_resume_is_bit_identical(tmp_path):
  algo = algorithms.get_algorithm("grpo", learning_rate=1e-2)     # KL on: reference params are checkpointed
  rcfg = rollout.RolloutConfig(group_size=4, groups_per_batch=2, max_prompt_len=4, max_new_tokens=5)
  ucfg = update.UpdateConfig(num_minibatches=2, logprob_chunk_size=8)
  opt, sched = state_lib.make_optimizer(state_lib.OptimConfig(), algo.learning_rate)
  fns = _fake_fns(4)
  fns.score = update.make_scorer(CFG, ucfg)
  fns.grade = lambda texts, golds: (np.arange(len(golds)) % 3 == 0, np.ones(len(golds), bool))
  train_step = update.make_train_step(CFG, algo, ucfg, opt, sched)
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  stream = _stream(["a", "b", "c"] * 3)

  fresh = lambda: state_lib.create_train_state(params, opt, 7, keep_reference=True)
  straight = jax.device_get(_run_steps(fresh(), 4, train_step, stream, fns, algo, rcfg))

  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", keep=2)
  half = _run_steps(fresh(), 2, train_step, stream, fns, algo, rcfg)
  ckpt.save(half, {"note": "test"})
  del half
  restored, meta = ckpt.restore_latest(fresh())
  assert meta["config"] == {"note": "test"} and int(restored.step) == 2
  resumed = jax.device_get(_run_steps(restored, 2, train_step, stream, fns, algo, rcfg))
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


def test_every_preset_and_ablation_builds():
  from experiments import configs  # pylint: disable=g-import-not-at-top
  for name in configs.PRESETS:
    cfg = configs.get_config(name)
    algo = cfg.build_algorithm()
    assert algo.learning_rate > 0, name
  assert configs.get_config("paper_ngrpo_7b").build_algorithm().eps_pos == 0.24
  assert configs.get_config("paper_psr_nsr_7b").build_algorithm().advantage_options["lam"] == 0.1
  for cal in (True, False):
    for keep in (True, False):
      for asym in (True, False):
        a = algorithms.ngrpo_ablation(calibration=cal, keep_all_wrong=keep, asymmetric_clip=asym)
        assert a.advantage == ("ngrpo" if cal else "grpo")
        assert a.group_filter == ("ngrpo" if keep else "dapo")
  for vr, r in (("max", 1.0), ("medium", 0.5), ("min", 0.0)):
    assert algorithms.ngrpo_ablation(virtual_reward=vr).advantage_options["r_virtual"] == r
  for vc in (1, 2, 4):
    assert algorithms.ngrpo_ablation(virtual_count=vc).advantage_options["num_virtual"] == vc
  with pytest.raises(ValueError, match="unknown --config preset"):
    configs.get_config("nope")


def test_config_overrides_and_clear_errors():
  cfg = loop.apply_overrides(loop.ExperimentConfig(), [
      "rollout.group_size=4", "algo.learning_rate=1e-4", "task.rl_difficulty=(2, 3)", "export_hf=false",
      "eval.max_new_tokens=12"])
  assert cfg.rollout.group_size == 4 and cfg.build_algorithm().learning_rate == 1e-4
  assert cfg.task.rl_difficulty == (2, 3) and cfg.export_hf is False and cfg.eval.max_new_tokens == 12
  abl = loop.apply_overrides(dataclasses.replace(cfg, algorithm="ngrpo_ablation"),
                             ["ablation.virtual_count=2", "ablation.keep_all_wrong=false"])
  assert abl.build_algorithm().advantage_options["num_virtual"] == 2
  for bad, msg in (("rollout.nope=1", "unknown config key"), ("rollout.group_size=x", "expected an int"),
                   ("algo.eps_neg=1.5", "eps_neg"), ("algo.advantage=foo", "advantage"), ("noequals", "key=value"),
                   ("rollout=3", "section")):
    with pytest.raises(ValueError, match=msg):
      loop.apply_overrides(loop.ExperimentConfig(), [bad])


def test_custom_advantage_and_loss_callables():
  calls = {}

  def my_adv(rewards):
    calls["adv"] = True
    return rewards - 0.5

  algo = dataclasses.replace(algorithms.PRESETS["grpo"], advantage_fn=my_adv)
  adv = rollout.compute_advantages(algo, np.array([[1.0, 0.0]]), 1.0)
  np.testing.assert_allclose(adv, [[0.5, -0.5]])
  assert calls["adv"]
  with pytest.raises(TypeError):
    algorithms.Algorithm(name="x", loss_fn=3)


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
  task = loop.TaskSpec(kind="jsonl", train_path=str(files[0]), eval_path=str(files[0]), template="qwen_math",
                       num_rl_prompts=5, num_eval_problems=3)
  data = loop.build_data(task, tok, 0)
  assert len(data["rl"]) == 5 and len(data["eval"]) == 3 and data["sft"] == []
  text = tok.decode(data["rl"][0]["prompt_ids"])
  assert "Please reason step by step" in text and text.endswith("<|im_start|>assistant\n")
  assert data["rl"][0]["answer"]
