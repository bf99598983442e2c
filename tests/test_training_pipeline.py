"""The RL step as a pipeline: XLA compile counting, grading overlapped with sampling / scoring (bit-identical to
the sequential path), and the per-phase time breakdown."""
import dataclasses
import io
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax.training import algorithms
from ngrpo_jax.training import breakdown
from ngrpo_jax.training import compile_counter
from ngrpo_jax.training import loop
from ngrpo_jax.training import rollout

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
# collect(): the pipelined path gives the sequential path's batch, with fake sampler / scorer / grader.


def _fake_fns(g, r_len=6, grade_delay=0.0, fail=False):
  def generate(params, ptoks, pmask, key):
    n = ptoks.shape[0] * g
    toks = np.asarray(jax.random.randint(key, (n, r_len), 3, 9), np.int32)
    lengths = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (n,), 1, r_len + 1), np.int32)
    mask = np.arange(r_len)[None] < lengths[:, None]
    return rollout.Samples(tokens=toks, mask=mask, lengths=lengths, truncated=lengths == r_len,
                           logp=np.where(mask, -0.5, 0.0).astype(np.float32))

  def score(params, tokens, attn, value_params):
    del params, value_params
    logp = -jnp.log1p(tokens[:, 1:].astype(jnp.float32)) * attn[:, 1:]
    return {"logp": logp, "entropy": jnp.abs(logp)}

  def grade(texts, golds):
    if grade_delay:
      time.sleep(grade_delay)
    if fail:
      raise ValueError("grader exploded")
    # Group-level answers say how a group grades; "mixed" rows depend on the response text only.
    correct = [{"all": True, "none": False}.get(gold, sum(map(int, t.split())) % 2 == 0)
               for t, gold in zip(texts, golds)]
    return np.array(correct), np.array([gold != "none" or len(t) > 3 for t, gold in zip(texts, golds)])

  return rollout.RolloutFns(generate=generate, score=score, decode=lambda ids: " ".join(map(str, ids)),
                            grade=grade)


def _stream(kinds):
  return rollout.PromptStream([{"prompt_ids": [1, 2, 3], "answer": k} for k in kinds], seed=3)


def _collect(algo_name, pipeline, expected_draws, kinds, max_refills=2, grade_delay=0.0):
  g, n = 4, 4
  cfg = rollout.RolloutConfig(group_size=g, groups_per_batch=n, max_prompt_len=4, max_new_tokens=6,
                              max_refills=max_refills, format_reward=0.1, pipeline_grading=pipeline)
  algo = algorithms.get_algorithm(algo_name)
  return rollout.collect(_fake_fns(g, grade_delay=grade_delay), algo, cfg, _stream(kinds), 5,
                         jax.random.PRNGKey(11), policy_params=None, ref_params="unused", pad_id=0,
                         expected_draws=expected_draws)


def _assert_same_rollout(a, b):
  batch_a, m_a, pos_a = a
  batch_b, m_b, pos_b = b
  assert pos_a == pos_b and sorted(batch_a) == sorted(batch_b)
  for k in batch_a:
    np.testing.assert_array_equal(batch_a[k], batch_b[k], err_msg=k)
  for k in m_a:
    if not k.startswith(("time/", "tokens_per_sec/")) and k != "sampling/discarded_draws":
      assert m_a[k] == m_b[k], k


@pytest.mark.parametrize("algo_name,kinds", [
    ("ngrpo", ["all", "mixed", "none", "all", "all", "mixed", "all", "none"] * 4),   # refills
    ("ngrpo", ["all"] * 30 + ["mixed", "none"]),               # refills + padding
    ("ngrpo", ["mixed", "none"] * 16),                                                 # first draw fills
    ("dapo", ["all", "none", "mixed", "none"] * 8),
    ("grpo", ["all", "mixed", "none"] * 8),                                           # scored during grading
])
@pytest.mark.parametrize("expected_draws", [1, 3])
def test_pipelined_collect_equals_the_sequential_path(algo_name, kinds, expected_draws):
  sequential = _collect(algo_name, False, 1, kinds)
  pipelined = _collect(algo_name, True, expected_draws, kinds)
  _assert_same_rollout(pipelined, sequential)
  m_seq, m_pipe = sequential[1], pipelined[1]
  assert m_seq["sampling/discarded_draws"] == 0 and m_seq["time/grading_overlap"] == 0
  max_draws = 3 if algorithms.get_algorithm(algo_name).dynamic_sampling else 1
  # The pipeline samples one draw ahead while expected; one beyond those needed is discarded, never used.
  ahead = min(expected_draws, max_draws) > m_pipe["sampling/draws"]
  assert m_pipe["sampling/discarded_draws"] == int(ahead)


def test_the_cases_above_exercise_refills_padding_and_speculation():
  _, m, _ = _collect("ngrpo", True, 3, ["all"] * 30 + ["mixed", "none"])
  assert m["sampling/draws"] == 3 and m["groups/padding"] >= 2
  _, m, _ = _collect("ngrpo", True, 3, ["all", "mixed", "none", "all", "all", "mixed", "all", "none"] * 4)
  assert m["sampling/draws"] == 2 and m["sampling/discarded_draws"] == 1     # the third draw was not needed


def test_grading_overlaps_with_the_speculative_draw():
  kinds = ["all"] * 30 + ["mixed", "none"]
  _, m, _ = _collect("ngrpo", True, 2, kinds, grade_delay=0.05)
  assert m["sampling/draws"] >= 2
  # Draw 1 was sampled while draw 0 was being graded: part of the grading did not block this thread.
  assert m["time/grading"] >= 0.05 * m["sampling/draws"]
  assert m["time/grading_overlap"] > 0
  assert m["time/grading_wait"] < m["time/grading"]


def test_grader_errors_surface_from_the_background_thread():
  cfg = rollout.RolloutConfig(group_size=2, groups_per_batch=2, max_prompt_len=4, max_new_tokens=6)
  with pytest.raises(ValueError, match="grader exploded"):
    rollout.collect(_fake_fns(2, fail=True), algorithms.get_algorithm("ngrpo"), cfg, _stream(["none"] * 4), 0,
                    jax.random.PRNGKey(0), policy_params=None)
  with pytest.raises(ValueError, match="expected_draws"):
    rollout.collect(_fake_fns(2), algorithms.get_algorithm("ngrpo"), cfg, _stream(["none"] * 4), 0,
                    jax.random.PRNGKey(0), policy_params=None, expected_draws=0)


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

  def grade(responses, golds):
    time.sleep(0.01)
    if len(responses) == 16:                           # RL draw (4 prompts x G=4); evaluation batches are 32
      rl_calls[0] += 1
      if rl_calls[0] == probe_on_rl_call:
        probe(np.zeros(rl_calls[0], np.float32))
    correct = [int(g) % 3 == 0 or len(r) % 2 == 0 for r, g in zip(responses, golds)]
    return np.array(correct), np.array(["\\boxed{" in r for r in responses])

  return grade


def _smoke_run(workdir, pipeline, probe_on_rl_call=None):
  from experiments import configs  # pylint: disable=g-import-not-at-top
  cfg = configs.get_config("smoke")
  cfg = dataclasses.replace(cfg, rl_steps=5, tensorboard=False, checkpoint_every=100,
                            rollout=dataclasses.replace(cfg.rollout, pipeline_grading=pipeline))
  out = io.StringIO()
  summary = loop.run(cfg, workdir, log_stream=out, grade_fn=_loop_grader(probe_on_rl_call))
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return summary, [r for r in rows if r.get("phase") == "rl"], out.getvalue()


def test_smoke_run_no_recompiles_after_warmup_and_pipeline_is_bit_identical(tmp_path):
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
  assert sum(r["time/grading_overlap"] for r in pipe_rows) > 0
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

  # The breakdown adds up: phases sum to the step time, shares to 1.
  b = pipe["rl_breakdown"]["all"]
  assert sum(b["seconds"][p] for p in breakdown.PHASES) == pytest.approx(b["seconds"]["step"], rel=1e-6)
  assert sum(b["share"].values()) == pytest.approx(1.0)
