"""Preemption: SIGTERM in the middle of an RL step → the step finishes, is checkpointed, the run stops with one
line; a rerun ends bit-identical to an uninterrupted run with every step logged once; "before RL" stays the
step-0 evaluation."""
import dataclasses
import functools
import io
import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from experiments import evaluate
from experiments.configs import cpu
from ngrpo_jax import grading
from ngrpo_jax.training import logging as logging_lib
from ngrpo_jax.training import loop
from ngrpo_jax.training import preemption

REPO = pathlib.Path(__file__).resolve().parents[1]
CHECK = grading.get_backend("sympy")


def _grade(golds, responses):
  return [CHECK(g, r, require_boxed=True) for g, r in zip(golds, responses)]


def _rl_rows(workdir):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r.get("phase") == "rl"]


def test_sigterm_mid_step_checkpoints_it_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
  cfg = dataclasses.replace(cpu.smoke(), rl_steps=4, checkpoint_every=100, tensorboard=False)
  loop.run(cfg, tmp_path / "straight", log_stream=io.StringIO(), grade_fn=_grade)

  rl_batch = cfg.rollout.batch_rows
  calls = []

  def grade_and_signal(golds, responses):           # SIGTERM while step 3's responses are being graded
    if len(golds) == rl_batch:
      calls.append(len(golds))
      if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return _grade(golds, responses)

  assert cfg.eval.batch_problems * cfg.eval.num_samples != rl_batch     # eval batches are told apart by size
  log = io.StringIO()
  with pytest.raises(preemption.Preempted) as stopped:
    loop.run(cfg, tmp_path / "cut", log_stream=log, grade_fn=grade_and_signal)
  assert stopped.value.signum == signal.SIGTERM and stopped.value.exit_code == 143
  message = stopped.value.message()
  assert "\n" not in message and message.startswith("stopped by SIGTERM after RL step 3 of 4; checkpoint ")
  assert [r["step"] for r in _rl_rows(tmp_path / "cut")] == [1, 2, 3]
  assert sorted(int(p.name) for p in (tmp_path / "cut" / "checkpoints").iterdir()) == [0, 3]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL          # handlers restored

  # A replayed step must not appear twice: pretend step 4 had been logged before the process died.
  with open(tmp_path / "cut" / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": 4, "phase": "rl", "loss": 123.0}) + "\n" + '{"step": 5, "pha')
  log = io.StringIO()
  loop.run(cfg, tmp_path / "cut", log_stream=log, grade_fn=_grade)
  assert "[resume] restored step 3" in log.getvalue()

  a, b = _rl_rows(tmp_path / "straight"), _rl_rows(tmp_path / "cut")
  assert [r["step"] for r in b] == [1, 2, 3, 4]
  for ra, rb in zip(a, b):
    for key in ("loss", "grad_norm", "reward_mean", "pg/ratio_mean", "data_position", "adv_mean"):
      assert ra[key] == rb[key], (ra["step"], key)
  for tag in ("before", "after"):
    ea = json.loads((tmp_path / "straight" / f"eval_{tag}.json").read_text())
    eb = json.loads((tmp_path / "cut" / f"eval_{tag}.json").read_text())
    assert ea["per_problem_correct"] == eb["per_problem_correct"]
  assert json.loads((tmp_path / "cut" / "eval_before.json").read_text())["settings"]["policy_step"] == 0
  _, pa, _ = evaluate.load_trainer_policy(tmp_path / "straight")
  _, pb, _ = evaluate.load_trainer_policy(tmp_path / "cut")
  import jax  # pylint: disable=g-import-not-at-top
  for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
    np.testing.assert_array_equal(x, y)


def test_resumed_run_keeps_the_step_0_baseline(tmp_path):
  # Regression: the rerun of an interrupted run evaluated the restored mid-training policy as "before RL"
  # and overwrote eval_before.json (policy_step 4 instead of 0), so summary.json's before and gain were wrong.
  cfg = dataclasses.replace(cpu.smoke(), rl_steps=2, checkpoint_every=1, tensorboard=False, export_hf=False)
  loop.run(cfg, tmp_path, log_stream=io.StringIO(), grade_fn=_grade)
  before = json.loads((tmp_path / "eval_before.json").read_text())
  summary = loop.run(dataclasses.replace(cfg, rl_steps=3), tmp_path, log_stream=io.StringIO(), grade_fn=_grade)
  assert json.loads((tmp_path / "eval_before.json").read_text()) == before
  assert summary["before"]["pass_at_k"] == before["pass_at_k"] and summary["rl_steps_done"] == 3
  assert summary["gain"]["pass@1"] == pytest.approx(summary["after"]["pass_at_k"]["1"] - before["pass_at_k"]["1"])
  # Without its evaluation, the step-0 policy (kept as checkpoint 0) is evaluated, not the restored one.
  (tmp_path / "eval_before.json").unlink()
  log = io.StringIO()
  summary = loop.run(cfg, tmp_path, log_stream=log, grade_fn=_grade)
  assert "evaluating the step-0 policy" in log.getvalue()
  redone = json.loads((tmp_path / "eval_before.json").read_text())
  assert redone["settings"]["policy_step"] == 0 and redone["per_problem_correct"] == before["per_problem_correct"]


def test_kept_metrics_lines_drop_replayed_steps_and_a_torn_last_line():
  lines = [json.dumps({"step": 1, "phase": "sft"}) + "\n", json.dumps({"step": 1, "phase": "rl"}) + "\n",
           json.dumps({"step": 2, "phase": "rl"}) + "\n", json.dumps({"step": 3, "phase": "rl"}) + "\n", '{"st']
  assert logging_lib.kept_lines(lines, 2) == lines[:3]
  assert logging_lib.kept_lines(lines, 0) == lines[:1]
  assert logging_lib.kept_lines(lines, None) == []


def test_a_second_signal_abandons_the_step_at_once():
  with preemption.Guard() as guard:
    with pytest.raises(preemption.Preempted, match="abandoned"):
      with guard.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.stop_requested()
        os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(preemption.Preempted, match="stopped by SIGINT"):  # outside a step: at once
      os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigterm_to_the_binary_exits_with_one_line_and_the_rerun_logs_each_step_once(tmp_path):
  workdir = tmp_path / "run"
  args = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
          "--config=experiments/configs/cpu.py:smoke", "--config.rl_steps=150", "--config.checkpoint_every=1000",
          "--config.export_hf=False", "--config.tensorboard=False"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  for line in proc.stdout:
    if line.startswith("[rl] step    2 "):
      proc.send_signal(signal.SIGTERM)
      break
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-2000:]
  lines = [line for line in err.splitlines() if line.strip() and not line.startswith("WARNING")]
  assert lines and lines[-1].startswith("error: stopped by SIGTERM after RL step ") and "Traceback" not in err
  stopped_at = int(lines[-1].split("after RL step ")[1].split()[0])
  assert [r["step"] for r in _rl_rows(workdir)] == list(range(1, stopped_at + 1))
  res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"[resume] restored step {stopped_at}" in res.stdout
  assert [r["step"] for r in _rl_rows(workdir)] == list(range(1, 151))
  del out
