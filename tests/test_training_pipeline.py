"""The RL step as a pipeline: XLA compile counting, the per-phase time breakdown, and a smoke run whose
background grading changes no number (the rollout-level equivalence is in test_rollout.py)."""
import dataclasses
import io
import json
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax.training import breakdown
from ngrpo_jax.training import compile_counter
from ngrpo_jax.training import loop

# ----------------------------------------------------------------------------------------------------------
# CompileCounter.


def test_compile_counter_counts_each_new_signature_once_and_unregisters():
  @jax.jit
  def probe(x):
    return jnp.sin(x) * 2.0

  with compile_counter.CompileCounter() as counter, compile_counter.CompileCounter() as inner:
    probe(np.ones(3, np.float32))
    assert counter.count == 1 and counter.names() == {"jit(probe)": 1} and counter.seconds > 0
    probe(np.zeros(3, np.float32))                     # same shape and dtype: cached, nothing compiled
    assert counter.count == 1
    probe(np.ones(4, np.float32))                      # a new shape compiles again
    probe(np.ones(4, np.int32))                        # so does a new dtype
    assert counter.count == 3 and counter.names(since=1) == {"jit(probe)": 2}
    assert inner.count == counter.count                # every open counter sees the same events
  probe(np.ones(5, np.float32))                        # compiled after the scope closed: not counted
  assert counter.count == 3 and [n for n, _ in counter.events] == ["jit(probe)"] * 3


def test_compile_counter_errors():
  with pytest.raises(TypeError, match="event"):
    compile_counter.CompileCounter(event="")
  counter = compile_counter.CompileCounter()
  with counter:
    with pytest.raises(RuntimeError, match="already open"):
      counter.__enter__()
  counter.close()                                      # idempotent


# ----------------------------------------------------------------------------------------------------------
# Breakdown arithmetic.


def test_breakdown_phases_shares_and_warmup_split():
  m = {"time/step": 2.0, "time/sampling": 0.5, "time/grading": 0.3, "time/grading_wait": 0.1,
       "time/scoring": 0.2, "time/update": 1.0}
  ph = breakdown.step_phases(m)
  assert ph["other"] == pytest.approx(0.2) and ph["grading_overlap"] == pytest.approx(0.2)
  sh = breakdown.shares(ph)
  assert sum(sh.values()) == pytest.approx(1.0) and sh["update"] == pytest.approx(0.5)
  acc = breakdown.BreakdownAccumulator(warmup_steps=1)
  acc.add({**m, "time/step": 10.0, "time/update": 8.5}, compiles=40, compile_seconds=7.0)
  for _ in range(3):
    acc.add(m, compiles=0)
  acc.add(m, compiles=1, compiled_names={"jit(f)": 1})
  s = acc.summary()
  assert s["all"]["steps"] == 5 and s["after_warmup"]["steps"] == 4
  assert s["after_warmup"]["seconds_per_step"]["update"] == pytest.approx(1.0)
  assert s["after_warmup"]["grading_hidden_frac"] == pytest.approx(2 / 3)
  assert s["compiles"] == {"warmup_steps": 1, "warmup": 40, "after_warmup": 1, "warmup_seconds": 7.0,
                           "after_warmup_seconds": 0.0, "after_warmup_by_function": {"jit(f)": 1}}
  assert "1 after (jit(f)×1)" in breakdown.format_summary(s)
  with pytest.raises(ValueError, match="time/step"):
    breakdown.step_phases({"time/update": 1.0})
  with pytest.raises(ValueError, match="warmup_steps"):
    breakdown.BreakdownAccumulator(-1)


# ----------------------------------------------------------------------------------------------------------
# The loop: a smoke run compiles nothing after its warm-up step, the pipeline changes no number, and a
# deliberate new shape inside a step is caught as a recompilation.


def _loop_grader(probe_on_rl_call=None):
  """A deterministic per-response grader (answers divisible by 3 always correct: some groups are dropped by
  NGRPO's filter, so steps refill); optionally compiles a new shape on its n-th RL-sized call."""
  rl_calls = [0]

  @jax.jit
  def probe(x):
    return x + 1

  def grade(golds, responses):
    time.sleep(0.01)
    if len(responses) == 16:                           # RL draw (4 prompts x G=4); evaluation batches are 32
      rl_calls[0] += 1
      if rl_calls[0] == probe_on_rl_call:
        probe(np.zeros(rl_calls[0], np.float32))
    return [types.SimpleNamespace(equivalent=int(g) % 3 == 0 or len(r) % 2 == 0, boxed=True,
                                  pred_answer="x" if "\\boxed{" in r else None) for r, g in zip(responses, golds)]

  return grade


def _smoke_run(workdir, pipeline, probe_on_rl_call=None):
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  cfg = cpu.smoke()
  cfg = dataclasses.replace(cfg, rl_steps=5, tensorboard=False, checkpoint_every=100,
                            rollout=dataclasses.replace(cfg.rollout, pipeline_grading=pipeline))
  out = io.StringIO()
  summary = loop.run(cfg, workdir, log_stream=out, grade_fn=_loop_grader(probe_on_rl_call))
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return summary, [r for r in rows if r.get("phase") == "rl"], out.getvalue()


def test_smoke_run_no_recompiles_after_warmup_and_pipeline_is_bit_identical(tmp_path):
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  seq, seq_rows, seq_log = _smoke_run(tmp_path / "seq", pipeline=False)
  pipe, pipe_rows, _ = _smoke_run(tmp_path / "pipe", pipeline=True, probe_on_rl_call=4)

  c = seq["rl_breakdown"]["compiles"]
  assert c["warmup_steps"] == 1 and c["warmup"] > 0 and c["after_warmup"] == 0, c
  assert [r["compiles/step"] for r in seq_rows][1:] == [0] * 4
  assert "0 after" in seq_log and "[rl] step breakdown over 4 steps (after warm-up)" in seq_log
  # The probe's new shape, compiled on the grading thread in a later step, is the only recompilation.
  assert pipe["rl_breakdown"]["compiles"]["after_warmup_by_function"] == {"jit(probe)": 1}
  assert sum(r["compiles/step"] for r in pipe_rows[1:]) == 1

  # Steps refilled (so the pipeline speculated) and every non-timing number is the same.
  assert any(r["sampling/draws"] > 1 for r in seq_rows)
  assert sum(r["time/grading_overlap"] for r in seq_rows) == 0
  assert len(seq_rows) == len(pipe_rows) == 5
  for a, b in zip(seq_rows, pipe_rows):
    for k in a:
      if not k.startswith(("time/", "share/", "tokens_per_sec/", "compiles/")) and k != "sampling/discarded_draws":
        assert a[k] == b[k], (a["step"], k)
  params_a = load_file(str(tmp_path / "seq" / "hf_export" / "model.safetensors"))
  params_b = load_file(str(tmp_path / "pipe" / "hf_export" / "model.safetensors"))
  assert sorted(params_a) == sorted(params_b)
  for k in params_a:
    np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)
  assert seq["after"]["pass_at_k"] == pipe["after"]["pass_at_k"]

  # groups.jsonl: every drawn group of every step (filtered ones included), consistent with the step metrics.
  groups = [json.loads(line) for line in (tmp_path / "seq" / "groups.jsonl").read_text().splitlines()]
  assert [g["step"] for g in groups] == [r["step"] for r in seq_rows]
  cfg = cpu.smoke()
  for g, row in zip(groups, seq_rows):
    assert len(g["problems"]) == len(g["correct"]) == row["sampling/draws"] * cfg.rollout.groups_per_batch
    assert all(0 <= p < cfg.task.num_rl_prompts for p in g["problems"])
    correct = np.asarray(g["correct"])
    assert correct.sum() / (correct.size * cfg.rollout.group_size) == pytest.approx(row["accuracy"])
    assert np.mean(correct == 0) == pytest.approx(row["groups/all_wrong_frac"])
  # The first step draws the stream's first prompts: the seeded permutation of the pool.
  first = np.random.default_rng([cfg.seed, 0]).permutation(cfg.task.num_rl_prompts)
  assert groups[0]["problems"][:cfg.rollout.groups_per_batch] == first[:cfg.rollout.groups_per_batch].tolist()

  # The breakdown adds up: phases sum to the step time, shares to 1.
  b = pipe["rl_breakdown"]["all"]
  assert sum(b["seconds"][p] for p in breakdown.PHASES) == pytest.approx(b["seconds"]["step"], rel=1e-6)
  assert sum(b["share"].values()) == pytest.approx(1.0)
