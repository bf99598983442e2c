"""Tests for ngrpo_jax.evaluation: metrics from counts vs independent references, the loop with an injected
fake sampler / grader, resumption, and the --counts_file mode of experiments/evaluate.py."""
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ngrpo_jax import evaluation
from ngrpo_jax import grading

REPO = pathlib.Path(__file__).resolve().parents[1]


def _ref_pass_at_k(n, c, k):
  """Independent reference: 1 − C(n − c, k) / C(n, k) with exact integers."""
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _ref_auc(ks, values):
  """Independent reference: trapezoid over log2 k, normalised by the log2 range, in percent."""
  x = np.log2(np.asarray(ks, float))
  y = np.asarray(values, float)
  area = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))
  return 100.0 * area / (x[-1] - x[0])


def test_auc_ks():
  np.testing.assert_array_equal(evaluation.auc_ks(256), 2 ** np.arange(9))
  np.testing.assert_array_equal(evaluation.auc_ks(1), [1])
  np.testing.assert_array_equal(evaluation.auc_ks(6), [1, 2, 4, 6])
  with pytest.raises(ValueError, match="max_k"):
    evaluation.auc_ks(0)


@pytest.mark.parametrize("n", [8, 6])
def test_summarize_matches_hand_computation(n):
  c = np.array([0, 1, 3, n, 2, n - 1])
  s = evaluation.summarize(np.full(c.shape, n), c, num_bootstrap=200)
  for k in range(1, n + 1):
    want = 100 * np.mean([_ref_pass_at_k(n, ci, k) for ci in c])
    assert s["pass_at_k"][str(k)] == pytest.approx(want, abs=1e-10)
  ks = [1, 2, 4, 8] if n == 8 else [1, 2, 4, 6]
  assert s["auc_ks"] == ks
  curve = [np.mean([_ref_pass_at_k(n, ci, k) for ci in c]) for k in ks]
  assert s["auc"] == pytest.approx(_ref_auc(ks, curve), abs=1e-10)
  if n == 8:  # The authors' closed form for a power-of-two grid: 100 (p1 + 2 p2 + 2 p4 + p8) / 6.
    assert s["auc"] == pytest.approx(100 * (curve[0] + 2 * curve[1] + 2 * curve[2] + curve[3]) / 6)
  assert s["never_solved_share"] == pytest.approx(100 / 6)
  assert s["always_solved_share"] == pytest.approx(100 / 6)
  for name in [str(k) for k in ks] + ["auc"]:
    lo, hi = s["ci"][name]
    est = s["auc"] if name == "auc" else s["pass_at_k"][name]
    assert lo <= est + 1e-9 and est <= hi + 1e-9


def test_summarize_paper_aime_auc_shape():
  """A curve whose grid values are the paper's NGRPO AIME2025 numbers gives the paper's AUC (31.28)."""
  paper = np.array([10.90, 15.46, 20.25, 25.25, 30.08, 34.87, 40.57, 48.31, 60.00]) / 100
  assert _ref_auc(2 ** np.arange(9), paper) == pytest.approx(31.28, abs=0.005)


def test_summarize_bootstrap_ci_is_deterministic_and_shrinks_to_point():
  c = np.array([2, 2, 2, 2])
  s = evaluation.summarize(4, c, num_bootstrap=100)
  lo, hi = s["ci"]["1"]
  assert lo == pytest.approx(50.0) and hi == pytest.approx(50.0)  # identical problems: no spread
  c = np.array([0, 4, 1, 3, 2, 0, 4])
  a = evaluation.summarize(4, c, key_or_seed=3)
  b = evaluation.summarize(4, c, key_or_seed=3)
  assert a["ci"] == b["ci"]
  assert evaluation.summarize(4, c, num_bootstrap=0)["ci"] == {}


def test_load_counts_formats_and_errors(tmp_path):
  jl = tmp_path / "c.jsonl"
  jl.write_text('{"id": "a", "num_samples": 4, "num_correct": 1}\n\n{"n": 4, "c": 3}\n')
  n, c, recs = evaluation.load_counts(jl)
  np.testing.assert_array_equal(n, [4, 4])
  np.testing.assert_array_equal(c, [1, 3])
  assert recs[0]["id"] == "a"
  csv = tmp_path / "c.csv"
  csv.write_text("id,num_samples,num_correct\na,4,0\nb,4,4\n")
  n, c, _ = evaluation.load_counts(csv)
  np.testing.assert_array_equal(c, [0, 4])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluation.load_counts(tmp_path / "missing.jsonl")
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"num_samples": 4, "num_correct": 5}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:1: .*num_correct <= num_samples"):
    evaluation.load_counts(bad)
  bad.write_text('{"num_samples": 4}\n')
  with pytest.raises(ValueError, match="missing field 'num_correct'"):
    evaluation.load_counts(bad)
  bad.write_text("{oops\n")
  with pytest.raises(ValueError, match="invalid JSON"):
    evaluation.load_counts(bad)


# ----------------------------------------------------------------------------------------------------------
# The loop with injected fakes.

N = 4


def _problems(p=7):
  return [{"id": f"q{i}", "problem": f"{i}+{i}", "answer": str(2 * i)} for i in range(p)]


def _is_correct(i, j):
  """The fake policy's ground truth: problem i is solved by sample j iff (i + j) % (i + 1) == 0."""
  return (i + j) % (i + 1) == 0


def fake_sample_fn(prompts, indices, key):
  del key
  texts = []
  for prompt, i in zip(prompts, indices):
    a = int(prompt.split("+")[0])
    texts.append([f"\\boxed{{{2 * a if _is_correct(int(i), j) else 2 * a + 1}}}" for j in range(N)])
  num_tokens = np.array([[3 + j for j in range(N)] for _ in prompts])
  return evaluation.Completions(texts=texts, num_tokens=num_tokens, truncated=num_tokens > 5)


def fake_grade_fn(golds, responses):
  return [r == f"\\boxed{{{g}}}" for g, r in zip(golds, responses)]


def _expected_counts(p=7):
  return np.array([sum(_is_correct(i, j) for j in range(N)) for i in range(p)])


def test_evaluate_writes_files_and_counts(tmp_path):
  res = evaluation.evaluate(_problems(), fake_sample_fn, fake_grade_fn, tmp_path, num_samples=N,
                            prompts_per_batch=3, key=jax.random.key(0), metadata={"label": "fake"},
                            log=lambda s: None)
  np.testing.assert_array_equal(res.num_correct, _expected_counts())
  for name in ("samples.jsonl", "counts.jsonl", "summary.json", "plan.json"):
    assert (tmp_path / name).is_file(), name
  assert not (tmp_path / "shards").exists()
  samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 7 * N
  assert [(s["problem_index"], s["sample_index"]) for s in samples] == [(i, j) for i in range(7) for j in range(N)]
  counts = [json.loads(line) for line in (tmp_path / "counts.jsonl").read_text().splitlines()]
  assert [r["num_correct"] for r in counts] == list(_expected_counts())
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["label"] == "fake"
  assert summary["mean_response_tokens"] == pytest.approx(np.mean([3, 4, 5, 6]))
  assert summary["truncated_share"] == pytest.approx(25.0)  # only 6 > 5
  want = 100 * np.mean([_ref_pass_at_k(N, ci, 2) for ci in _expected_counts()])
  assert summary["pass_at_k"]["2"] == pytest.approx(want)
  # The counts file alone reproduces the summary's metrics.
  n, c, _ = evaluation.load_counts(tmp_path / "counts.jsonl")
  again = evaluation.summarize(n, c)
  assert again["pass_at_k"] == summary["pass_at_k"] and again["auc"] == summary["auc"]


def test_evaluate_resumes_without_redoing_batches(tmp_path):
  calls = []

  def failing(prompts, indices, key):
    if indices[0] >= 4:  # Dies on the third batch (problems 4, 5).
      raise KeyboardInterrupt("simulated interruption")
    calls.append(list(indices))
    return fake_sample_fn(prompts, indices, key)

  kwargs = dict(num_samples=N, prompts_per_batch=2, key=jax.random.key(0), log=lambda s: None)
  with pytest.raises(KeyboardInterrupt):
    evaluation.evaluate(_problems(), failing, fake_grade_fn, tmp_path / "run", **kwargs)
  assert calls == [[0, 1], [2, 3]]
  shards = sorted(p.name for p in (tmp_path / "run" / "shards").iterdir())
  assert shards == ["batch-000000.jsonl", "batch-000001.jsonl"]
  partial = list(evaluation.iter_samples(tmp_path / "run"))
  assert len(partial) == 4 * N

  calls.clear()

  def recording(prompts, indices, key):
    calls.append(list(indices))
    return fake_sample_fn(prompts, indices, key)

  res = evaluation.evaluate(_problems(), recording, fake_grade_fn, tmp_path / "run", **kwargs)
  assert calls == [[4, 5], [6]]
  full = evaluation.evaluate(_problems(), fake_sample_fn, fake_grade_fn, tmp_path / "full", **kwargs)
  np.testing.assert_array_equal(res.num_correct, full.num_correct)
  assert ((tmp_path / "run" / "samples.jsonl").read_text() == (tmp_path / "full" / "samples.jsonl").read_text())
  # A finished evaluation rerun does no sampling at all.
  calls.clear()
  evaluation.evaluate(_problems(), recording, fake_grade_fn, tmp_path / "run", **kwargs)
  assert not calls


def test_evaluate_refuses_different_settings(tmp_path):
  kwargs = dict(prompts_per_batch=3, key=jax.random.key(0), log=lambda s: None)
  evaluation.evaluate(_problems(), fake_sample_fn, fake_grade_fn, tmp_path, num_samples=N,
                      settings={"temperature": 0.6}, **kwargs)
  with pytest.raises(ValueError, match="different settings.*temperature"):
    evaluation.evaluate(_problems(), fake_sample_fn, fake_grade_fn, tmp_path, num_samples=N,
                        settings={"temperature": 1.0}, **kwargs)
  with pytest.raises(ValueError, match="problem_sha256"):
    evaluation.evaluate(_problems(6), fake_sample_fn, fake_grade_fn, tmp_path, num_samples=N,
                        settings={"temperature": 0.6}, **kwargs)


def test_evaluate_validates_inputs(tmp_path):
  kwargs = dict(num_samples=N, prompts_per_batch=2, key=jax.random.key(0), log=lambda s: None)
  with pytest.raises(ValueError, match="duplicate id"):
    evaluation.evaluate(_problems(2) * 2, fake_sample_fn, fake_grade_fn, tmp_path / "a", **kwargs)
  with pytest.raises(ValueError, match="num_samples must be a positive int"):
    evaluation.evaluate(_problems(), fake_sample_fn, fake_grade_fn, tmp_path / "b",
                        **{**kwargs, "num_samples": 0})
  short = lambda prompts, indices, key: evaluation.Completions(texts=[["x"]] * len(prompts))
  with pytest.raises(ValueError, match="expected 2 × 4"):
    evaluation.evaluate(_problems(), short, fake_grade_fn, tmp_path / "c", **kwargs)
  with pytest.raises(ValueError, match="grade_fn returned 1 verdicts"):
    evaluation.evaluate(_problems(), fake_sample_fn, lambda g, r: [True], tmp_path / "d", **kwargs)


def test_checker_grader_grades_with_sympy_checker():
  with grading.Grader(num_workers=1, timeout=2.0) as grader:
    results = grader(["\\frac{1}{2}", "3", "x^2"], ["so \\boxed{0.5}", "\\boxed{4}", "\\boxed{x \\cdot x}"])
  assert [r.equivalent for r in results] == [True, False, True]


def test_counts_file_mode_of_binary(tmp_path):
  """experiments/evaluate.py --counts_file reproduces hand-computed pass@k and AUC."""
  n, c = 8, [0, 0, 1, 2, 4, 7, 8, 8, 3, 5]
  counts = tmp_path / "counts.jsonl"
  counts.write_text("".join(json.dumps({"id": f"p{i}", "num_samples": n, "num_correct": ci}) + "\n"
                            for i, ci in enumerate(c)))
  out = tmp_path / "out"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--counts_file={counts}",
                         f"--output_dir={out}", "--num_bootstrap=100"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  printed = json.loads(proc.stdout.splitlines()[0])
  summary = json.loads((out / "summary.json").read_text())
  ks = [1, 2, 4, 8]
  curve = [np.mean([_ref_pass_at_k(n, ci, k) for ci in c]) for k in ks]
  for k, v in zip(ks, curve):
    assert printed["pass_at_k"][str(k)] == pytest.approx(100 * v, abs=1e-9)
    assert summary["pass_at_k"][str(k)] == pytest.approx(100 * v, abs=1e-9)
  # Hand computation: k=1 is the mean accuracy; k=8 is the share of problems solved at least once.
  assert 100 * curve[0] == pytest.approx(100 * sum(c) / (8 * len(c)))
  assert 100 * curve[3] == pytest.approx(80.0)
  assert printed["auc"] == pytest.approx(100 * (curve[0] + 2 * curve[1] + 2 * curve[2] + curve[3]) / 6)
  # Bad path: a clear usage error.
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--counts_file={tmp_path / 'nope.jsonl'}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "does not exist" in proc.stderr


def test_binary_dataset_resolution(shared_dir, tmp_path):
  from experiments import evaluate as evaluate_bin  # pylint: disable=g-import-not-at-top
  data_dir = str(pathlib.Path(shared_dir) / "data")
  problems = evaluate_bin.load_dataset("math500", data_dir=data_dir, limit=5)
  assert len(problems) == 5 and all({"id", "problem", "answer"} <= set(p) for p in problems)
  assert evaluate_bin.dataset_name("math500") == "math500"
  assert evaluate_bin.dataset_name(str(pathlib.Path(data_dir) / "amc23" / "normalized.jsonl")) == "amc23"
  syn = evaluate_bin.load_dataset("synthetic", data_dir=data_dir, synthetic_num_problems=7)
  assert len(syn) == 7 and all(p["split"] == "test" for p in syn)
  with pytest.raises(ValueError, match="no problem set 'nope'"):
    evaluate_bin.load_dataset("nope", data_dir=data_dir)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate_bin.load_dataset(str(tmp_path / "x.jsonl"), data_dir=data_dir)
  with pytest.raises(ValueError, match="--limit"):
    evaluate_bin.load_dataset("math500", data_dir=data_dir, limit=0)


@pytest.mark.parametrize("args, message", [
    ([], "--model is required"),
    (["--model=/nonexistent/model"], "--output_dir is required"),
    (["--model=/nonexistent/model", "--output_dir=OUT"], "--model /nonexistent/model does not exist"),
    (["--model=m", "--output_dir=OUT", "--synthetic_difficulty=1"], "--synthetic_difficulty must be two numbers"),
    (["--model=m", "--output_dir=OUT", "--num_samples=0"], "--num_samples must be >= 1"),
])
def test_binary_flag_errors(tmp_path, args, message):
  args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", *args], cwd=REPO,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
