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


@pytest.mark.e2e
def test_smoke_run_of_the_binary_writes_every_output(tmp_path):
  res = _train(tmp_path / "run", "--config=smoke")
  assert res.returncode == 0, res.stderr[-3000:]
  out = tmp_path / "run"
  summary = json.loads((out / "summary.json").read_text())
  assert summary["rl_steps_done"] == 3
  for tag in ("before", "after"):
    ev = summary[tag]
    assert 0.0 <= ev["pass@1"] <= ev["pass@4"] <= 1.0
    assert abs(ev["never_solved"] + ev["always_solved"]) <= 1.0
  records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  rl = [r for r in records if r.get("phase") == "rl"]
  assert [r["step"] for r in rl] == [1, 2, 3]
  for key in ("accuracy", "reward_mean", "groups/all_wrong_frac", "groups/all_correct_frac", "groups/mixed_frac",
              "adv_mean", "adv_std", "pg/clip_frac_pos", "pg/clip_frac_neg", "pg/approx_kl_k3", "policy_entropy",
              "response_len_mean", "grad_norm", "learning_rate", "time/sampling", "time/grading", "time/update",
              "tokens_per_sec/sampling", "format/end_token_prob", "parseable_frac", "logp_gap/mean_abs"):
    assert key in rl[0], key
  assert "grad_share/all_wrong" in rl[0]
  assert (out / "hf_export" / "config.json").exists() and (out / "eval_before.json").exists()
  assert list((out / "tb").iterdir()) and (out / "checkpoints").is_dir()
  assert "[rl]" in res.stdout and "[done]" in res.stdout


@pytest.mark.e2e
def test_binary_reports_clear_errors(tmp_path):
  res = _train(tmp_path / "x", "--config=nope")
  assert res.returncode != 0 and "unknown --config preset 'nope'" in res.stderr
  res = _train(tmp_path / "x", "--config=smoke", "--set", "rollout.group_size=three")
  assert res.returncode != 0 and "rollout.group_size: expected an int" in res.stderr
  res = _train(tmp_path / "x", "--config=smoke", "--set", "update.num_minibatches=3")
  assert res.returncode == 2 and "error:" in res.stderr and "divisible" in res.stderr


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from experiments import configs  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(configs.get_config("smoke"), rl_steps=4, export_hf=False, checkpoint_every=1)
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
def test_full_default_run_improves_over_the_warm_start(tmp_path):
  res = _train(tmp_path / "default", timeout=1500)
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((tmp_path / "default" / "summary.json").read_text())
  assert summary["after"]["pass@1"] > summary["before"]["pass@1"]
  assert summary["timings_s"]["total_this_invocation"] < 900
