"""End-to-end runs of ``python -m experiments.train``: the CI smoke run (e2e, ~1 minute) and, marked slow,
the full embedded default experiment and a loop-level resume that must match an uninterrupted run."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _train(workdir, *args, timeout=900):
  cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args]
  # Run the binary as a user would (`make demo`): without the 8 virtual devices conftest.py forces on this
  # process (XLA's CPU numerics, hence the warm-started policy, depend on the device set-up).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def _check_eval_outputs(workdir, tag):
  """eval_<tag>.json is the evaluation library's summary of eval_<tag>/counts.jsonl (experiments/evaluate.py's
  format): pass@k / AUC / shares recomputed from the counts with the numpy pass@k formula."""
  import math  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  ev = json.loads((workdir / f"eval_{tag}.json").read_text())
  for name in ("samples.jsonl", "counts.jsonl", "plan.json"):
    assert (workdir / f"eval_{tag}" / name).is_file(), name
  counts = [json.loads(line) for line in (workdir / f"eval_{tag}" / "counts.jsonl").read_text().splitlines()]
  c = [r["num_correct"] for r in counts]
  n = ev["num_samples"]
  assert c == ev["per_problem_correct"] and all(r["num_samples"] == n for r in counts)
  for k in range(1, n + 1):
    want = 100 * np.mean([1 - math.comb(n - ci, k) / math.comb(n, k) for ci in c])
    assert ev["pass_at_k"][str(k)] == pytest.approx(want, abs=1e-9)
  assert ev["never_solved_share"] == pytest.approx(100 * np.mean(np.asarray(c) == 0))
  assert ev["always_solved_share"] == pytest.approx(100 * np.mean(np.asarray(c) == n))
  assert ev["auc"] is not None and set(ev["ci"]) >= {"1", "auc"}
  assert ev["settings"]["require_boxed"] is True and ev["tag"] == tag
  return ev


@pytest.mark.e2e
def test_smoke_run_of_the_binary_writes_every_output(tmp_path):
  res = _train(tmp_path / "run", "--config=experiments/configs/cpu.py:smoke")
  assert res.returncode == 0, res.stderr[-3000:]
  out = tmp_path / "run"
  summary = json.loads((out / "summary.json").read_text())
  assert summary["rl_steps_done"] == 3
  for tag in ("before", "after"):
    ev = summary[tag]
    assert 0.0 <= ev["pass_at_k"]["1"] <= ev["pass_at_k"]["4"] <= 100.0
    assert ev["never_solved_share"] + ev["always_solved_share"] <= 100.0
    _check_eval_outputs(out, tag)
  assert summary["gain"]["pass@1"] == pytest.approx(summary["after"]["pass_at_k"]["1"]
                                                    - summary["before"]["pass_at_k"]["1"])
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  rl = [r for r in records if r.get("phase") == "rl"]
  assert [r["step"] for r in rl] == [1, 2, 3]
  for key in ("accuracy", "reward_mean", "groups/all_wrong_frac", "groups/all_correct_frac", "groups/mixed_frac",
              "adv_mean", "adv_std", "pg/clip_frac_pos", "pg/clip_frac_neg", "pg/approx_kl_k3", "policy_entropy",
              "response_len_mean", "grad_norm", "learning_rate", "time/sampling", "time/grading", "time/update",
              "tokens_per_sec/sampling", "format/end_token_prob", "parseable_frac", "logp_gap/mean_abs",
              "rewards/nonfinite"):
    assert key in rl[0], key
  assert "grad_share/all_wrong" in rl[0]
  assert (out / "hf_export" / "config.json").exists() and (out / "eval_before.json").exists()
  assert list((out / "tb").iterdir()) and (out / "checkpoints").is_dir()
  assert "[rl]" in res.stdout and "[done]" in res.stdout
  assert all(r["rewards/nonfinite"] == 0 for r in rl)
  assert set(summary["paired_gain"]) == {"pass@1", "pass@4"} and summary["paired_gain"]["pass@1"]["difference"] == \
      pytest.approx(summary["gain"]["pass@1"])
  res = _train(out, "--config=experiments/configs/cpu.py:smoke")                                  # a plain rerun: already finished
  assert res.returncode == 0 and "has already finished (3/3 RL steps" in res.stdout, res.stderr[-2000:]
  res = _train(out, "--config=experiments/configs/cpu.py:smoke", "--config.model.hidden_size=64")  # another model: refused, named
  assert res.returncode == 2 and "cannot resume" in res.stderr and "model.hidden_size: 32 → 64" in res.stderr


def _damaged_export(path):
  """A Hugging Face export of a tiny policy (with the task tokenizer) whose weights file lost its tail."""
  import jax  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import data  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders, checkpoint, config  # pylint: disable=g-import-not-at-top
  tok = data.build_tokenizer()
  model_config, params = builders.build_model(config.ModelSpec(hidden_size=16, intermediate_size=32,
                                                               num_hidden_layers=1, num_attention_heads=2,
                                                               num_key_value_heads=1), tok, 0)
  checkpoint.export_hf(path, model_config, jax.device_get(params), tok)
  weights = path / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-64])
  return path


@pytest.mark.e2e
def test_binary_reports_clear_errors(tmp_path):
  res = _train(tmp_path / "x", "--config=experiments/configs/cpu.py:nope")
  assert res.returncode != 0 and "unknown cpu.py config 'nope'" in res.stderr
  res = _train(tmp_path / "x", "--config=experiments/configs/cpu.py:smoke", "--config.rollout.group_size=three")
  assert res.returncode != 0 and "rollout.group_size" in res.stderr
  res = _train(tmp_path / "x", "--config=experiments/configs/cpu.py:smoke", "--config.rollout.grup_size=3")
  assert res.returncode == 2 and "grup_size does not exist" in res.stderr and "Traceback" not in res.stderr
  res = _train(tmp_path / "x", "--config=experiments/configs/cpu.py:smoke", "--config.learner.num_minibatches=3")
  assert res.returncode == 2 and "error:" in res.stderr and "divisible" in res.stderr
  (tmp_path / "a_file").write_text("")
  damaged = _damaged_export(tmp_path / "damaged_export")
  for args, message in (
      (("--config.model.init_from=" + str(damaged),), f"{damaged}/model.safetensors is not a valid safetensors file"),
      ((), "--workdir=" + str(tmp_path / "a_file") + " is a file"),
      (("--config.task.kind=csv",), "task.kind must be 'synthetic' or 'jsonl', got 'csv'"),
      (("--config.task.template=alpaca",), "task.template must be one of"),
      (("--config.task.eval_difficulty=(3.0, 2.0)",),
       "task.eval_difficulty=(3.0, 2.0): difficulty_range must have lo <= hi"),
      (("--config.task.eval_path=/tmp/x.jsonl",),
       "task.eval_path='/tmp/x.jsonl' does not apply to task.kind='synthetic'"),
      (("--config.task.kind=jsonl", "--config.task.train_path=/nonexistent.jsonl", "--config.task.eval_path=/x.jsonl"),
       "task.train_path='/nonexistent.jsonl' is not a file")):
    workdir = tmp_path / "a_file" if not args else tmp_path / "x"
    res = _train(workdir, "--config=experiments/configs/cpu.py:smoke", *args)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1 and message in errors[0], (args, res.stderr[-2000:])
    assert "Traceback" not in res.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_no_warm_start_is_a_valid_setting(tmp_path):
  res = _train(tmp_path / "run", "--config=experiments/configs/cpu.py:smoke", "--config.sft.steps=0",
               "--config.rl_steps=1", "--config.export_hf=False", "--config.tensorboard=False")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "warning: sft.steps=0" in res.stderr and "[sft]" not in res.stdout
  rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["phase"] for r in rows] == ["rl"]


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(cpu.smoke(), rl_steps=4, export_hf=False, checkpoint_every=1)
  loop.run(cfg, tmp_path / "a", log_stream=io.StringIO())
  loop.run(dataclasses.replace(cfg, rl_steps=2), tmp_path / "b", log_stream=io.StringIO())
  log = io.StringIO()
  loop.run(cfg, tmp_path / "b", log_stream=log)
  assert "[resume] restored step 2" in log.getvalue()
  a = json.loads((tmp_path / "a" / "eval_after.json").read_text())
  b = json.loads((tmp_path / "b" / "eval_after.json").read_text())
  assert a["per_problem_correct"] == b["per_problem_correct"]
  ra = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  rb = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  la = {r["step"]: r for r in ra if r.get("phase") == "rl"}
  lb = {r["step"]: r for r in rb if r.get("phase") == "rl"}
  for step in (3, 4):
    for key in ("loss", "grad_norm", "reward_mean", "pg/ratio_mean", "data_position"):
      assert la[step][key] == lb[step][key], (step, key)


@pytest.mark.slow
@pytest.mark.e2e
def test_full_default_run(tmp_path):
  """What the default guarantees on any machine/seed: it finishes within the budget, writes every output,
  logs finite metrics every step, and RL does not significantly hurt held-out pass@1 (the size of the gain
  is seed-dependent; the calibrated numbers are documented in experiments/configs/cpu.py)."""
  import math  # pylint: disable=g-import-not-at-top
  out = tmp_path / "default"
  res = _train(out, timeout=1500)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["timings_s"]["total_this_invocation"] < 900
  assert summary["rl_steps_done"] >= 1
  for tag in ("before", "after"):
    _check_eval_outputs(out, tag)
  assert (out / "hf_export" / "config.json").is_file() and list((out / "tb").iterdir())
  rl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"phase": "rl"' in line]
  assert len(rl) == summary["rl_steps_done"]
  for rec in rl:
    for key in ("loss", "grad_norm", "policy_entropy", "accuracy", "format/end_token_prob"):
      assert math.isfinite(rec[key]), (rec["step"], key)
  before, after = summary["before"], summary["after"]
  lo, hi = before["ci"]["1"]
  assert after["pass_at_k"]["1"] >= before["pass_at_k"]["1"] - (hi - lo) / 2, (before, after)
  assert after.get("answered_share", 100.0) >= 50.0        # the answer format survives RL


@pytest.mark.slow
@pytest.mark.e2e
def test_tiny_qwen3_run(tmp_path):
  """``cpu.py:ngrpo_qwen3`` (a tiny Qwen3 from scratch: q/k norms, no attention biases, head_dim 48 ≠ 128 / 4)
  runs the whole pipeline; its HF export is a Qwen3ForCausalLM that transformers loads with our logits."""
  import math  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.models import hf_checkpoint, qwen2  # pylint: disable=g-import-not-at-top
  out = tmp_path / "qwen3"
  res = _train(out, "--config=experiments/configs/cpu.py:ngrpo_qwen3", timeout=1500)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["rl_steps_done"] >= 1
  for tag in ("before", "after"):
    _check_eval_outputs(out, tag)
  rl = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"phase": "rl"' in line]
  assert len(rl) == summary["rl_steps_done"]
  for rec in rl:
    for key in ("loss", "grad_norm", "policy_entropy", "accuracy"):
      assert math.isfinite(rec[key]), (rec["step"], key)
  export = out / "hf_export"
  config, params = hf_checkpoint.load_pretrained(export)
  assert (config.model_type, config.head_dim, config.attention_bias) == ("qwen3", 48, False)
  assert params["layers"]["self_attn"]["q_norm"]["scale"].shape == (3, 48)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32,
                                                            attn_implementation="eager").eval()
  assert type(model).__name__ == "Qwen3ForCausalLM"
  tokens = np.arange(3, 3 + 12, dtype=np.int32)[None] % config.vocab_size
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  ours, _ = qwen2.forward(params, config, tokens)
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------
# The methods of docs/algorithms.md from the command line: a shared warm-started policy, then a few RL steps
# per registry name, checking that log-probs moved with the advantages (``--config.check_direction``).
# ------------------------------------------------------------------------------------------------------

NEW_ESTIMATORS = ("reinforce_pp", "reinforce_pp_baseline", "grpo_batch_std", "gdpo", "gpg", "grpo_passk",
                  "passk_training", "pkpo", "unlikeliness", "lens", "rl_zvp")
NEW_TERMS = ("gspo", "gspo_token", "gmpo", "cispo", "sapo", "dppo", "gpg", "two_sided_clip", "clip_cov", "kl_cov",
             "high_entropy_policy_gradient")


@pytest.fixture(scope="session")
def warm_policy(tmp_path_factory):
  """A smoke-sized policy warm-started long enough to solve some single-digit additions (HF export)."""
  out = tmp_path_factory.mktemp("warm") / "run"
  res = _train(out, "--config=experiments/configs/cpu.py:smoke", "--config.rl_steps=0", "--config.sft.steps=1200",
               "--config.sft.batch_size=32", "--config.model.hidden_size=64", "--config.model.intermediate_size=192",
               "--config.model.num_hidden_layers=2", "--config.tensorboard=False", "--config.task.num_eval_problems=2",
               "--config.eval.num_samples=1")
  assert res.returncode == 0, res.stderr[-3000:]
  return out / "hf_export"


def _run_method(workdir, warm, switches, *extra):
  """A few RL steps of ``smoke,<switches>`` from the warm policy; returns the RL metric records after checking
  that every step with non-zero advantages moved the advantage-weighted log-prob up."""
  res = _train(workdir, f"--config=experiments/configs/cpu.py:smoke,{switches}", f"--config.model.init_from={warm}",
               "--config.sft.steps=1", "--config.sft.learning_rate=1e-12", "--config.rl_steps=3",
               "--config.check_direction=True", "--config.rollout.groups_per_batch=8", "--config.export_hf=False",
               "--config.tensorboard=False", "--config.task.num_eval_problems=2", "--config.eval.num_samples=1",
               "--config.group_grad_norm_every=0", "--config.task.rl_difficulty=(1.0, 1.3)", *extra)
  assert res.returncode == 0, res.stderr[-3000:]
  rl = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if '"phase": "rl"' in line]
  assert [r["step"] for r in rl] == [1, 2, 3]
  moved = [r for r in rl if r["adv_std"] > 0 or r["adv_max"] != r["adv_min"]]
  assert moved, f"no step had non-zero advantages ({switches}): {[r['accuracy'] for r in rl]}"
  for r in moved:
    assert r["update/adv_logp_change"] > 0, (switches, r["step"], r["update/adv_logp_change"])
  return rl


@pytest.mark.slow
@pytest.mark.e2e
def test_new_methods_compose_from_the_command_line(tmp_path, warm_policy):
  """GDPO (reward components from the rollout) + GSPO + Skywork's adaptive entropy bonus + KL in the reward +
  top-p sampling with truncated IS and token rejection, in one run of the binary."""
  rl = _run_method(tmp_path / "run", warm_policy, "advantage=gdpo,policy=gspo,term=adaptive_entropy_bonus",
                   "--config.algorithm.reward_kl_coef=0.001", "--config.algorithm.reward_kl_target=0.01",
                   "--config.rollout.top_p=0.95", "--config.rollout.is_correction=True", "--config.rollout.reject=token")
  for key in ("mismatch/kl_k1", "mismatch/is_weight_mean", "mismatch/rejected_frac", "kl_in_reward/kl",
              "controllers/kl_coef", "controllers/entropy_coef", "loss/adaptive_entropy_bonus", "loss/gspo"):
    assert key in rl[-1], key
  assert rl[0]["kl_in_reward/kl"] == 0.0                             # the policy is the reference at step 1
  assert rl[-1]["controllers/entropy_coef"] > rl[0]["controllers/entropy_coef"] > 0   # entropy below 0.2
  assert rl[-1]["controllers/kl_coef"] != rl[0]["controllers/kl_coef"]              # the adaptive controller moved
  assert rl[0]["mismatch/ratio_mean"] < 1.0                          # π / q < 1 on a top-p nucleus


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("switches", [f"advantage={n}" for n in NEW_ESTIMATORS] + [f"policy={n}" for n in NEW_TERMS]
                         + ["term=kl_to_reference", "algorithm=grpo_unbiased_kl", "aggregation=token_sum",
                            "aggregation=seq_mean_token_sum", "aggregation=sequence_mean_token_scale"])
def test_every_new_registry_name_runs_from_the_command_line(tmp_path, warm_policy, switches):
  extra = {"term=kl_to_reference": ("--config.algorithm.objective.kl_to_reference.estimator=k3_plus",),
           # k < G = 4 (the smoke group size): with k = G every group's pass@k reward is constant.
           "advantage=passk_training": ("--config.algorithm.advantage_kwargs.k=2",),
           "advantage=pkpo": ("--config.algorithm.advantage_kwargs.k=2",)}.get(switches, ())
  _run_method(tmp_path / "run", warm_policy, switches, *extra)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("level,mode", [("sequence", "mask"), ("token", "mask")])
def test_mismatch_modes_from_the_command_line(tmp_path, warm_policy, level, mode):
  rl = _run_method(tmp_path / "run", warm_policy, "algorithm=grpo", "--config.rollout.temperature=0.9",
                   "--config.rollout.is_correction=True", f"--config.rollout.is_level={level}",
                   f"--config.rollout.is_mode={mode}", "--config.rollout.reject=geometric")
  assert all("mismatch/is_weight_mean" in r for r in rl)


@pytest.mark.slow
@pytest.mark.e2e
def test_readme_table_is_what_the_default_run_prints(tmp_path):
  """The README's headline table, cell by cell, from a fresh `python -m experiments.train` (the numbers
  depend on the machine's float rounding: this holds on the machine the README names)."""
  from experiments import check_readme  # pylint: disable=g-import-not-at-top
  res = _train(tmp_path / "default", timeout=1500)
  assert res.returncode == 0, res.stderr[-3000:]
  readme = check_readme.readme_table(check_readme.README.read_text())
  assert check_readme.differences(readme, check_readme.run_table(tmp_path / "default")) == []

