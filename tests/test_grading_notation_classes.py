"""One test per notation / extraction class found on the tune side of the v2 families (issue 14, round 3).

Cases are written by hand from tune-side golds' patterns, never copied from the held-out v2 file.
"""
import time

import pytest

from ngrpo_jax import grading
from ngrpo_jax.grading import extract
from ngrpo_jax.grading import normalize
from ngrpo_jax.grading import process_pool


@pytest.fixture(scope="module")
def pool():
  with grading.WorkerPool(2) as p:
    p.warm_up()
    yield p


def _assert_cases(pool, cases):
  results = grading.grade_batch([g for g, _, _ in cases], [p for _, p, _ in cases], pool=pool)
  wrong = [(g, p, want, r.rule, r.reason) for (g, p, want), r in zip(cases, results) if r.equivalent != want]
  assert not wrong, wrong


def test_answer_phrase_after_an_intermediate_box_is_the_final_answer(pool):
  mid = "Step 2: the auxiliary value is \\(\\boxed{12}\\).\nStep 3: combine.\n\n"
  _assert_cases(pool, [
      ("\\frac{3}{8}", mid + "**Answer:** $\\tfrac{3}{8}$", True),
      ("\\frac{3}{8}", mid + "**Answer:** $12$", False),
      ("41", "We get $\\boxed{7}$ for part one.\n\nFinal answer: 41", True),
      ("7", "We get $\\boxed{7}$ for part one.\n\nFinal answer: 41", False),
      ("5", "The answer is $\\boxed{5}$.", True),  # a phrase before the box does not override it
  ])
  # A cut-off phrase answer after a box is a truncated response: no fall-back to the box.
  assert extract.extract_answer("\\boxed{4}. Answer: $5").method == "truncated"
  # With require_boxed the box stays the answer (the RL format rule).
  assert extract.extract_answer(mid + "**Answer:** $3$", require_boxed=True).answer == "12"


def test_escaped_dollar_inside_inline_math(pool):
  _assert_cases(pool, [
      ("312", "In total she pays $\\$312$ for the tickets.", True),
      ("18.25", "So the cost is $\\$18.25$ per person.", True),
      ("312", "In total she pays $\\$313$ for the tickets.", False),
  ])


def test_roman_and_text_wrappers(pool):
  _assert_cases(pool, [
      ("\\text{Wednesday}", "\\boxed{\\mathrm{Wednesday}}", True),
      ("\\text{odd}", "\\boxed{\\textnormal{odd}}", True),
      ("\\text{odd}", "\\boxed{\\mathrm{even}}", False),
      ("48", "\\boxed{\\mathrm{48}}", True),
      ("48", "\\boxed{48 \\mathrm{cm}}", True),
  ])


def test_matrices_in_array_or_bracketed_environments(pool):
  _assert_cases(pool, [
      ("\\begin{pmatrix}3\\\\-1\\end{pmatrix}", "\\left(\\begin{array}{c} 3 \\\\ -1 \\end{array}\\right)", True),
      ("\\begin{pmatrix}1&2\\\\0&1\\end{pmatrix}", "\\left[\\begin{matrix}1&2\\\\0&1\\end{matrix}\\right]", True),
      ("\\begin{pmatrix}1&2\\\\0&1\\end{pmatrix}", "\\left(\\begin{array}{cc} 1 & 2 \\\\ 1 & 0 \\end{array}\\right)",
       False),
      ("\\begin{pmatrix}3\\\\-1\\end{pmatrix}", "\\left(\\begin{array}{c} -1 \\\\ 3 \\end{array}\\right)", False),
  ])


def test_lists_with_oxford_comma_and_same_variable_assignments(pool):
  _assert_cases(pool, [
      ("2,5,9", "\\boxed{2, 5, and 9}", True),
      ("2,5,9", "\\boxed{2, 5, and 8}", False),
      ("-3,4", "\\boxed{x = -3, x = 4}", True),
      ("-3,4", "\\boxed{x = -3, x = 5}", False),
  ])
  # Different variables are not rewritten here (entries are compared one by one later).
  assert normalize.normalize_answer("x = 1, y = 2").text == "x = 1, y = 2"


def test_bracketed_fractions_and_spellings(pool):
  _assert_cases(pool, [
      ("\\frac{5}{12}", "\\boxed{(5)/(12)}", True),
      ("-\\frac{5}{12}", "\\boxed{-(5)/(12)}", True),
      ("\\frac{5}{12}", "\\boxed{(5)/(13)}", False),
      ("\\frac{5}{12}", "\\boxed{\\frac {5} {12}}", True),
      ("7", "\\boxed{+7}", True), ("7", "\\boxed{7.00}", True), ("7", "\\boxed{\\$7}", True),
  ])


def test_a_list_of_tuples_is_not_one_tuple_and_is_decided_without_sympy(pool):
  start = time.perf_counter()
  result = grading.check("(\\frac{1}{2},\\frac{2}{3})", "\\boxed{(\\frac{1}{2},\\frac{2}{3}), (\\frac{1}{2},\\frac{2}{3},0)}",
                         pool=pool)
  assert not result.equivalent and result.rule == "structure"
  assert time.perf_counter() - start < 0.5


def test_a_list_of_unions_is_not_one_union(pool):
  union = "(-\\infty,-1)\\cup(4,\\infty)"
  _assert_cases(pool, [
      (union, f"\\boxed{{{union}, (-\\infty,-1)\\cup(-4,\\infty)}}", False),
      (union, "\\boxed{(4,\\infty)\\cup(-\\infty,-1)}", True),
      (union, "\\boxed{-1, 4}", False),
  ])
  result = grading.check(union, f"\\boxed{{{union}, {union}}}", pool=pool)
  assert not result.equivalent and result.rule == "structure"


def test_polynomials_take_the_fast_parser(pool):
  # Decided without latex2sympy2's ANTLR parser: well inside the bound even on loaded cores.
  result = grading.check("-6x^2+36x-48", "\\boxed{-6x^{3}+36x-48}", pool=pool)
  assert not result.equivalent and not result.timed_out
  result = grading.check("-6x^2+36x-48", "\\boxed{36x-6x^2-48}", pool=pool)
  assert result.equivalent


def test_an_emptied_slot_takes_the_first_ready_spare():
  with process_pool.WorkerPool(1, spares=1) as p:
    p.warm_up()
    slow = grading.check("0", "\\boxed{\\int_0^\\infty e^{-x^{100}} \\sin(x^{7}) dx}", timeout=0.3, pool=p)
    assert slow.timed_out
    start = time.perf_counter()
    fine = grading.check("x^2+1", "\\boxed{1+x^2}", pool=p)
    assert fine.equivalent and time.perf_counter() - start < 5.0  # the spare, not a cold start


def test_a_single_letter_after_a_number_is_a_variable_not_a_unit(pool):
  _assert_cases(pool, [
      ("3s^2", "\\boxed{3s^{3}}", False), ("3s^2", "\\boxed{3}", False), ("2s", "\\boxed{\\;2s\\;}", True),
      ("5", "\\boxed{5 m}", True), ("5", "\\boxed{5cm}", True), ("12", "\\boxed{12 \\text{ s}}", True),
  ])
