"""The study runner (experiments.study) and its report (experiments.study_report): the synthetic task's splits
and data seed, the planning / resume / learning-rate choice, the statistics and verdict rules, and (slow) a
tiny study end to end."""
import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from experiments import study_runner as study_lib
from experiments import study_report
from experiments.configs import cpu
from ngrpo_jax.data import synthetic
from ngrpo_jax.data import tokenizer as tokenizer_lib
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import builders
from ngrpo_jax.training import config

# ----------------------------------------------------------------------------------------------------------
# The synthetic task: a validation split that leaves the test split alone, and a data seed shared by seeds.


def test_validation_split_is_disjoint_and_leaves_the_test_split_unchanged():
  test_plain = synthetic.make_dataset(5, 200, (1.0, 3.0), split="test", unique=True)
  test_with_val = synthetic.make_dataset(5, 200, (1.0, 3.0), split="test", unique=True, validation_fraction=0.1)
  assert [p["operands"] for p in test_plain] == [p["operands"] for p in test_with_val]
  val = synthetic.make_dataset(6, 300, (1.0, 3.0), split="validation", unique=True, validation_fraction=0.1)
  train = synthetic.make_dataset(7, 3000, (1.0, 3.0), validation_fraction=0.1)
  key = lambda p: tuple(sorted(p["operands"]))
  assert not {key(p) for p in val} & {key(p) for p in train}
  assert not {key(p) for p in val} & {key(p) for p in test_plain}
  pairs = [(a, b) for a in range(100) for b in range(a, 100)]
  shares = [np.mean([synthetic.split_of(a, b, 0.1, 0.1) == s for a, b in pairs]) for s in ("test", "validation")]
  assert shares == pytest.approx([0.1, 0.1], abs=0.02)
  with pytest.raises(ValueError, match="validation_fraction > 0"):
    synthetic.make_dataset(0, 3, split="validation")
  with pytest.raises(ValueError, match="must be <= 1"):
    synthetic.split_of(1, 2, 0.6, 0.5)


def test_data_seed_gives_every_run_seed_the_same_pools():
  tok = tokenizer_lib.build_tokenizer()
  task = config.TaskSpec(num_sft_examples=4, num_rl_prompts=20, num_eval_problems=10, data_seed=3,
                         validation_fraction=0.1, eval_split="validation")
  a, b = builders.build_data(task, tok, seed=0), builders.build_data(task, tok, seed=1)
  assert [p["answer"] for p in a["rl"]] == [p["answer"] for p in b["rl"]]
  assert [p["id"] for p in a["eval"]] == [p["id"] for p in b["eval"]]
  assert all(p["id"].startswith("add-validation-3003-") for p in a["eval"])
  no_seed = dataclasses.replace(task, data_seed=None)
  assert [p["answer"] for p in builders.build_data(no_seed, tok, 0)["rl"]] != [
      p["answer"] for p in builders.build_data(no_seed, tok, 1)["rl"]]
  with pytest.raises(ValueError, match="eval_split"):
    config.TaskSpec(eval_split="train")


# ----------------------------------------------------------------------------------------------------------
# Fake results: what run_one writes, with chosen numbers.


def _result(auc, *, pass1=None, entropy=(1.0, 1.0), all_correct=(0.1, 0.1), accuracy=(0.3, 0.3),
            first=(0, 0, 3), pool=(4, 0, 8), lr=1e-4, kind="main"):
  n = 4
  p = {str(k): (pass1 if pass1 is not None else auc) + 5 * math.log2(k) for k in range(1, n + 1)}
  lin = lambda ab: list(np.linspace(ab[0], ab[1], 8))
  return {"kind": kind, "learning_rate": lr, "seed": 0, "arm": "x", "algorithm": {"name": "x"},
          "eval": {"auc": auc, "pass_at_k": p, "max_k": n, "num_samples": n, "per_problem_correct": [0, 2, 4]},
          "curves": {"step": list(range(1, 9)), "policy_entropy": lin(entropy), "groups/all_correct_frac":
                     lin(all_correct), "accuracy": lin(accuracy), "groups/all_wrong_frac": lin((0.5, 0.4))},
          "first_seen": {"problems": [0, 1, 2], "first": list(first), "later": [[0, 0]] * 3},
          "pool": {"num_samples": 8, "correct": list(pool)}, "rl_steps_done": 8, "seconds": {"this_invocation": 1.0}}


def _res(**arms):
  """{arm: [result per seed]} → load_results' structure."""
  return {"base": _result(50.0), "tuning": {},
          "runs": {name: dict(enumerate(results)) for name, results in arms.items()}}


def test_mean_ci_is_the_student_t_interval():
  m, hw = study_report.mean_ci([1.0, 2.0, 3.0])
  assert m == 2.0 and hw == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
  assert study_report.mean_ci([5.0]) == (5.0, None)
  m, hw = study_report.mean_ci([2.0, 2.0, 2.0, 2.0])
  assert (m, hw) == (2.0, 0.0)


def test_verdicts_follow_the_paired_differences():
  better = _res(ngrpo=[_result(60 + d) for d in (0, 1, 2)],
                **{b: [_result(55 + d) for d in (0.5, 1, 2.2)] for b in ("ppo", "grpo", "dapo", "psr_nsr")})
  c1 = study_report.claims(better)[0]
  assert c1[0] == "C1" and c1[2] == "reproduced"
  label, cmp, verdict, _ = c1[3][0]
  assert cmp["diffs"] == pytest.approx([4.5, 5.0, 4.8]) and verdict == "reproduced"
  worse = _res(ngrpo=[_result(50 + d) for d in (0, 1, 2)],
               **{b: [_result(55 + d) for d in (0.5, 1, 2.2)] for b in ("ppo", "grpo", "dapo", "psr_nsr")})
  assert study_report.claims(worse)[0][2] == "not reproduced"
  mixed = _res(ngrpo=[_result(55 + d) for d in (3, -2, 0.5)],
               **{b: [_result(55.0)] * 3 for b in ("ppo", "grpo", "dapo", "psr_nsr")})
  assert study_report.claims(mixed)[0][2] == "inconclusive"
  only_two_arms = _res(ngrpo=[_result(60)] * 3, grpo=[_result(50)] * 3)
  assert study_report.claims(only_two_arms)[0][2] == "incomplete"
  assert study_report.claims(_res())[0][2] == "not run"


def test_claims_on_training_curves_and_the_base_model():
  res = _res(psr_nsr=[_result(50, all_correct=(0.3, 0.1 - d), accuracy=(0.5, 0.2 - d)) for d in (0, 0.01, 0.03)],
             ngrpo=[_result(50, all_correct=(0.1, 0.3 + d)) for d in (0, 0.01, 0.03)],
             nsr_only=[_result(55 + d) for d in (0, 1, 2)],
             psr_only=[_result(48 + d, pass1=60 + d) for d in (0, 0.5, 1)])
  by_id = {c[0]: c for c in study_report.claims(res)}
  assert by_id["C4"][2] == "reproduced"
  # NSR-only beats the base (AUC 50, pass@k = 50 + 5 log2 k) at every k; PSR-only's pass@1 is up (60 vs 50) but
  # its curve (pass1 + 5 log2 k with AUC 48) ... is still above the base at k = 4, so C6 is not reproduced.
  nsr = [c for c in by_id["C6"][3] if c[0].startswith("NSR-only")]
  assert nsr and all(v == "reproduced" for _, _, v, _ in nsr)
  psr_large = [c for c in by_id["C6"][3] if c[0].startswith("PSR-only") and "pass@1" not in c[0]][0]
  assert psr_large[2] == "contradicted" and by_id["C6"][2] == "not reproduced"


def test_c8_compares_the_problems_both_runs_first_saw_all_wrong():
  # Problems 0 and 1 first drawn all-wrong in both runs; after RL NGRPO solves 4/8 and 2/8 of them (mean 3/8),
  # GRPO 0/8 and 1/8 (mean 1/16); problem 2 (first drawn all-wrong by GRPO only) does not count.
  res = _res(ngrpo=[_result(50, first=(0, 0, 3), pool=(4, 2, 8))] * 2,
             grpo=[_result(50, first=(0, 0, 0), pool=(0, 1, 0))] * 2)
  label, cmp, verdict, _ = study_report._c8_cmp(res, "ngrpo", "grpo")
  assert cmp["diffs"] == pytest.approx([100 * (3 / 8 - 1 / 16)] * 2)
  assert verdict == "reproduced"     # zero spread: the interval is the point


def test_first_seen_counts_keep_a_resumed_steps_last_record(tmp_path):
  path = tmp_path / "groups.jsonl"
  lines = [{"step": 1, "problems": [3, 5], "correct": [0, 2]},
           {"step": 2, "problems": [3, 7], "correct": [1, 0]},
           {"step": 2, "problems": [3, 7], "correct": [4, 0]},       # the step replayed after a resume
           {"step": 3, "problems": [5, 3], "correct": [8, 2]}]
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  fs = study_lib.first_seen_counts(path)
  assert fs == {"problems": [3, 5, 7], "first": [0, 2, 0], "later": [[6, 2], [8, 1], [0, 0]]}


# ----------------------------------------------------------------------------------------------------------
# Planning, resume and the learning-rate choice.


def _tiny_study(tuning=True, seeds=(0, 1)):
  base = dataclasses.replace(cpu.smoke(), rl_steps=2, tensorboard=False, export_hf=True, checkpoint_every=1,
                             eval=dataclasses.replace(cpu.smoke().eval, before=False),
                             task=dataclasses.replace(cpu.smoke().task, data_seed=0, validation_fraction=0.2))
  grpo = algorithms.get_algorithm("grpo", learning_rate=1e-3)
  ngrpo = algorithms.get_algorithm("ngrpo", learning_rate=1e-3)
  arms = (study_lib.Arm("grpo", grpo, learning_rates=(1e-3, 3e-3) if tuning else ()),
          study_lib.Arm("ngrpo", ngrpo, lr_from="grpo" if tuning else None))
  return study_lib.Study(name="tiny", description="a test study", warm_start=dataclasses.replace(base, rl_steps=0),
                         base=base, arms=arms, seeds=seeds,
                         tuning=study_lib.Tuning(rl_steps=1, num_problems=4, num_samples=2) if tuning else None,
                         pool_samples=2)


def _write(directory, result):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "result.json").write_text(json.dumps(result))


def test_plan_waits_for_dependencies_and_skips_finished_runs(tmp_path):
  study = _tiny_study()
  runs = study_lib.plan(study, tmp_path)
  assert [r.kind for r in runs] == ["warm_start", "tune", "tune", "tune"] + ["main"] * 4
  assert runs[1].arm == "base" and runs[1].directory == study_lib.tune_base_dir(tmp_path)
  assert all(r.config is None for r in runs[1:])                       # nothing before the warm-start
  _write(tmp_path / "warm_start", _result(50, kind="warm_start"))
  runs = study_lib.plan(study, tmp_path)
  assert runs[0].done and all(r.config is not None for r in runs[1:4]) and all(r.config is None for r in runs[4:])
  assert runs[1].config.rl_steps == 0 and runs[1].config.task.eval_split == "validation"   # the base reference
  tune = runs[2].config
  assert tune.task.eval_split == "validation" and tune.rl_steps == 1 and tune.eval.num_samples == 2
  assert tune.model.init_from.endswith("warm_start/hf_export") and tune.sft.steps == 0
  _write(study_lib.tune_dir(tmp_path, "grpo", 1e-3), _result(40, kind="tune"))
  _write(study_lib.tune_dir(tmp_path, "grpo", 3e-3), _result(40, kind="tune"))
  assert study_lib.tuned_learning_rate(study, tmp_path, study.arm("grpo")) == 1e-3        # a tie: the smaller
  _write(study_lib.tune_dir(tmp_path, "grpo", 3e-3), _result(45, kind="tune"))
  runs = study_lib.plan(study, tmp_path)
  mains = [r for r in runs if r.kind == "main"]
  assert [r.learning_rate for r in mains] == [3e-3] * 4                # ngrpo shares grpo's tuned rate
  assert all(r.config.algorithm.learning_rate == 3e-3 and r.config.task.eval_split == "test" for r in mains)
  assert {r.config.seed for r in mains} == {0, 1}
  _write(mains[0].directory, _result(50))
  assert sum(not r.done for r in study_lib.plan(study, tmp_path)) == 4         # 3 main runs + the base reference


def test_an_arm_with_its_own_seeds_is_planned_loaded_and_counted_with_them(tmp_path):
  study = _tiny_study(tuning=False)
  study = dataclasses.replace(study, arms=(study.arms[0], dataclasses.replace(study.arms[1], seeds=(0, 1, 2, 3))))
  assert study.seeds_of(study.arm("grpo")) == (0, 1) and study.seeds_of(study.arm("ngrpo")) == (0, 1, 2, 3)
  assert study.num_runs == 6
  _write(tmp_path / "warm_start", _result(50, kind="warm_start"))
  mains = [r for r in study_lib.plan(study, tmp_path) if r.kind == "main"]
  assert [(r.arm, r.seed) for r in mains] == [("grpo", 0), ("grpo", 1)] + [("ngrpo", s) for s in range(4)]
  for r in mains:
    _write(r.directory, _result(50))
  res = study_report.load_results(study, tmp_path)
  assert sorted(res["runs"]["ngrpo"]) == [0, 1, 2, 3] and sorted(res["runs"]["grpo"]) == [0, 1]
  assert "(except ngrpo [0, 1, 2, 3])" in study_report._seed_exceptions(study)


def test_load_study_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="is not a file"):
    study_lib.load_study(str(tmp_path / "nope.py"))
  bad = tmp_path / "bad.py"
  bad.write_text("x = 1\n")
  with pytest.raises(ValueError, match="defines no get_study"):
    study_lib.load_study(str(bad))
  study = study_lib.load_study("experiments/studies/ngrpo_replication.py:reduced")
  assert study.name.endswith("reduced") and "REDUCED" in study.description
  full = study_lib.load_study("experiments/studies/ngrpo_replication.py:full")
  assert len(full.arms) == 17 and len(full.seeds) >= 3
  with pytest.raises(ValueError, match="unknown study"):
    study_lib.load_study("experiments/studies/ngrpo_replication.py:huge")


def test_compare_results_checks_each_arm_against_the_committed_interval(tmp_path):
  committed, rerun = tmp_path / "committed", tmp_path / "rerun"
  for d, auc in ((committed, (60.0, 2.0)), (rerun, (61.5, 1.0))):
    d.mkdir()
    (d / "study.json").write_text(json.dumps({"arms": {"ngrpo": {"auc": auc, "pass_at_k": {
        "1": (20.0, 1.0), "4": (40.0, 3.0)}}}}))
  ok, lines = study_report.compare_results(rerun, committed)
  assert ok and len(lines) == 4
  (rerun / "study.json").write_text(json.dumps({"arms": {"ngrpo": {"auc": (63.0, 1.0), "pass_at_k": {
      "1": (20.0, 1.0), "4": (40.0, 3.0)}}}}))
  ok, lines = study_report.compare_results(rerun, committed)
  assert not ok and any("OUTSIDE" in line for line in lines)


# ----------------------------------------------------------------------------------------------------------
# End to end (slow): a tiny study with tuning, two arms and two seeds, resumed, reported and compared.


@pytest.mark.slow
def test_tiny_study_runs_resumes_and_reports(tmp_path):
  spec = tmp_path / "tiny_study.py"
  spec.write_text("from tests import test_study\n\n\ndef get_study(arg=None):\n  return test_study._tiny_study()\n")
  cmd = [sys.executable, "-m", "experiments.study", f"--study={spec}", f"--workdir={tmp_path / 'w'}", "--parallel=2"]
  root = pathlib.Path(__file__).resolve().parent.parent
  first = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=root)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert first.stdout.count("[study] done") == 8, first.stdout
  summary = json.loads((tmp_path / "w" / "results" / "study.json").read_text())
  assert set(summary["arms"]) == {"base", "grpo", "ngrpo"} and summary["arms"]["grpo"]["auc"][1] is not None
  result = json.loads((tmp_path / "w" / "runs" / "ngrpo" / "s1" / "result.json").read_text())
  assert result["rl_steps_done"] == 2 and len(result["curves"]["step"]) == 2
  assert len(result["pool"]["correct"]) == cpu.smoke().task.num_rl_prompts
  assert set(result["first_seen"]["problems"]) <= set(range(cpu.smoke().task.num_rl_prompts))
  for name in ("report.md", "pass_at_k.png", "training_curves.png"):
    assert (tmp_path / "w" / "results" / name).exists(), name
  again = subprocess.run(cmd + [f"--compare_to={tmp_path / 'w' / 'results'}"], capture_output=True, text=True,
                         timeout=300, cwd=root)
  assert again.returncode == 0 and "[study] start" not in again.stdout, again.stdout + again.stderr
  assert "OUTSIDE" not in again.stdout and "within" in again.stdout


def test_tuning_criterion_chooses_by_pass_at_1_or_auc(tmp_path):
  study = _tiny_study()
  _write(tmp_path / "warm_start", _result(50, kind="warm_start"))
  _write(study_lib.tune_dir(tmp_path, "grpo", 1e-3), _result(45, pass1=20, kind="tune"))   # higher AUC
  _write(study_lib.tune_dir(tmp_path, "grpo", 3e-3), _result(40, pass1=25, kind="tune"))   # higher pass@1
  assert study_lib.tuned_learning_rate(study, tmp_path, study.arm("grpo")) == 1e-3
  by_pass1 = dataclasses.replace(study, tuning=dataclasses.replace(study.tuning, criterion="pass@1"))
  assert study_lib.tuned_learning_rate(by_pass1, tmp_path, by_pass1.arm("grpo")) == 3e-3
  with pytest.raises(ValueError, match="criterion"):
    study_lib.Tuning(rl_steps=1, num_problems=1, num_samples=1, criterion="reward")


def test_committed_results_restore_a_lost_workdir(tmp_path):
  """The report writes every finished run verbatim; --restore_from turns them back into finished runs."""
  study = _tiny_study()
  a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "results"
  _write(a / "warm_start", _result(50, kind="warm_start"))
  _write(study_lib.tune_base_dir(a), _result(30, kind="tune"))
  _write(study_lib.tune_dir(a, "grpo", 1e-3), _result(40, kind="tune"))
  _write(study_lib.tune_dir(a, "grpo", 3e-3), _result(45, kind="tune"))
  for arm, seed in (("grpo", 0), ("grpo", 1), ("ngrpo", 0)):
    _write(study_lib.run_dir(a, arm, seed), _result(50 + seed))
  study_report.write_report(study, a, out)
  names = sorted(p.name for p in (out / "runs").iterdir())
  assert names == ["base.json", "grpo_s0.json", "grpo_s1.json", "ngrpo_s0.json", "tune_base.json",
                   "tune_grpo_lr0.001.json", "tune_grpo_lr0.003.json"]
  restored = study_lib.restore_results(study, b, out)
  assert len(restored) == 6 and not (b / "warm_start" / "result.json").exists()   # the warm-start re-runs
  _write(b / "warm_start", _result(50, kind="warm_start"))
  assert study_lib.warm_start_matches(b, out) is True
  assert [r.done for r in study_lib.plan(study, b)] == [r.done for r in study_lib.plan(study, a)]
  assert study_lib.tuned_learning_rate(study, b, study.arm("ngrpo")) == 3e-3
  assert study_report.load_results(study, b) == study_report.load_results(study, a)
  assert study_lib.restore_results(study, b, out) == []                           # nothing left to restore
  _write(b / "warm_start", _result(51, kind="warm_start"))
  assert study_lib.warm_start_matches(b, out) is False
  (out / "runs" / "ngrpo_s1.json").write_text("{}")
  with pytest.raises(ValueError, match="not a run result"):
    study_lib.restore_results(study, b, out)


def test_study_binary_defines_its_flags_once_and_names_a_missing_one():
  root = pathlib.Path(__file__).resolve().parent.parent
  out = subprocess.run([sys.executable, "-m", "experiments.study", "--restore_from=x"], capture_output=True,
                       text=True, timeout=120, cwd=root)
  assert out.returncode == 2 and "--study and --workdir are required" in out.stderr, out.stderr[-2000:]
