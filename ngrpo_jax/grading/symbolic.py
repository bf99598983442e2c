"""Symbolic stage: LaTeX -> SymPy with ``latex2sympy2_extended``, then structural/symbolic comparison.

Parser choice (measured on ``checker_cases_public.jsonl`` and the 600 gold answers of MATH500/AMC23/AIME):
``latex2sympy2_extended`` 1.11 parsed 600/600 golds in 1.0 s and 203/205 case strings (the two failures are
prose); SymPy's ``parse_latex(backend="lark")`` parsed 525/600 golds in 8.3 s and 137/205 case strings
(no ``\\%``, ``\\text``, ``(a, b)``, ``.5``, ``\\sqrt2``). So this module uses ``latex2sympy2_extended``.

Equivalence of two parsed answers (``objects_equal``):
  * numbers: exact when both evaluate to rationals (``2^{100}``); otherwise
    ``|a - b| <= tol · max(1, |a|, |b|)`` evaluated with 50 significant digits, ``tol = 1e-30`` between exact
    constants and ``1e-9`` when a decimal is involved (so ``1.414`` is *not* ``\\sqrt{2}``: an approximate
    decimal for an exact gold is graded wrong, the policy of the case files);
  * expressions with free symbols: ``a - b`` evaluated at ``NUM_POINTS`` pseudo-random points (fixed seed)
    must vanish to 1e-9 relative; fall back to ``simplify(a - b) == 0`` when evaluation is impossible;
  * equations ``l1 = r1`` vs ``l2 = r2``: ``l1 - r1 = c·(l2 - r2)`` for a constant ``c ≠ 0``; ``x = 5`` vs ``5``
    compares the right-hand side;
  * inequalities: normalised to ``<``/``≤``, same strictness and ``l1 - r1 = c·(l2 - r2)``, ``c > 0``;
    compared with intervals through ``as_set()`` when the other side is a set;
  * tuples and matrices: ordered, elementwise; finite sets and comma lists: order-free; intervals: same
    endpoints and open/closed ends; unions: order-free over their intervals.

Everything here may be slow on adversarial input; callers run it in a worker process with a hard time
bound (``process_pool``) after the cheap ``guard`` below.
"""
import math
import random
import re
from typing import Optional, Tuple

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig

MAX_CHARS = 1000
MAX_NESTING = 24
MAX_FACTORIAL = 1000
MAX_POWER_DIGITS = 10 ** 5
MAX_ELEMENTS = 64
NUM_POINTS = 5
REL_TOL = 1e-9
EXACT_REL_TOL = 1e-30  # two exact (Float-free) constants, evaluated with 50 digits

_NORMALIZATION = NormalizationConfig(basic_latex=True, units=True, malformed_operators=True, nits=True,
                                     boxed="all", equations=False)
_CONVERSION = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                               interpret_contains_as_eq=True, lowercase_symbols=True)
_POWER = re.compile(r"(\d+(?:\.\d+)?)\s*\^\s*\{?\s*\(?\s*(\d+)")
_TOWER = re.compile(r"((?:\d+\s*\^\s*\{?\s*\(?\s*){2,})(\d+)")
_FACTORIAL = re.compile(r"(\d+)\s*!")
_LONG_NUMBER = re.compile(r"\d{301}")
_FACTORIAL_OF_GROUP = re.compile(r"[\^][^!]{0,200}[})]\s*!")
_BIG_SPECIAL = re.compile(r"\\(?:binom|dbinom|tbinom|choose|Gamma|gamma|operatorname\{Gamma\})\s*(.{0,100})")


def _tower_too_big(bases, top: int) -> bool:
  """``b1^{b2^{...^{top}}}``: True if an inner level exceeds 10^6 or the result exceeds MAX_POWER_DIGITS digits."""
  exponent = min(top, 10 ** 20)
  for k, base in enumerate(reversed(bases)):
    if base <= 1:
      exponent = 1
      continue
    digits = exponent * math.log10(base)
    if k == len(bases) - 1:
      return digits > MAX_POWER_DIGITS
    if digits > 6:
      return True
    exponent = base ** exponent
  return False


def guard(text: str) -> Optional[str]:
  """Cheap pre-check; returns a reason string when ``text`` is too expensive to parse, else None.

  Rejects: more than ``MAX_CHARS`` characters, nesting deeper than ``MAX_NESTING``, numeric powers with more
  than ``MAX_POWER_DIGITS`` digits (including towers such as ``10^{10^{10}}``), factorials of numbers above
  ``MAX_FACTORIAL`` or of bracketed powers (``(10^{100})!``), binomials / Gamma of huge arguments and
  integer literals longer than 300 digits. Anything that slips through is stopped by the worker time bound.
  """
  if not isinstance(text, str):
    return "not a string"
  if len(text) > MAX_CHARS:
    return f"answer longer than {MAX_CHARS} characters"
  depth = best = 0
  for c in text:
    if c in "{([":
      depth += 1
      best = max(best, depth)
    elif c in "})]":
      depth -= 1
  if best > MAX_NESTING:
    return f"nesting deeper than {MAX_NESTING}"
  if text.count("\\sqrt") > MAX_NESTING:
    return "too many radicals"
  if _LONG_NUMBER.search(text):
    return "integer literal with more than 300 digits"
  for m in _TOWER.finditer(text):
    if _tower_too_big([int(b) for b in re.findall(r"(\d+)\s*\^", m.group(1))], int(m.group(2))):
      return "numeric exponent tower"
  for m in _POWER.finditer(text):
    base, exponent = float(m.group(1)), int(m.group(2)[:12])
    if base > 1 and exponent * math.log10(base) > MAX_POWER_DIGITS:
      return "power with too many digits"
  if _FACTORIAL_OF_GROUP.search(text):
    return "factorial of a bracketed expression with a power"
  for m in _BIG_SPECIAL.finditer(text):
    if "^" in m.group(1) or re.search(r"\d{7}", m.group(1)):
      return "special function of a huge argument"
  for m in _FACTORIAL.finditer(text):
    if len(m.group(1)) > 6 or int(m.group(1)) > MAX_FACTORIAL:
      return "factorial too large"
  return None


def parse(text: str):
  """Parses a normalised LaTeX answer into a SymPy object (raises on failure)."""
  obj = latex2sympy(text, normalization_config=_NORMALIZATION, conversion_config=_CONVERSION)
  return _imaginary_unit(obj)


def _imaginary_unit(obj):
  """The symbol ``i`` is the imaginary unit in answers (``1 - 12i``)."""
  try:
    free = getattr(obj, "free_symbols", set())
    i_symbols = [s for s in free if getattr(s, "name", None) == "i"]
    if i_symbols:
      return obj.subs(i_symbols[0], sympy.I)
  except Exception:  # pylint: disable=broad-except
    pass
  return obj


def _to_number(expr) -> Optional[complex]:
  try:
    value = sympy.N(expr, 50)
    if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
      return None
    return complex(value)
  except Exception:  # pylint: disable=broad-except
    return None


def _close(x: complex, y: complex, rel_tol: float = REL_TOL) -> bool:
  if any(math.isnan(v) or math.isinf(v) for v in (x.real, x.imag, y.real, y.imag)):
    return False
  return abs(x - y) <= rel_tol * max(1.0, abs(x), abs(y))


def expr_equal(a, b) -> bool:
  """Equality of two scalar SymPy expressions (see module docstring)."""
  try:
    if a == b:
      return True
    a, b = sympy.sympify(a), sympy.sympify(b)
  except Exception:  # pylint: disable=broad-except
    return False
  if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
    return False
  if a.is_infinite or b.is_infinite:
    return bool(a == b)
  if a.is_Rational and b.is_Rational:
    return bool(a == b)
  symbols = sorted(a.free_symbols | b.free_symbols, key=str)
  if not symbols:
    exact = not (a.has(sympy.Float) or b.has(sympy.Float))
    if exact:
      a_value, b_value = a.doit(), b.doit()  # 2^{100} -> exact integer (sizes bounded by ``guard``)
      if a_value.is_Rational and b_value.is_Rational:
        return bool(a_value == b_value)
    x, y = _to_number(a), _to_number(b)
    if x is None or y is None:
      return _simplify_zero(a - b)
    return _close(x, y, EXACT_REL_TOL if exact else REL_TOL)
  if a.free_symbols != b.free_symbols:
    # Different variables can still be equal (x - x + y vs y), but only if the difference simplifies away.
    return _simplify_zero(a - b)
  rng = random.Random(0)
  agreed = 0
  for _ in range(NUM_POINTS * 2):
    point = {s: sympy.Rational(rng.randint(-300, 300), rng.randint(50, 150)) + sympy.Rational(1, 7)
             for s in symbols}
    x, y = _to_number(a.subs(point)), _to_number(b.subs(point))
    if x is None or y is None:
      continue
    if not _close(x, y):
      return False
    agreed += 1
    if agreed >= NUM_POINTS:
      return True
  return _simplify_zero(a - b)


def _simplify_zero(d) -> bool:
  try:
    return bool(sympy.simplify(d) == 0)
  except Exception:  # pylint: disable=broad-except
    return False


def _proportional(d1, d2, *, positive: bool) -> bool:
  """True when ``d1 = c·d2`` for a constant ``c`` (``c > 0`` if ``positive``, else ``c ≠ 0``).

  The ratio ``d1 / d2`` is evaluated at ``NUM_POINTS`` pseudo-random points and must be the same finite,
  non-zero (positive) real number at all of them.
  """
  if expr_equal(d1, d2):
    return True
  if not positive and expr_equal(d1, -d2):
    return True
  try:
    d1, d2 = sympy.sympify(d1), sympy.sympify(d2)
  except Exception:  # pylint: disable=broad-except
    return False
  symbols = sorted(d1.free_symbols | d2.free_symbols, key=str)
  if d1.free_symbols != d2.free_symbols:
    return False
  rng = random.Random(1)
  ratio = None
  agreed = 0
  for _ in range(NUM_POINTS * 2):
    point = {s: sympy.Rational(rng.randint(-300, 300), rng.randint(50, 150)) + sympy.Rational(1, 7)
             for s in symbols}
    x, y = _to_number(d1.subs(point)), _to_number(d2.subs(point))
    if x is None or y is None or abs(y) < REL_TOL:
      continue
    r = x / y
    if abs(r.imag) > REL_TOL * max(1.0, abs(r)) or abs(r) < REL_TOL:
      return False
    if ratio is None:
      ratio = r
    elif not _close(r, ratio):
      return False
    agreed += 1
    if agreed >= NUM_POINTS:
      break
  if ratio is None or agreed < 2:
    return False
  return ratio.real > 0 if positive else True


def _warm_up() -> None:
  """Exercises the lazy imports of SymPy / the parser once, so the first real task is not slow."""
  for gold, pred in (("\\frac{1}{2}x+\\sqrt{2}", "x/2+\\sqrt{2}"), ("(0,9) \\cup (9,36)", "(9,36)\\cup(0,9)"),
                     ("y = 2x + 3", "y = 3 + 2x"), ("x < 5", "5 > x"), ("\\{1,2\\}", "\\{2,1\\}"),
                     ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"), ("\\sin x", "\\cos x")):
    compare_texts(gold, pred)


def _as_lt(rel):
  """``a > b`` -> ``(b, a, strict)``; ``a < b`` -> ``(a, b, strict)``."""
  if isinstance(rel, (sympy.StrictGreaterThan, sympy.GreaterThan)):
    return rel.rhs, rel.lhs, isinstance(rel, sympy.StrictGreaterThan)
  return rel.lhs, rel.rhs, isinstance(rel, sympy.StrictLessThan)


def _relation_equal(g, p) -> bool:
  gl, gr, gs = _as_lt(g)
  pl, pr, ps = _as_lt(p)
  if gs != ps:
    return False
  return _proportional(gr - gl, pr - pl, positive=True)


def _rel_as_set(rel):
  symbols = rel.free_symbols
  if len(symbols) != 1:
    return None
  try:
    return rel.as_set()
  except Exception:  # pylint: disable=broad-except
    return None


def _sequence(obj):
  if isinstance(obj, sympy.MatrixBase):
    return list(obj)
  if isinstance(obj, (sympy.Tuple, tuple, list)):
    return list(obj)
  return None


def _unordered_equal(gs, ps, depth) -> bool:
  gs, ps = list(gs), list(ps)
  if len(gs) != len(ps) or len(gs) > MAX_ELEMENTS:
    return False
  remaining = list(ps)
  for g in gs:
    for k, p in enumerate(remaining):
      if objects_equal(g, p, depth + 1):
        del remaining[k]
        break
    else:
      return False
  return True


def _interval_equal(g, p) -> bool:
  return (g.left_open == p.left_open and g.right_open == p.right_open and expr_equal(g.start, p.start)
          and expr_equal(g.end, p.end))


def _eq_value(eq):
  """The value side of ``x = value`` (or ``value = x``)."""
  if isinstance(eq.rhs, sympy.Symbol) and not isinstance(eq.lhs, sympy.Symbol):
    return eq.lhs
  return eq.rhs


def objects_equal(g, p, depth: int = 0) -> bool:
  """Equality of two parsed answers (numbers, expressions, equations, relations, sets, tuples, matrices)."""
  if depth > 6:
    return False
  if isinstance(g, sympy.Eq) and isinstance(p, sympy.Eq):
    if isinstance(g.rhs, sympy.Set) or isinstance(p.rhs, sympy.Set):
      return objects_equal(g.rhs, p.rhs, depth + 1)
    return _proportional(g.lhs - g.rhs, p.lhs - p.rhs, positive=False)
  if isinstance(g, sympy.Eq):
    return objects_equal(_eq_value(g), p, depth + 1)
  if isinstance(p, sympy.Eq):
    return objects_equal(g, _eq_value(p), depth + 1)
  g_rel = isinstance(g, sympy.core.relational.Relational)
  p_rel = isinstance(p, sympy.core.relational.Relational)
  if g_rel and p_rel:
    return _relation_equal(g, p)
  if isinstance(g, (sympy.And, sympy.Or)) or isinstance(p, (sympy.And, sympy.Or)) or g_rel or p_rel:
    gs = _rel_as_set(g) if isinstance(g, sympy.Basic) and g_rel or isinstance(g, (sympy.And, sympy.Or)) else g
    ps = _rel_as_set(p) if isinstance(p, sympy.Basic) and p_rel or isinstance(p, (sympy.And, sympy.Or)) else p
    if gs is None or ps is None or not isinstance(gs, sympy.Set) or not isinstance(ps, sympy.Set):
      return False
    return objects_equal(gs, ps, depth + 1)
  g_seq, p_seq = _sequence(g), _sequence(p)
  if isinstance(g, sympy.MatrixBase) and isinstance(p, sympy.MatrixBase) and g.shape != p.shape:
    if 1 not in g.shape or 1 not in p.shape:  # a row vector may be written as a column vector
      return False
  if g_seq is not None and p_seq is None and isinstance(p, sympy.Interval) and len(g_seq) == 2:
    p_seq = [p.start, p.end] if p.left_open and p.right_open else None
  if p_seq is not None and g_seq is None and isinstance(g, sympy.Interval) and len(p_seq) == 2:
    g_seq = [g.start, g.end] if g.left_open and g.right_open else None
  if g_seq is not None or p_seq is not None:
    if g_seq is None or p_seq is None or len(g_seq) != len(p_seq) or len(g_seq) > MAX_ELEMENTS:
      return False
    return all(objects_equal(a, b, depth + 1) for a, b in zip(g_seq, p_seq))
  if isinstance(g, sympy.FiniteSet) and isinstance(p, sympy.FiniteSet):
    return _unordered_equal(g.args, p.args, depth)
  if isinstance(g, sympy.FiniteSet) and len(g.args) == 1 and not isinstance(p, sympy.Set):
    return objects_equal(g.args[0], p, depth + 1)
  if isinstance(p, sympy.FiniteSet) and len(p.args) == 1 and not isinstance(g, sympy.Set):
    return objects_equal(g, p.args[0], depth + 1)
  if isinstance(g, sympy.Interval) and isinstance(p, sympy.Interval):
    return _interval_equal(g, p)
  if isinstance(g, sympy.Union) and isinstance(p, sympy.Union):
    return _unordered_equal(g.args, p.args, depth)
  if isinstance(g, sympy.Set) or isinstance(p, sympy.Set):
    try:
      return bool(g == p)
    except Exception:  # pylint: disable=broad-except
      return False
  if isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr):
    return expr_equal(g, p)
  try:
    return bool(g == p)
  except Exception:  # pylint: disable=broad-except
    return False


def _variants(obj, *, percent: bool, degrees: bool):
  out = [obj]
  if percent and isinstance(obj, sympy.Expr):
    out.append(obj / 100)
  if degrees and isinstance(obj, sympy.Expr) and obj.has(sympy.pi):
    out.append(obj * 180 / sympy.pi)
  return out


def compare_texts(gold: str, pred: str, gold_percent: bool = False, pred_percent: bool = False,
                  gold_degrees: bool = False, pred_degrees: bool = False) -> Tuple[bool, str]:
  """Parses and compares two normalised answers; returns ``(equivalent, reason)``. Never raises.

  Not time-bounded by itself: run it through ``process_pool.WorkerPool`` for a hard bound.
  """
  try:
    for name, text in (("gold", gold), ("prediction", pred)):
      reason = guard(text)
      if reason is not None:
        return False, f"{name} rejected: {reason}"
    try:
      g = parse(gold)
    except Exception as e:  # pylint: disable=broad-except
      return False, f"gold parse failed: {type(e).__name__}"
    try:
      p = parse(pred)
    except Exception as e:  # pylint: disable=broad-except
      return False, f"prediction parse failed: {type(e).__name__}"
    for gv in _variants(g, percent=gold_percent or pred_percent, degrees=False):
      for pv in _variants(p, percent=False, degrees=gold_degrees and not pred_degrees):
        if objects_equal(gv, pv):
          return True, "symbolic match"
    if pred_percent and not gold_percent:
      for pv in _variants(p, percent=True, degrees=False)[1:]:
        if objects_equal(g, pv):
          return True, "symbolic match (percent)"
    return False, "symbolic mismatch"
  except RecursionError:
    return False, "recursion limit"
  except Exception as e:  # pylint: disable=broad-except
    return False, f"comparison failed: {type(e).__name__}"
