"""One test per failure class of issue 14 (answers the checker once graded wrong), plus backends and corpus."""
import gzip
import hashlib
import importlib.util
import json
import pathlib
import subprocess
import sys
import time

import pytest

from ngrpo_jax import grading
from ngrpo_jax.grading import extract
from ngrpo_jax.grading import structure

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT / "benchmarks" / "data" / "checker_corpus.jsonl.gz"


@pytest.fixture(scope="module")
def pool():
  with grading.WorkerPool(2) as p:
    p.warm_up()
    yield p


def _assert_cases(pool, cases):
  results = grading.grade_batch([g for g, _, _ in cases], [p for _, p, _ in cases], pool=pool)
  wrong = [(g, p, want, r.rule, r.reason) for (g, p, want), r in zip(cases, results) if r.equivalent != want]
  assert not wrong, wrong


def test_matrices_and_vectors_are_ordered_structures(pool):
  col = "\\begin{pmatrix}7\\-2\\end{pmatrix}"  # a MATH gold: the row separator collapsed to one backslash
  _assert_cases(pool, [
      (col, "\\begin{pmatrix} 7 \\\\ -2 \\end{pmatrix}", True),
      (col, "\\begin{bmatrix}7\\\\-2\\end{bmatrix}", True),
      (col, "\\begin{pmatrix} -2 \\\\ 7 \\end{pmatrix}", False),  # reordered entries: a vector is ordered
      (col, "(7, -2)", True),  # a column vector written as a tuple
      (col, "(-2, 7)", False),
      (col, "\\begin{pmatrix} 7 & -2 \\end{pmatrix}", False),  # a row is not a column
      ("\\begin{pmatrix}1/2&3\\\\0&-\\frac{1}{4}\\end{pmatrix}",
       "\\begin{bmatrix} \\frac{1}{2} & 3 \\\\ 0 & -1/4 \\end{bmatrix}", True),
      ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", False),  # transposed
      ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", False),
      ("\\begin{pmatrix}\\sqrt{2}\\\\1\\end{pmatrix}", "\\begin{pmatrix}\\sqrt2\\\\ 1 \\end{pmatrix}", True),
      ("\\begin{pmatrix}\\sqrt{8}\\\\1\\end{pmatrix}", "\\begin{pmatrix}2\\sqrt{2}\\\\1\\end{pmatrix}", True),
      ("(1,2,3)", "(3,2,1)", False), ("(1,2,3)", "\\left( 1, 2, 3 \\right)", True),
      ("[1,2)", "(1,2)", False), ("[1,2)", "[1, 2)", True),
  ])


def test_truncated_or_malformed_answers_never_earn_the_reward(pool):
  _assert_cases(pool, [
      ("\\frac{3}{4}", "So the answer is $\\boxed{\\frac{3}{4", False),
      ("\\frac{3}{4}", "So the answer is $\\boxed{\\frac{3}{4}", False),  # the box itself never closes
      ("7", "First \\boxed{7}. Then the final answer is \\boxed{7", False),  # no fall-back to an earlier box
      ("\\frac{3}{4}", "The answer is $\\frac{3}{4", False),
      ("(1,2)", "\\boxed{(1,2}", False),
      ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\boxed{\\begin{pmatrix}1\\\\2}", False),
      ("\\{1,2\\}", "\\boxed{\\{1,2}", False),
      ("5", "\\boxed{5}}", True),  # a redundant closing brace is harmless
      ("5", "Answer: $5}$", True),
  ])
  assert extract.extract_answer("... \\boxed{\\frac{1}{2").method == "truncated"
  assert extract.incomplete_reason("\\left(1,2") is not None
  assert extract.incomplete_reason("[1,2)") is None


def test_several_boxes_form_a_multi_part_answer(pool):
  _assert_cases(pool, [
      ("-2, 1", "The solutions are $\\boxed{-2}$ and $\\boxed{1}$.", True),
      ("-2, 1", "The solutions are $\\boxed{1}$ and $\\boxed{-2}$.", True),
      ("-2, 1", "The solutions are $\\boxed{-2}$.", False),
      ("-2, 1", "$\\boxed{x=-2}$, $\\boxed{x=1}$", True),
      ("2", "\\boxed{2} \\text{ or } \\boxed{3}", False),  # hedging between two answers
      ("5", "A first try gives \\boxed{3}, which fails the check on the second condition. So \\boxed{5}.", True),
  ])


def test_equation_golds_and_chained_equalities(pool):
  _assert_cases(pool, [
      ("x^2+y^2=25", "\\boxed{25}", False),  # an equation is not its right-hand side
      ("10x-4y-5z-20=0", "\\boxed{0}", False),
      ("x^2+y^2=25", "\\boxed{y^2 + x^2 = 25}", True),
      ("5", "\\boxed{x = 2+3 = 5}", True),
      ("5", "\\boxed{x = 5 = 6}", False),
      ("5", "\\boxed{\\frac{10}{2} = 5}", True),
      ("x = 5", "\\boxed{5}", True), ("5", "\\boxed{x = 5}", True),
  ])


def test_clock_times_and_colon_forms_are_not_divisions(pool):
  _assert_cases(pool, [
      ("4:30", "\\boxed{5:30}", False), ("4:30", "\\boxed{4:30}", True), ("05:00", "\\boxed{5:00}", True),
      ("05:00", "\\boxed{6:00}", False), ("{1:03PM}", "\\boxed{1:03 \\text{ p.m.}}", True),
      ("{1:03PM}", "\\boxed{1:03 \\text{ a.m.}}", False), ("4:51:06", "\\boxed{4:51:07}", False),
      ("1:2", "\\boxed{1:2}", True), ("1:2", "\\boxed{2:1}", False), ("4:30", "\\boxed{4.5}", False),
  ])
  assert structure.parse_structure("10:00").kind == "colon"


def test_unboxed_short_replies_and_decimal_commas(pool):
  _assert_cases(pool, [
      ("9", "Answer: $9$", True), ("9", "**Answer:** 9", True), ("9", "Answer: $8$", False),
      ("3.5", "\\boxed{3,5}", True), ("0.75", "\\boxed{0,75}", True), ("3.5", "\\boxed{3,500}", False),
      ("3.5", "\\boxed{3,6}", False), ("3, 5", "\\boxed{3,5}", True), ("3500", "\\boxed{3,500}", True),
  ])


def test_exactness_rule_for_numbers(pool):
  _assert_cases(pool, [
      ("25!", "\\boxed{1.55112100433310 \\times 10^{25}}", False),  # rounded mantissa of an exact value
      ("15511210043330985984000000", "\\boxed{1.55112100433310 \\times 10^{25}}", False),
      ("15!", "\\boxed{1.307674368 \\times 10^{12}}", True),  # exact, just written in scientific notation
      ("\\frac{1}{3}", "\\boxed{0.333}", False), ("\\sqrt{2}", "\\boxed{1.41421356237}", False),
      ("\\frac{\\pi}{2}", "\\boxed{0.5\\pi}", True), ("2.5", "\\boxed{\\frac{5}{2}}", True),
  ])


def test_warm_pool_latency_and_fast_recovery_after_a_timeout():
  with grading.WorkerPool(1) as p:
    p.warm_up()
    r = grading.check("\\frac{\\sqrt{3}}{2}", "\\boxed{\\sin(\\pi/3)}", pool=p)
    assert r.equivalent and r.rule == "symbolic"
    slow = grading.check("0", "\\boxed{\\int_0^\\infty e^{-x^{100}} \\sin(x^{7}) dx}", timeout=0.3, pool=p)
    assert slow.timed_out
    time.sleep(0.2)
    start = time.perf_counter()
    assert grading.check("\\sqrt{8}", "2\\sqrt{2}", pool=p).equivalent  # a spare took the killed worker's place
    assert time.perf_counter() - start < 1.5


def test_backends_by_name(pool):
  assert grading.get_backend("sympy") is grading.check
  assert {"sympy", "math_verify"} <= set(grading.available_backends())
  with pytest.raises(ValueError, match="unknown grading backend"):
    grading.get_backend("nope")
  with pytest.raises(ValueError, match="already registered"):
    grading.register_backend("sympy", grading.check)
  results = grading.grade_batch(["3"], ["\\boxed{3}"], pool=pool, backend="sympy")
  assert results[0].equivalent


def test_math_verify_backend_missing_gives_a_clear_error(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
  with pytest.raises(ImportError, match="pip install math-verify"):
    grading.get_backend("math_verify")("1", "1")


@pytest.mark.skipif(importlib.util.find_spec("math_verify") is None, reason="math-verify not installed")
def test_math_verify_backend():
  # Flaky under load before: the first task in each worker imported math_verify inside the 1 s bound, so on a
  # busy machine a correct answer timed out. The workers now import it before accepting tasks (preload: the
  # pools Grader / grade_batch build for this backend do it, and a user's own pool with preload_for), so the
  # bound covers the check alone.
  assert grading.backends.preload_for("math_verify") == ("ngrpo_jax.grading.symbolic", "math_verify")
  assert grading.backends.preload_for("sympy") == ("ngrpo_jax.grading.symbolic",)
  with grading.Grader(2, backend="math_verify") as grader:
    assert "math_verify" in grader._pool.preload   # pylint: disable=protected-access
    assert [r.equivalent for r in grader(["3", "3"], ["\\boxed{3}", "\\boxed{5}"])] == [True, False]
  with grading.WorkerPool(2, preload=grading.backends.preload_for("math_verify")) as mv_pool:
    mv_pool.warm_up()
    results = grading.grade_batch(["\\frac{1}{2}", "3", "(1,2)"], ["\\boxed{0.5}", "\\boxed{4}", "\\boxed{(2,1)}"],
                                  pool=mv_pool, backend="math_verify")
    assert [r.equivalent for r in results] == [True, False, False], [r.reason for r in results]
    assert all(r.rule == "math_verify" for r in results)
    assert not grading.get_backend("math_verify")("3", "3", require_boxed=True, pool=mv_pool).equivalent


def _corpus():
  with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_corpus_split_is_by_gold_hash():
  cases = _corpus()
  assert len(cases) > 10000
  for c in cases[::97]:
    heldout = int(hashlib.sha256(c["gold"].encode("utf-8")).hexdigest()[:8], 16) % 5 == 0
    assert c["split"] == ("heldout" if heldout else "tune")
  assert {c["split"] for c in cases} == {"tune", "heldout"}
  assert all("problem" not in c for c in cases[:100])


def test_corpus_is_reproducible(shared_dir, tmp_path):
  out = tmp_path / "corpus.jsonl.gz"
  subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "make_checker_corpus.py"), "--data_dir",
                  str(shared_dir / "data"), "--out", str(out)], check=True, capture_output=True)
  assert gzip.decompress(out.read_bytes()) == gzip.decompress(CORPUS.read_bytes())


def test_corpus_heldout_sample(pool):
  cases = [c for c in _corpus() if c["split"] == "heldout"][::25]
  results = grading.grade_batch([c["gold"] for c in cases], [c["pred"] for c in cases], pool=pool)
  fp = [(c["gold"], c["pred"][-80:]) for c, r in zip(cases, results) if r.equivalent and not c["equivalent"]]
  correct = sum(r.equivalent == c["equivalent"] for c, r in zip(cases, results))
  assert not fp
  assert correct >= 0.99 * len(cases)


def test_benchmark_slowest_listing_hides_heldout_answers(capsys):
  """``checker_benchmark.py --slowest`` shows the text of tune-side cases only (held-out answers stay hidden)."""
  spec = importlib.util.spec_from_file_location("checker_benchmark", REPO_ROOT / "benchmarks" / "checker_benchmark.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)

  class R:  # the fields of a GradeResult that the listing reads
    def __init__(self, seconds):
      self.seconds, self.timed_out, self.rule, self.pred_answer = seconds, False, "symbolic", "P"

  cases = [{"id": 1, "split": "tune", "gold": "TUNEGOLD"}, {"id": 2, "split": "heldout", "gold": "HELDGOLD"}]
  bench.print_slowest(cases, [R(0.1), R(0.2)], 2)
  out = capsys.readouterr().out
  assert "TUNEGOLD" in out and "HELDGOLD" not in out and out.index("id=2") < out.index("id=1")
  bench.print_slowest(cases[:1], [R(0.1)], 1, hide_text=True)
  assert "TUNEGOLD" not in capsys.readouterr().out
