"""The fast LaTeX parser (``grading.fastparse``) agrees with ``latex2sympy2_extended`` wherever it accepts.

Policy under test: the fast path may only change the cost of a check, never its verdict. It must decline
(return None) whenever the full parser could read a text differently: mixed numbers, ``i``/``e``, function
application, number juxtaposition and MATH leftovers such as ``100{3}``.
"""
import functools
import gzip
import json
import pathlib
import random

import pytest
import sympy
from latex2sympy2_extended import latex2sympy

from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import fastparse
from ngrpo_jax.grading import structure
from ngrpo_jax.grading import symbolic

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CORPUS = _ROOT / "benchmarks" / "data" / "checker_corpus.jsonl.gz"
_PUBLIC = _ROOT.parent / "shared" / "checker_cases_public.jsonl"


def _slow(text):
  obj = latex2sympy(text, normalization_config=symbolic._NORMALIZATION,  # pylint: disable=protected-access
                    conversion_config=symbolic._CONVERSION)  # pylint: disable=protected-access
  return symbolic._imaginary_unit(obj)  # pylint: disable=protected-access


def _agree(fast, slow) -> bool:
  if isinstance(fast, sympy.Eq) or isinstance(slow, sympy.Eq):
    return (isinstance(fast, sympy.Eq) and isinstance(slow, sympy.Eq) and _agree(fast.lhs, slow.lhs)
            and _agree(fast.rhs, slow.rhs))
  if isinstance(fast, sympy.FiniteSet) or isinstance(slow, sympy.FiniteSet):
    if not (isinstance(fast, sympy.FiniteSet) and isinstance(slow, sympy.FiniteSet)):
      return False
    if len(fast.args) != 1 or len(slow.args) != 1:
      return False
    fast, slow = fast.args[0], slow.args[0]
  if not isinstance(slow, sympy.Expr):
    return False
  slow = slow.doit()
  if {s.name for s in fast.free_symbols} != {s.name for s in slow.free_symbols}:
    return False
  if slow.atoms(sympy.core.function.AppliedUndef):
    return False  # the full parser read a function application
  diff = sympy.expand(fast - slow)
  return diff == 0 or sympy.simplify(diff) == 0


def _check(text):
  exact = symbolic.exact_decimals(text)
  fast = fastparse.parse_fast(exact)
  if fast is None:
    return None
  fast = symbolic._imaginary_unit(fast)  # pylint: disable=protected-access  (as symbolic.parse does)
  try:
    slow = _slow(exact)
  except Exception:  # pylint: disable=broad-except
    return f"accepted but the full parser fails: {text!r} -> {fast}"
  if not _agree(fast, slow):
    return f"disagree on {text!r}: fast {fast} vs full {slow}"
  return None


@functools.lru_cache(maxsize=1)
def _texts():
  """Normalised gold / prediction texts (and their structure entries) of the corpus and the public file."""
  cases = []
  with gzip.open(_CORPUS, "rt", encoding="utf-8") as f:
    cases += [json.loads(line) for line in f]
  if _PUBLIC.exists():
    with open(_PUBLIC, encoding="utf-8") as f:
      cases += [json.loads(line) for line in f if line.strip()]
  texts = set()
  for c in cases:
    prep = equivalence.prepare(c["gold"], c["pred"])
    for t in (prep.gold.text, prep.pred.text):
      if t:
        texts.add(t)
        for item in structure.split_top(t, ","):
          texts.add(item.strip())
  return sorted(t for t in texts if t)


@pytest.mark.parametrize("text,expected", [
    ("2x^2+3x-1", "2*x**2 + 3*x - 1"), ("x(x+1)", "x*(x + 1)"), ("3x(3x+1)", "3*x*(3*x + 1)"),
    ("\\frac{\\sqrt{3}}{2}", "sqrt(3)/2"), ("-(-4x^2+x+1)(4x^2+x+1)", "-(-4*x**2 + x + 1)*(4*x**2 + x + 1)"),
    ("\\left(x+1\\right)^2", "(x + 1)**2"), ("\\pi r^2", "pi*r**2"), ("X+Y", "x + y"), ("2^{-2}", "1/4"),
    ("{\\frac{25}{10}}+1", "7/2"), ("3-2i", "3 - 2*i"), ("\\dfrac{x}{2}\\cdot 3", "3*x/2"),
])
def test_accepts_plain_polynomials(text, expected):
  assert sympy.expand(fastparse.parse_fast(text) - sympy.sympify(expected)) == 0


def test_one_equals_sign_gives_an_unevaluated_equation():
  eq = fastparse.parse_fast("x^2+y^2=13")
  assert isinstance(eq, sympy.Eq) and eq.rhs == 13 and sympy.expand(eq.lhs - sympy.sympify("x**2 + y**2")) == 0
  assert isinstance(fastparse.parse_fast("x=x"), sympy.Eq)  # not evaluated to True


def test_a_whole_brace_group_is_a_set_as_in_the_full_parser():
  assert fastparse.parse_fast("{\\frac{25}{10}}") == sympy.FiniteSet(sympy.Rational(5, 2))


@pytest.mark.parametrize("text", [
    "2\\frac{1}{2}",  # mixed number (5/2 in the full parser)
    "i\\sqrt{3}", "e^{2}", "x=y=1", "f(x)", "u(v)", "x(2)",  # imaginary unit, Euler's number, function application
    "100{3}", "2 3", "(2)(3)", "x2",  # juxtaposed numbers: the full parser adds or concatenates them
    "x^2^3", "x/2y", "2^-1", "x_1", "\\theta", "2!", "1.5", "\\sqrt2", "\\frac12", "0^0", "2^{100000}",
    "x=y=1", "(1,2)", "", "{", "\\frac{1}{0}", "({H})", "Monday", "odd", "dx",
])
def test_declines_ambiguous_or_foreign_text(text):
  assert fastparse.parse_fast(text) is None


def test_never_raises_on_junk():
  rng = random.Random(0)
  atoms = ["x", "2", "+", "-", "^", "{", "}", "(", ")", "\\frac", "\\sqrt", "\\left(", "\\right)", "/", "\\cdot",
           " ", "\\pi", "e", "i", "."]
  for _ in range(2000):
    text = "".join(rng.choice(atoms) for _ in range(rng.randrange(1, 15)))
    value = fastparse.parse_fast(text)
    assert value is None or isinstance(value, sympy.Expr)


@pytest.mark.needs_shared
def test_agrees_with_full_parser_on_a_corpus_sample():
  texts = _texts()
  sample = random.Random(0).sample(texts, min(300, len(texts)))
  problems = [p for p in map(_check, sample) if p]
  assert not problems, problems[:10]


@pytest.mark.slow
@pytest.mark.needs_shared
def test_agrees_with_full_parser_on_every_corpus_text():
  problems = [p for p in map(_check, _texts()) if p]
  assert not problems, problems[:20]
