"""The whole training loop as 2 ``jax.distributed`` processes × 4 virtual CPU devices on localhost (sampling,
grading, dynamic sampling, checkpoints, evaluations, export): it equals the one-process run on 8 devices; a
SIGTERM to both processes stops them at the same RL step and the rerun resumes with each step logged once
(only process 0 writes); a process that dies makes the other exit with one error line instead of hanging.
Slow (several binary runs); every wait is bounded."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
MESH = "data=2,fsdp=4"
ARGS = ("--config=experiments/configs/cpu.py:dapo", "--config.model.hidden_size=32",
        "--config.model.intermediate_size=64", "--config.model.num_hidden_layers=1",
        "--config.model.num_attention_heads=2", "--config.model.num_key_value_heads=1",
        "--config.task.num_sft_examples=64", "--config.task.num_rl_prompts=64", "--config.task.num_eval_problems=8",
        "--config.sft.steps=10", "--config.sft.batch_size=8", "--config.sft.max_len=72",
        "--config.rollout.group_size=4", "--config.rollout.groups_per_batch=4", "--config.rollout.max_new_tokens=32",
        "--config.rollout.max_prompt_len=12", "--config.rollout.max_refills=1", "--config.learner.ppo_epochs=1",
        "--config.eval.num_samples=4", "--config.eval.batch_problems=8",
        "--config.tensorboard=False", f"--config.mesh={MESH}")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return env


def _launch(workdir, log_dir, *extra, tag="run"):
  port = _free_port()
  procs = []
  for pid in range(2):
    log = open(log_dir / f"{tag}{pid}.log", "w")
    procs.append((subprocess.Popen(
        [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *ARGS, *extra,
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"],
        cwd=REPO, env=_env(4), stdout=log, stderr=subprocess.STDOUT, text=True), log))
  return procs


def _wait(procs, timeout=TIMEOUT_S):
  try:
    return [p.wait(timeout=timeout) for p, _ in procs]
  finally:
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()


def _wait_for_line(path, prefix, timeout=TIMEOUT_S):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if path.exists() and any(line.startswith(prefix) for line in path.read_text().splitlines()):
      return
    time.sleep(0.2)
  raise AssertionError(f"{prefix!r} never appeared in {path}:\n{path.read_text()[-3000:]}")


def _rl_rows(workdir):
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r.get("phase") == "rl"]


def test_two_processes_equal_one_and_survive_sigterm_and_resume(tmp_path):
  steps = ("--config.rl_steps=6", "--config.checkpoint_every=1000")
  one = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'one'}", *ARGS, *steps],
                       cwd=REPO, env=_env(8), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert one.returncode == 0, one.stderr[-3000:]

  procs = _launch(tmp_path / "two", tmp_path, *steps, tag="cut")
  _wait_for_line(tmp_path / "cut0.log", "[rl] step    2 ")
  for p, _ in procs:                                       # a scheduler signals every process of the job
    p.send_signal(signal.SIGTERM)
  codes = _wait(procs)
  logs = [(tmp_path / f"cut{i}.log").read_text() for i in range(2)]
  assert codes == [143, 143], "\n".join(log[-2000:] for log in logs)
  stops = [[line for line in log.splitlines() if line.startswith("error: stopped by SIGTERM")] for log in logs]
  assert all(len(s) == 1 for s in stops) and stops[0] == stops[1], stops   # the same step on both processes
  stopped_at = int(stops[0][0].split("after RL step ")[1].split()[0])
  assert [r["step"] for r in _rl_rows(tmp_path / "two")] == list(range(1, stopped_at + 1))

  codes = _wait(_launch(tmp_path / "two", tmp_path, *steps, tag="resume"))
  text = "\n".join((tmp_path / f"resume{i}.log").read_text()[-2000:] for i in range(2))
  assert codes == [0, 0], text
  assert f"[resume] restored step {stopped_at}" in (tmp_path / "resume0.log").read_text()
  a, b = _rl_rows(tmp_path / "one"), _rl_rows(tmp_path / "two")
  assert [r["step"] for r in b] == list(range(1, 7))                        # each step once: only process 0 writes
  for ra, rb in zip(a, b):
    for key in ("loss", "grad_norm", "reward_mean", "data_position", "sampling/draws"):
      assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), (ra["step"], key)   # cross-process all-reduce order
  for tag in ("before", "after"):
    ea = json.loads((tmp_path / "one" / f"eval_{tag}.json").read_text())
    eb = json.loads((tmp_path / "two" / f"eval_{tag}.json").read_text())
    assert ea["per_problem_correct"] == eb["per_problem_correct"]
  assert (tmp_path / "two" / "hf_export" / "model.safetensors").is_file()


def test_a_dead_process_makes_the_other_exit_with_one_line(tmp_path):
  procs = _launch(tmp_path / "run", tmp_path, "--config.rl_steps=400", "--config.checkpoint_every=1000", tag="p")
  _wait_for_line(tmp_path / "p0.log", "[rl] step    2 ")
  procs[1][0].kill()                                          # process 1 dies (SIGKILL: no chance to clean up)
  t0 = time.time()
  codes = _wait(procs, timeout=120)
  log = (tmp_path / "p0.log").read_text()
  assert codes[0] == 3 and time.time() - t0 < 60, log[-3000:]
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "another process of this run stopped" in errors[0], log[-3000:]
  assert "Check failure stack trace" not in log
