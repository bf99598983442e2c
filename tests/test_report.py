"""Tests for experiments/report.py: tables (markdown + CSV, best in bold), pass@k and training-curve PNGs."""
import csv
import io
import math
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import report
from ngrpo_jax import evaluation

REPO = pathlib.Path(__file__).resolve().parents[1]


def _write_eval(root, label, dataset, counts, n):
  summary = evaluation.summarize(np.full(len(counts), n), np.asarray(counts), num_bootstrap=200)
  summary.update(label=label, dataset=dataset, settings={"temperature": 0.6, "top_p": 0.95},
                 per_problem_correct=[int(c) for c in counts])     # as experiments/evaluate.py writes it
  root.mkdir(parents=True)
  (root / "summary.json").write_text(json.dumps(summary))
  return summary


def _write_metrics(path, steps, seed):
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    for t in range(steps):
      f.write(json.dumps({
          "step": t, "reward_mean": 0.2 + 0.5 * t / steps + 0.02 * rng.standard_normal(),
          "accuracy": 0.2 + 0.5 * t / steps, "policy_entropy": 0.8 * np.exp(-t / 30),
          "response_len_mean": 40 + 0.1 * t, "adv_mean": -0.1, "adv_std": 0.9,
          "groups/all_correct_frac": t / steps / 2, "groups/all_wrong_frac": 0.5 - t / steps / 3,
          "groups/mixed_frac": 0.5 - t / steps / 6, "time/sampling": 1.0, "note": "text is ignored"}) + "\n")
    f.write('{"step": 99, "reward_mea')  # half-written last line of a killed run


@pytest.fixture()
def dirs(tmp_path):
  rng = np.random.default_rng(0)
  math500_a = rng.integers(0, 17, size=30)
  math500_b = np.clip(math500_a + rng.integers(-3, 4, size=30), 0, 16)
  _write_eval(tmp_path / "ngrpo" / "eval" / "math500", "NGRPO", "math500", math500_a, 16)
  _write_eval(tmp_path / "ngrpo" / "eval" / "aime25", "NGRPO", "aime25", rng.integers(0, 5, size=30), 16)
  _write_eval(tmp_path / "grpo_eval", "GRPO", "math500", math500_b, 16)
  _write_metrics(tmp_path / "ngrpo" / "metrics.jsonl", 60, 1)
  return tmp_path


def test_tables_values_and_bold(dirs, tmp_path):
  evals = report.find_evaluations([str(dirs / "ngrpo"), str(dirs / "grpo_eval")])
  assert sorted((e.method, e.dataset) for e in evals) == [("GRPO", "math500"), ("NGRPO", "aime25"),
                                                          ("NGRPO", "math500")]
  group = [e for e in evals if e.dataset == "math500"]
  ks = report.table_columns(group)
  assert ks == [1, 2, 4, 8, 16]
  md = report.markdown_table("math500", group, ks)
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in md.splitlines() if line.startswith("| ") and "Method" not in line}
  for j, k in enumerate(ks + ["auc"]):
    vals = [e.summary["auc"] if k == "auc" else e.summary["pass_at_k"][str(k)] for e in group]
    best = max(round(v, 2) for v in vals)
    for e, v in zip(group, vals):
      cell = rows[e.method][j]
      assert cell.strip("*") == f"{v:.2f}"
      assert cell.startswith("**") == (round(v, 2) == best)
  table = list(csv.DictReader(io.StringIO(report.csv_table(group, ks))))
  assert [r["method"] for r in table] == [e.method for e in group]
  for r, e in zip(table, group):
    assert float(r["pass@4"]) == pytest.approx(e.summary["pass_at_k"]["4"], abs=1e-4)
    assert float(r["auc"]) == pytest.approx(e.summary["auc"], abs=1e-4)
    assert float(r["auc_ci_low"]) <= float(r["auc"]) <= float(r["auc_ci_high"])


def test_labels_override_and_duplicates(dirs):
  evals = report.find_evaluations([str(dirs / "grpo_eval"), str(dirs / "grpo_eval")], labels=["A", "A"])
  assert [e.method for e in evals] == ["A", "A (grpo_eval)"]
  with pytest.raises(ValueError, match="--labels has 1 names for 2 inputs"):
    report.find_evaluations([str(dirs / "ngrpo"), str(dirs / "grpo_eval")], labels=["x"])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    report.find_evaluations([str(dirs / "nope")])


def test_read_metrics_skips_bad_lines_and_non_numeric(dirs):
  series = report.read_metrics(dirs / "ngrpo" / "metrics.jsonl")
  assert "note" not in series and "step" not in series
  steps, values = series["accuracy"]
  np.testing.assert_array_equal(steps, np.arange(60))
  assert values[0] == pytest.approx(0.2)
  panels = report.training_panels([("run", series)])
  titles = {t: [k for _, k, _ in lines] for t, _, lines in panels}
  assert titles["Policy entropy"] == ["policy_entropy"]
  assert titles["Response length"] == ["response_len_mean"]
  assert sorted(titles["Reward and accuracy"]) == ["accuracy", "reward_mean"]
  assert sorted(titles["Advantage"]) == ["adv_mean", "adv_std"]
  assert sorted(titles["Group kinds"]) == ["groups/all_correct_frac", "groups/all_wrong_frac", "groups/mixed_frac"]
  # Missing keys: only the panels that have data are drawn.
  only = report.training_panels([("run", {"policy_entropy": series["policy_entropy"]})])
  assert [t for t, _, _ in only] == ["Policy entropy"]


def test_binary_writes_tables_and_pngs(dirs, tmp_path):
  out = tmp_path / "report"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--inputs={dirs / 'ngrpo'},{dirs / 'grpo_eval'}",
                         f"--output_dir={out}", "--ci"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "### math500" in proc.stdout and "### aime25" in proc.stdout
  for name in ("tables.md", "table_math500.csv", "table_aime25.csv", "pass_at_k_math500.png",
               "pass_at_k_aime25.png", "training_curves.png"):
    path = out / name
    assert path.is_file() and path.stat().st_size > 0, name
    if name.endswith(".png"):
      assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--inputs={tmp_path / 'missing'}",
                         f"--output_dir={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "does not exist" in proc.stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  proc = subprocess.run([sys.executable, "-m", "experiments.report", f"--inputs={empty}", f"--output_dir={out}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "no evaluation" in proc.stderr


def test_trainer_workdir_layout(tmp_path):
  """A trainer workdir: its run summary.json (no pass_at_k) is ignored, eval_after/eval_before.json per-problem
  counts become rows (pass@k recomputed = numpy reference), and SFT-phase metric lines are not plotted."""
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"task": {"kind": "synthetic"},
                                               "eval": {"temperature": 0.6, "top_p": 0.95}}))
  (run / "summary.json").write_text(json.dumps({"before": {"pass@1": 0.1}, "after": {"pass@1": 0.2}}))
  before, after = [0, 1, 2, 0, 4, 1, 0, 0], [1, 2, 3, 0, 4, 4, 0, 1]
  for tag, c in (("before", before), ("after", after)):
    (run / f"eval_{tag}.json").write_text(json.dumps({"num_samples": 4, "pass@1": 0.0, "per_problem_correct": c}))
  with open(run / "metrics.jsonl", "w") as f:
    for step in range(1, 4):
      f.write(json.dumps({"step": step, "phase": "sft", "sft/loss": 3.0, "policy_entropy": 9.0}) + "\n")
    for step in range(1, 6):
      f.write(json.dumps({"step": step, "phase": "rl", "policy_entropy": 1.0 / step}) + "\n")
  evals = report.find_evaluations([str(run)], labels=["NGRPO"])
  assert [(e.method, e.dataset) for e in evals] == [("NGRPO", "synthetic"), ("NGRPO (before RL)", "synthetic")]
  for e, c in zip(evals, (after, before)):
    for k in (1, 2, 4):
      want = 100 * np.mean([1 - math.comb(4 - ci, k) / math.comb(4, k) for ci in c])
      assert e.summary["pass_at_k"][str(k)] == pytest.approx(want)
  steps, values = report.read_metrics(run / "metrics.jsonl")["policy_entropy"]
  np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])
  np.testing.assert_allclose(values, 1.0 / np.arange(1, 6))
  assert len(report.read_metrics(run / "metrics.jsonl", phase=None)["policy_entropy"][0]) == 8
  result = report.make_report([str(run)], tmp_path / "out", labels=["NGRPO"])
  assert "| NGRPO (before RL) |" in result["markdown"]
  assert (tmp_path / "out" / "training_curves.png").is_file()


def test_auc_not_bold_when_sample_counts_differ(tmp_path):
  _write_eval(tmp_path / "a", "A", "d", [1, 2, 3], 4)
  _write_eval(tmp_path / "b", "B", "d", [1, 2, 3], 8)
  evals = report.find_evaluations([str(tmp_path / "a"), str(tmp_path / "b")])
  md = report.markdown_table("d", evals, report.table_columns(evals))
  assert "N differs" in md
  rows = [line for line in md.splitlines() if line.startswith("| A") or line.startswith("| B")]
  assert all(not row.split("|")[-2].strip().startswith("**") for row in rows)


def test_training_figure_has_one_series_per_quantity_and_clip_fractions_by_sign():
  # Regression: the entropy panel drew `entropy`, `policy_entropy` and `loss/entropy_bonus` (one quantity three
  # times) and no panel showed the clip fractions.
  steps = np.arange(1.0, 6.0)
  keys = ("entropy", "policy_entropy", "loss/entropy_bonus", "pg/clip_frac_pos", "pg/clip_frac_neg", "pg/clip_frac",
          "parseable_frac", "format/end_token_prob", "groups/all_correct_frac", "groups/all_wrong_frac",
          "groups/mixed_frac", "accuracy", "reward_mean", "response_len_mean", "response_len_max")
  series = {k: (steps, np.linspace(0.1, 0.5, 5)) for k in keys}
  panels = {t: [(k, label) for _, k, label in lines] for t, _, lines in report.training_panels([("run", series)])}
  assert panels["Policy entropy"] == [("policy_entropy", "entropy")]
  assert panels["PPO clip fraction by advantage sign"] == [("pg/clip_frac_pos", "A > 0 (upper clip)"),
                                                           ("pg/clip_frac_neg", "A < 0 (lower clip)")]
  assert panels["Answer format"] == [("parseable_frac", "parseable answers"), ("format/end_token_prob", "p(end token)")]
  assert [k for k, _ in panels["Group kinds"]] == ["groups/all_correct_frac", "groups/all_wrong_frac",
                                                  "groups/mixed_frac"]
  assert panels["Response length"] == [("response_len_mean", "mean length")]
  every = [k for lines in panels.values() for k, _ in lines]
  assert len(every) == len(set(every))                                 # no series twice
  two_runs = report.training_panels([("a", series), ("b", series)])
  assert all(len(lines) == 2 * len(panels[t]) for t, _, lines in two_runs)


def test_evaluations_with_different_settings_are_never_compared(tmp_path):
  # Regression: evaluations with different problem counts and temperatures shared one table and one "best".
  rng = np.random.default_rng(1)
  a = _write_eval(tmp_path / "a", "A", "math500", rng.integers(0, 9, 40), 8)
  _write_eval(tmp_path / "b", "B", "math500", rng.integers(0, 9, 40), 8)
  c = tmp_path / "c"
  _write_eval(c, "C", "math500", rng.integers(0, 9, 30), 8)
  summary = json.loads((c / "summary.json").read_text())
  summary["settings"]["temperature"] = 1.0
  (c / "summary.json").write_text(json.dumps(summary))
  result = report.make_report([str(tmp_path / x) for x in "abc"], tmp_path / "out")
  md = result["markdown"]
  tables = md.split("### math500")[1:]
  assert len(tables) == 2
  assert "| A |" in tables[0] and "| B |" in tables[0] and "| C |" not in tables[0]
  assert "| C |" in tables[1] and "| A |" not in tables[1]
  assert "num_problems 40 (vs 30), temperature 0.6 (vs 1.0)" in tables[0]
  assert "num_problems 30 (vs 40), temperature 1.0 (vs 0.6)" in tables[1]
  assert "**" not in tables[1].split("Paired")[0].split("\n", 4)[-1]      # a single row: nothing bold
  assert "Paired comparisons over the same 40 problems" in tables[0] and "- B − A: pass@1 " in tables[0]
  assert "Paired" not in tables[1]
  for name in ("table_math500_1.csv", "table_math500_2.csv", "pass_at_k_math500_1.png", "pass_at_k_math500_2.png"):
    assert (tmp_path / "out" / name).is_file(), name
  # Handed mixed rows directly, a table bolds nothing and says what differs.
  evals = report.find_evaluations([str(tmp_path / x) for x in "ac"])
  md = report.markdown_table("math500", evals, [1, 2])
  assert "Settings differ between rows, so no value is bold" in md and "temperature 0.6 (vs 1.0)" in md
  assert "**" not in md.replace("**Settings", "").replace(".**", "")
  del a


def test_paired_comparison_pairs_seeds_of_a_method_in_input_order():
  """Inputs with the same label are seeds: A's seeds solve c and B's c + 1 of 4 samples on every problem, so
  the seed-paired pass@1 difference is exactly +25 points; with unequal seed counts the pair is not tested."""
  rng = np.random.default_rng(0)
  counts = [rng.integers(0, 4, size=6) for _ in range(2)]
  ev = lambda m, c: report.Evaluation(m, "d", {"per_problem_correct": [int(x) for x in c], "num_samples": 4},
                                      pathlib.Path("."))
  rows = [ev("A", counts[0]), ev("A", counts[1]), ev("B", counts[0] + 1), ev("B", counts[1] + 1)]
  lines = report.paired_comparisons(rows, num_resamples=200)
  line = [l for l in lines if l.startswith("- B − A")][0]
  assert "(2 seeds)" in line and "pass@1 +25.00 [+25.00, +25.00]" in line
  lines = report.paired_comparisons(rows[:3], num_resamples=200)
  assert any("not tested (1 vs 2 seeds" in l for l in lines)
