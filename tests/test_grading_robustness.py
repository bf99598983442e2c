"""Robustness of the answer checker: pathological inputs, fuzzing, batch order, threads, rewards."""
import concurrent.futures
import time

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from ngrpo_jax import grading

TIMEOUT = 1.0
# Generous slack for a loaded 2-core machine: the bound is TIMEOUT for the symbolic stage plus dispatch.
SLACK = 1.5


@pytest.fixture(scope="module")
def pool():
  with grading.WorkerPool(2) as p:
    p.warm_up()
    yield p


PATHOLOGICAL = [
    "10^{10^{10}}", "\\boxed{10^{10^{10^{10}}}}", "9999!!", "\\boxed{9999!}", "2^{999999999}",
    "2^{2^{2^{2^{2^{2}}}}}", "{" * 10000 + "1" + "}" * 10000, "\\sqrt{" * 500 + "2" + "}" * 500,
    "1" * 10 ** 6, "\\boxed{" + "x+" * 200000 + "1}", "a" * 10 ** 6 + "\\boxed{5}", "\\frac{" * 3000,
    "\\boxed{(10^{100})!}", "\\boxed{\\binom{10^{9}}{5 \\cdot 10^{8}}}", "\\boxed{1.5^{123456789}}",
    "\\boxed{\\int_0^\\infty e^{-x^{100}} dx}", "\\boxed{10^{10}!}", "\\boxed{e^{e^{e^{e^{e^{10}}}}}}",
    "\\boxed{\\begin{pmatrix}" + "1&" * 400 + "1\\end{pmatrix}}", "\\boxed{}", "\\boxed{\\}", "}}}{{{", "",
    "\x00\x01\ud7ff", "\\boxed{x^{x^{x^{x^{x^{x}}}}}}",
]


@pytest.mark.parametrize("index", range(len(PATHOLOGICAL)))
def test_pathological_inputs_are_bounded(pool, index):
  response = PATHOLOGICAL[index]
  start = time.perf_counter()
  result = grading.check("42", response, timeout=TIMEOUT, pool=pool)
  elapsed = time.perf_counter() - start
  assert not result.equivalent
  assert elapsed < TIMEOUT + SLACK, (elapsed, result)
  # As a gold answer too.
  start = time.perf_counter()
  result = grading.check(response, "42", timeout=TIMEOUT, pool=pool)
  assert not result.equivalent
  assert time.perf_counter() - start < TIMEOUT + SLACK


def test_non_string_inputs(pool):
  for gold, response in [(None, "1"), ("1", None), (1, 1), ("1", b"1"), (["1"], "1"), ("1", 1.0)]:
    result = grading.check(gold, response, pool=pool)
    assert isinstance(result, grading.GradeResult) and not result.equivalent


def test_timeout_kills_and_recovers():
  with grading.WorkerPool(1) as p:
    p.warm_up()  # the pool is warm before the first check (a cold start costs seconds on loaded cores)
    slow = grading.check("0", "\\boxed{\\int_0^\\infty e^{-x^{100}} \\sin(x^{7}) dx}", timeout=0.3, pool=p)
    assert not slow.equivalent and slow.timed_out and slow.seconds < 0.3 + SLACK
    # The pool replaced the killed worker and keeps working.
    assert grading.check("\\sqrt{8}", "2\\sqrt{2}", pool=p).equivalent


_LATEX_ATOMS = ["1", "2", "x", "y", "\\pi", "e", "i", "0.5", "10", "99", "\\infty", "-", "+", "*", "/", "^", "!",
                "=", "<", ",", "(", ")", "[", "]", "\\{", "\\}", "{", "}", "\\frac{", "\\sqrt{", "\\sin", "\\log",
                "\\boxed{", "\\text{", "\\%", "^\\circ", "\\cup", "\\le", "$", "\\begin{pmatrix}", "\\\\",
                "\\end{pmatrix}", "&", " ", "\\left(", "\\right)", "\\cdot", "\\times", "10^{"]


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(gold=st.text(max_size=40), response=st.text(max_size=200))
def test_fuzz_arbitrary_strings(pool, gold, response):
  start = time.perf_counter()
  result = grading.check(gold, response, timeout=TIMEOUT, pool=pool)
  assert isinstance(result.equivalent, bool)
  assert time.perf_counter() - start < TIMEOUT + SLACK


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(gold=st.lists(st.sampled_from(_LATEX_ATOMS), max_size=12).map("".join),
                  response=st.lists(st.sampled_from(_LATEX_ATOMS), max_size=30).map("".join))
def test_fuzz_random_latex(pool, gold, response):
  start = time.perf_counter()
  result = grading.check(gold, response, timeout=TIMEOUT, pool=pool)
  assert isinstance(result.equivalent, bool)
  assert time.perf_counter() - start < TIMEOUT + SLACK
  # Reflexivity on anything that has an answer: a response is always equivalent to itself as gold.
  if result.pred_answer is not None and result.pred_answer.strip() and not result.timed_out:
    assert grading.check(result.pred_answer, result.pred_answer, pool=pool).equivalent


def _labelled_batch():
  golds = ["\\frac{1}{2}", "3", "\\sqrt{8}", "(1,2)", "x+1", "7"] * 4
  responses = ["\\boxed{0.5}", "\\boxed{4}", "\\boxed{2\\sqrt{2}}", "\\boxed{(2,1)}", "\\boxed{1+x}", "7"] * 4
  expected = [True, False, True, False, True, True] * 4
  return golds, responses, expected


def test_grade_batch_preserves_order(pool):
  golds, responses, expected = _labelled_batch()
  results = grading.grade_batch(golds, responses, pool=pool)
  assert [r.equivalent for r in results] == expected
  assert [r.gold_answer for r in results] == golds


def test_grade_batch_own_pool_and_validation():
  golds, responses, expected = _labelled_batch()
  assert [r.equivalent for r in grading.grade_batch(golds[:6], responses[:6], num_workers=1)] == expected[:6]
  assert grading.grade_batch([], [], num_workers=1) == []
  with pytest.raises(ValueError, match="same length"):
    grading.grade_batch(["1"], [], num_workers=1)
  with pytest.raises(ValueError, match="num_workers"):
    grading.grade_batch(["1"], ["1"], num_workers=0)
  with pytest.raises(TypeError, match="golds"):
    grading.grade_batch("1", ["1"])


def test_batch_from_threads(pool):
  golds, responses, expected = _labelled_batch()
  with concurrent.futures.ThreadPoolExecutor(3) as executor:
    futures = [executor.submit(grading.grade_batch, golds, responses, pool=pool) for _ in range(3)]
    for future in futures:
      assert [r.equivalent for r in future.result()] == expected


def test_reward_batch(pool):
  golds, responses, expected = _labelled_batch()
  rewards = grading.reward_batch(responses, golds, pool=pool)
  boxed = np.array([r.startswith("\\boxed") for r in responses])
  # require_boxed=True (default): the un-boxed correct "7" earns nothing.
  np.testing.assert_array_equal(rewards, (np.array(expected) & boxed).astype(np.float32))
  assert rewards.dtype == np.float32 and rewards.shape == (len(golds),)
  rewards = grading.reward_batch(responses, golds, grading.RewardConfig(wrong_reward=-1.0, format_reward=0.5),
                                 require_boxed=False, pool=pool)
  reference = np.where(expected, 1.0, -1.0) + 0.5 * boxed
  np.testing.assert_allclose(rewards, reference)
  with pytest.raises(ValueError, match="format_reward"):
    grading.RewardConfig(format_reward=float("nan"))
