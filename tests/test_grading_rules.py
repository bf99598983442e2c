"""Unit tests of the answer checker, one group per rule (extraction, normalisation, numbers, symbolic)."""
import fractions
import random

import pytest

from ngrpo_jax import grading
from ngrpo_jax.grading import extract
from ngrpo_jax.grading import normalize
from ngrpo_jax.grading import numbers


@pytest.fixture(scope="module")
def pool():
  with grading.WorkerPool(1) as p:
    yield p


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{\\frac{1}{2}} then \\fbox{\\frac{3}{\\sqrt{4}}}", "\\frac{3}{\\sqrt{4}}"),
    ("nested \\boxed{\\{1, \\{2\\}\\}}", "\\{1, \\{2\\}\\}"),
    ("answer \\boxed 5 done", "5"),
    # complete-answer rule: a last box that never closes means the response has no final answer
    ("first \\boxed{3} last \\boxed{7} and truncated \\boxed{8", None),
    ("no box here", None),
])
def test_last_boxed(text, expected):
  assert extract.last_boxed(text) == expected


@pytest.mark.parametrize("text,require_boxed,answer,method", [
    ("<think>maybe \\boxed{1}</think> The result is \\boxed{2}.", False, "2", "boxed"),
    ("<think>\\boxed{1}</think> so it is 2", True, None, "none"),
    ("Therefore, the answer is $73$.", False, "73", "phrase"),
    ("Final Answer: The final answer is 12. I hope it is correct.", False, "12", "phrase"),
    ("The answer is 3.5 meters.\nDone", False, "3.5 meters", "phrase"),
    ("We conclude there are 82 such integers.\n\n**Answer:** 82", False, "82", "phrase"),
    ("$\\frac{3}{4}$", False, "\\frac{3}{4}", "whole"),
    ("Long reasoning about many things that go on and on and end with $x = 4$ as shown", False, "x = 4", "math"),
    ("I was not able to finish the computation.", False, None, "none"),
    ("The answer is 3.", True, None, "none"),
    (None, False, None, "none"),
])
def test_extract_answer(text, require_boxed, answer, method):
  got = extract.extract_answer(text, require_boxed=require_boxed)
  assert got.method == method
  assert got.answer == answer


def test_extract_gold_prefers_box():
  assert extract.extract_gold("Solution ... so $\\boxed{5}$") == "5"
  assert extract.extract_gold("$\\frac12$") == "\\frac12"


# ---------------------------------------------------------------- normalisation
@pytest.mark.parametrize("raw,key,flags", [
    ("\\dfrac{3}{4}", "\\frac{3}{4}", {}),
    ("\\frac34", "\\frac{3}{4}", {}),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", {}),
    ("120^\\circ", "120", {"degrees": True}),
    ("120^{\\circ}", "120", {"degrees": True}),
    ("8\\%", "8", {"percent": True}),
    ("13,535", "13535", {}),
    ("27{,}648", "27648", {}),
    ("5.4 \\text{ cents}", "5.4", {"unit": "cents"}),
    ("864 \\mbox{ inches}^2", "864", {"unit": "inches"}),
    ("5.4 cents", "5.4", {"unit": "cents"}),
    ("\\text{Evelyn}", "evelyn", {}),
    ("\u22125", "-5", {}),
    ("3 \\text{ or } 5", "3,5", {}),
    ("\\mathbf{13}", "13", {}),
    ("$\\$5.40$", "5.40", {}),
    ("\\sqrt2", "\\sqrt{2}", {}),
])
def test_normalize(raw, key, flags):
  n = normalize.normalize_answer(raw)
  assert n.key == key
  for name, value in flags.items():
    assert getattr(n, name) == value


def test_strip_leading_variable():
  assert normalize.strip_leading_variable("x = 5") == "5"
  assert normalize.strip_leading_variable("a_1 = 2") == "2"
  assert normalize.strip_leading_variable("x = y = 2") == "x = y = 2"
  assert normalize.strip_leading_variable("x < 5") == "x < 5"


# ---------------------------------------------------------------- exact numbers (reference: fractions)
@pytest.mark.parametrize("text,value", [
    ("045", fractions.Fraction(45)), (".35625", fractions.Fraction(57, 160)), ("-35/9", fractions.Fraction(-35, 9)),
    ("\\frac{35}{-9}", fractions.Fraction(-35, 9)), ("-\\frac{7680}{578}", fractions.Fraction(-3840, 289)),
    ("3\\times 10^{5}", fractions.Fraction(300000)), ("3\\times 10^{-5}", fractions.Fraction(3, 100000)),
    ("2.5e3", fractions.Fraction(2500)), ("10^{20}", fractions.Fraction(10 ** 20)),
    ("x", None), ("10^{100000}", None), ("1/0", None), ("9" * 1000, None),
])
def test_parse_number(text, value):
  assert numbers.parse_number(text) == value


def test_numeric_rule_matches_fraction_reference(pool):
  rng = random.Random(0)
  golds, preds, expected = [], [], []
  for _ in range(60):
    a, b = rng.randint(-200, 200), rng.randint(1, 64)
    value = fractions.Fraction(a, b)
    form = rng.randrange(3)
    c, d = (a, b) if rng.random() < 0.5 else (a + rng.choice([-1, 1]), b)
    other = fractions.Fraction(c, d)
    if form == 0:
      pred = f"\\frac{{{c * 3}}}{{{d * 3}}}"
    elif form == 1:
      pred = f"{c}/{d}"
    else:
      pred = str(float(other)) if other.denominator in (1, 2, 4, 5, 8, 10, 16, 20, 25, 32) else f"{c}/{d}"
    golds.append(f"\\frac{{{a}}}{{{b}}}")
    preds.append(pred)
    expected.append(value == other)
  results = grading.grade_batch(golds, preds, pool=pool)
  assert [r.equivalent for r in results] == expected


def test_huge_integers_are_exact(pool):
  assert grading.check("12345678901234567890", "12,345,678,901,234,567,890", pool=pool).equivalent
  assert not grading.check("12345678901234567890", "12345678901234567891", pool=pool).equivalent
  assert not grading.check("99999999999999999999", "10^{20}", pool=pool).equivalent
  assert grading.check("2^{100}", str(2 ** 100), pool=pool).equivalent
  assert not grading.check("2^{100}", str(2 ** 100 + 1), pool=pool).equivalent


# ---------------------------------------------------------------- rules end to end
@pytest.mark.parametrize("gold,pred,expected", [
    # percent policy: p% == p == p/100
    ("8\\%", "8", True), ("8\\%", "0.08", True), ("8\\%", "0.8\\%", False), ("8\\%", "80\\%", False),
    ("\\frac{1}{4}", "25\\%", True),
    # degrees
    ("120^\\circ", "120", True), ("45^\\circ", "\\frac{\\pi}{4}", True), ("120^\\circ", "60^\\circ", False),
    # radicals, pi, e, i, logs, trig
    ("11\\sqrt2", "\\sqrt{242}", True), ("11\\sqrt2", "2\\sqrt{11}", False),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True), ("\\sqrt{2}", "1.414", False),
    ("7\\pi", "7 \\pi", True), ("7\\pi", "\\frac{7}{\\pi}", False), ("e^{2}", "e^2", True),
    ("1 - 12i", "1-12i", True), ("1 - 12i", "-12 + i", False), ("i", "\\sqrt{-1}", True),
    ("\\log_2 8", "3", True), ("\\sin^2 x + \\cos^2 x", "1", True),
    # symbolic expressions
    ("p - q", "-q + p", True), ("p - q", "q - p", False), ("(x+1)^2", "x^2+2x+1", True),
    ("(x+1)^2", "x^2+x+1", False),
    # structures
    ("(15,-29)", "(15, -29)", True), ("(15,-29)", "(-29,15)", False),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", True), ("\\{1,2,3\\}", "\\{1,2\\}", False),
    ("3, 5", "5, 3", True), ("3, 5", "3 \\text{ or } 5", True), ("\\pm 1", "\\{-1, 1\\}", True),
    ("(0,9) \\cup (9,36)", "(9,36) \\cup (0,9)", True), ("(0,9) \\cup (9,36)", "(0,9] \\cup (9,36)", False),
    ("[1,2]", "(1,2)", False), ("(-\\infty, 3)", "x<3", True), ("(-\\infty, 3]", "x<3", False),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", True),
    ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} -18/5 \\\\ 1/5 \\end{pmatrix}", False),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&3\\\\2&4\\end{bmatrix}", False),
    # equations and inequalities
    ("y = 2x + 3", "y = 3 + 2x", True), ("y = 2x + 3", "y = 2x - 3", False), ("y = -x + 2", "x + y = 2", True),
    ("y = 2x + 3", "2x + 3", True), ("x = 3", "3", True), ("3", "x = 3", True),
    ("x < 5", "5 > x", True), ("x < 5", "x \\le 5", False), ("x < 5", "x > 5", False),
    # text, units, bases, multiple choice
    ("\\text{Evelyn}", "Evelyn", True), ("\\text{Monday}", "\\text{Tuesday}", False),
    ("5.4 \\text{ cents}", "5.4", True), ("5.4 \\text{ cents}", "54", False),
    ("52_8", "52_8", True), ("52_8", "52", True), ("52_8", "53_8", False), ("52_8", "42", False),
    ("C", "\\textbf{(C)}", True), ("C", "(D)", False), ("10 \\text{ cm}", "10cm", True), ("2", "2xy", False),
    ("2", "2 xy", False),
    # adversarial: text that negates, several answers, a sign choice
    ("42", "\\boxed{42 \\text{ is not the answer}}", False), ("42", "42 is wrong", False),
    ("42", "The answer is 42 or 43", False), ("42", "\\pm 42", False), ("2", "\\boxed{2}\\text{ or }\\boxed{3}", False),
    # malformed / truncated LaTeX and degrees inside trig functions
    ("\\frac{3}{4}", "\\frac 3 4", True), ("\\frac{3}{4}", "\\frac{3}{4", False), ("(1,2)", "\\left(1,2\\right", False),
    ("\\cos 30^\\circ", "\\frac{\\sqrt3}{2}", True), ("-2 < x < 3", "(-2, 3)", True),
    ("y = 2x + 3", "2x - y + 3 = 0", True), ("\\{(1,2),(3,4)\\}", "\\{(3,4),(1,2)\\}", True),
])
def test_rules(pool, gold, pred, expected):
  result = grading.check(gold, pred, pool=pool)
  assert result.equivalent == expected, result


def test_result_fields(pool):
  r = grading.check("\\frac{1}{2}", "So the answer is $\\boxed{0.5}$.", pool=pool)
  assert r.equivalent and r.boxed and r.rule == "numeric" and r.pred_answer == "0.5"
  assert r.gold_normalized == "\\frac{1}{2}" and r.seconds >= 0 and not r.timed_out
  r = grading.check("\\sqrt{2}", "\\boxed{\\sqrt 2 + 0}", pool=pool)
  assert r.equivalent and r.rule == "symbolic"
  r = grading.check("1", "The answer is 1", require_boxed=True, pool=pool)
  assert not r.equivalent and "boxed" in r.reason


def test_is_equivalent_default_pool():
  assert grading.is_equivalent("\\frac{3}{4}", "\\dfrac34")
  assert not grading.is_equivalent("\\frac{3}{4}", "\\frac{4}{3}")


@pytest.mark.parametrize("kwargs,error", [({"timeout": 0}, ValueError), ({"timeout": "1"}, ValueError),
                                          ({"require_boxed": "yes"}, TypeError)])
def test_bad_options(kwargs, error):
  with pytest.raises(error):
    grading.check("1", "1", **kwargs)
