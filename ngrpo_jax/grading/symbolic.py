"""Symbolic stage: LaTeX -> SymPy with ``latex2sympy2_extended``, then structural/symbolic comparison.

Parser choice (measured on ``checker_cases_public.jsonl`` and the 600 gold answers of MATH500/AMC23/AIME):
``latex2sympy2_extended`` 1.11 parsed 600/600 golds in 1.0 s and 203/205 case strings (the two failures are
prose); SymPy's ``parse_latex(backend="lark")`` parsed 525/600 golds in 8.3 s and 137/205 case strings
(no ``\\%``, ``\\text``, ``(a, b)``, ``.5``, ``\\sqrt2``). So this module uses ``latex2sympy2_extended``.

Equivalence of two parsed answers (``objects_equal``):
  * numbers (exactness rule): every decimal literal is read as the exact rational it spells (``1.5`` ->
    ``15/10``) before parsing, so numbers compare exactly when both evaluate to rationals (``2^{100}``,
    ``25!`` vs a 15-digit mantissa ``1.55112100433310 \\times 10^{25}``: different); otherwise
    ``|a - b| <= 1e-30 · max(1, |a|, |b|)`` evaluated with 50 significant digits (so ``1.414`` is *not*
    ``\\sqrt{2}``: an approximate decimal for an exact gold is graded wrong); ``zoo``/``nan`` (a division by
    zero, e.g. a clock time read as a ratio) equal nothing;
  * expressions with free symbols: ``a - b`` evaluated at ``NUM_POINTS`` pseudo-random points (fixed seed)
    must vanish to 1e-9 relative; fall back to ``simplify(a - b) == 0`` when evaluation is impossible;
  * equations ``l1 = r1`` vs ``l2 = r2``: ``l1 - r1 = c·(l2 - r2)`` for a constant ``c ≠ 0``; an assignment
    ``x = 5`` (one side a lone variable) vs ``5`` compares the value; any other equation vs a bare value
    (gold ``x^2+y^2=25``, prediction ``25``) is not equivalent;
  * inequalities: normalised to ``<``/``≤``, same strictness and ``l1 - r1 = c·(l2 - r2)``, ``c > 0``;
    compared with intervals through ``as_set()`` when the other side is a set;
  * tuples and matrices: ordered, elementwise; finite sets and comma lists: order-free; intervals: same
    endpoints and open/closed ends; unions: order-free over their intervals.

Everything here may be slow on adversarial input; callers run it in a worker process with a hard time
bound (``process_pool``) after the cheap ``guards.guard`` (also run by the caller before dispatch).
"""
import collections
import math
import random
import re
from typing import Optional, Tuple

import sympy
from latex2sympy2_extended import latex2sympy
from latex2sympy2_extended.latex2sympy2 import ConversionConfig
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig

from ngrpo_jax.grading import fastparse
from ngrpo_jax.grading.guards import guard  # pylint: disable=unused-import  (re-exported)

MAX_ELEMENTS = 64
NUM_POINTS = 5
REL_TOL = 1e-9
EXACT_REL_TOL = 1e-30  # two exact (Float-free) constants, evaluated with 50 digits

# units=False: the parser's unit stripping drops trailing letters that look like units (``6+9t`` -> 15, t = ton);
# ``normalize`` removes real units before this stage.
_NORMALIZATION = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True,
                                     boxed="all", equations=False)
_CONVERSION = ConversionConfig(interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
                               interpret_contains_as_eq=True, lowercase_symbols=True)


_DECIMAL_LITERAL = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])")


def exact_decimals(text: str) -> str:
  """Rewrites every decimal literal as the exact fraction it spells: ``2.50`` -> ``{\\frac{250}{100}}``."""
  def repl(m):
    whole, frac = m.group(1) or "0", m.group(2)
    if len(whole) + len(frac) > 300:
      return m.group(0)
    return "{\\frac{" + str(int(whole + frac)) + "}{1" + "0" * len(frac) + "}}"
  return _DECIMAL_LITERAL.sub(repl, text)


PARSE_CACHE_SIZE = 4096
_PARSE_CACHE: "collections.OrderedDict[str, object]" = collections.OrderedDict()


def parse(text: str):
  """Parses a normalised LaTeX answer into a SymPy object, decimals as exact rationals (raises on failure).

  Fast path: ``fastparse.parse_fast`` reads plain polynomial / rational texts in microseconds and declines
  everything else, which goes to ``latex2sympy2_extended`` (ANTLR; tens to hundreds of milliseconds). Results
  (and failures) are cached per worker process (LRU, ``PARSE_CACHE_SIZE`` texts): in RL the same gold is graded
  against every sampled response of its group. SymPy objects are immutable, so sharing them is safe.
  """
  cached = _PARSE_CACHE.get(text)
  if cached is not None:
    _PARSE_CACHE.move_to_end(text)
    if isinstance(cached, _ParseFailure):
      raise ValueError(f"cannot parse (cached): {cached.message}")
    return cached
  try:
    exact = exact_decimals(text)
    obj = fastparse.parse_fast(exact)
    if obj is None:
      obj = latex2sympy(exact, normalization_config=_NORMALIZATION, conversion_config=_CONVERSION)
    obj = _imaginary_unit(obj)
  except Exception as e:  # pylint: disable=broad-except
    _remember(text, _ParseFailure(f"{type(e).__name__}"))
    raise
  _remember(text, obj)
  return obj


class _ParseFailure:
  """A cached parse failure (the same text fails the same way)."""

  def __init__(self, message: str):
    self.message = message


def _remember(text: str, value) -> None:
  if value is None:
    return
  _PARSE_CACHE[text] = value
  if len(_PARSE_CACHE) > PARSE_CACHE_SIZE:
    _PARSE_CACHE.popitem(last=False)


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
  if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
    return False  # an undefined value (1/0) is never an answer, and two of them are not "equal"
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
    a_at, b_at = a.subs(point), b.subs(point)
    if a_at.is_Rational and b_at.is_Rational:  # polynomials / rational functions: exact, no evaluation
      if a_at != b_at:
        return False
      agreed += 1
      if agreed >= NUM_POINTS:
        return True
      continue
    x, y = _to_number(a_at), _to_number(b_at)
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
                     ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"), ("\\sin x", "\\cos x"),
                     ("\\frac{1-\\sqrt{5}}{2}", "\\frac{-1+\\sqrt{5}}{4}"), ("-6t^4+11t^3-19t^2", "3x^2(x+1)"),
                     ("10p^3\\sqrt{3p}", "\\cos(6)\\sin(12)"), ("2^{4950}", "\\frac{1}{2004!}"), ("3\\pi + 2", "e^{2}"),
                     ("(-\\infty,-2)\\cup[3,\\infty)", "[\\frac{3}{2},2)"), ("\\log_2 8", "\\tan\\theta"), ("C+1", "B")):
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


def _union_parts(u):
  """The sets of a (possibly nested) union, flattened."""
  out = []
  for arg in u.args:
    out.extend(_union_parts(arg) if isinstance(arg, sympy.Union) else [arg])
  return out


def _interval_equal(g, p) -> bool:
  return (g.left_open == p.left_open and g.right_open == p.right_open and expr_equal(g.start, p.start)
          and expr_equal(g.end, p.end))


def _eq_value(eq):
  """The value side of an assignment ``x = value`` (or ``value = x``); None for any other equation."""
  if isinstance(eq.lhs, sympy.Symbol):
    return eq.rhs
  if isinstance(eq.rhs, sympy.Symbol):
    return eq.lhs
  return None


def objects_equal(g, p, depth: int = 0) -> bool:
  """Equality of two parsed answers (numbers, expressions, equations, relations, sets, tuples, matrices)."""
  if depth > 6:
    return False
  if isinstance(g, sympy.Eq) and isinstance(p, sympy.Eq):
    if isinstance(g.rhs, sympy.Set) or isinstance(p.rhs, sympy.Set):
      return objects_equal(g.rhs, p.rhs, depth + 1)
    return _proportional(g.lhs - g.rhs, p.lhs - p.rhs, positive=False)
  if isinstance(g, sympy.Eq):
    value = _eq_value(g)
    return value is not None and objects_equal(value, p, depth + 1)
  if isinstance(p, sympy.Eq):
    value = _eq_value(p)
    return value is not None and objects_equal(g, value, depth + 1)
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
    return _unordered_equal(_union_parts(g), _union_parts(p), depth)
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


def _parse_item(text: str):
  """Normalises and parses one structure entry; None when it cannot be parsed (or is too expensive)."""
  from ngrpo_jax.grading import normalize  # pylint: disable=import-outside-toplevel
  n = normalize.normalize_answer(text)
  if guard(n.text) is not None:
    return None
  try:
    obj = parse(n.text)
  except Exception:  # pylint: disable=broad-except
    return None
  return _variants(obj, percent=n.percent, degrees=False)[-1] if n.percent else obj


def _item_equal(g_text: str, p_text: str, cache: dict, depth: int = 0) -> bool:
  """Equality of two structure entries; nested structures are compared entry by entry (parsing small
  scalars is much faster than parsing a whole tuple), parses are cached per call."""
  from ngrpo_jax.grading import normalize  # pylint: disable=import-outside-toplevel
  from ngrpo_jax.grading import structure  # pylint: disable=import-outside-toplevel
  if depth < 3:
    gs = structure.parse_structure(normalize.normalize_answer(g_text).text)
    ps = structure.parse_structure(normalize.normalize_answer(p_text).text)
    if gs is not None and ps is not None:
      verdict = structure.compare(gs, ps)
      if isinstance(verdict, bool):
        return verdict
      return _pending_equal(verdict, cache, depth + 1)
  for text in (g_text, p_text):
    if text not in cache:
      cache[text] = _parse_item(text)
  g, p = cache[g_text], cache[p_text]
  return g is not None and p is not None and bool(objects_equal(g, p))


def _pending_equal(task, cache: dict, depth: int = 0) -> bool:
  from ngrpo_jax.grading import structure  # pylint: disable=import-outside-toplevel
  kind, pairs, g_items, p_items = task
  if kind == "ordered":
    return all(_item_equal(g, p, cache, depth) for g, p in pairs)
  if len(g_items) != len(p_items):
    return False
  table = [[_item_equal(g, p, cache, depth) for p in p_items] for g in g_items]
  return bool(structure._matching(table))  # pylint: disable=protected-access


def compare_pending(task) -> Tuple[bool, str]:
  """Symbolic stage of a structural comparison (``structure.compare``'s pending task). Never raises.

  ``("ordered", pairs, (), ())``: every (gold entry, predicted entry) pair must be equal;
  ``("unordered", (), gold_items, pred_items)``: a one-to-one matching of equal entries must exist.
  """
  try:
    verdict = _pending_equal(task, {})
    if task[0] == "ordered":
      return verdict, "structure entries match" if verdict else "structure entry differs or does not parse"
    return verdict, "list entries match in some order" if verdict else "list entries differ"
  except RecursionError:
    return False, "recursion limit"
  except Exception as e:  # pylint: disable=broad-except
    return False, f"comparison failed: {type(e).__name__}"


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
