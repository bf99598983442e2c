"""Answer equivalence, cheapest rule first, with a hard time bound.

``check(gold, response)`` runs:
  1. extraction (``extract``): the reference is the gold itself (or its last box); the prediction is the last
     box of the response (several boxes standing together form a list), or, unless ``require_boxed``, a
     "the answer is" phrase / bare answer / last ``$..$``. A truncated or malformed answer is rejected
     (complete-answer rule, see ``extract``);
  2. normalisation (``normalize``); a chained equality in the prediction (``x = 2+3 = 5``) is reduced to its
     final value; then a **string** match of the normalised forms;
  3. an exact **numeric** match (``numbers``: integers, decimals, fractions, scientific notation; percent
     policy: ``p%`` also matches ``p/100``; a decimal comma ``3,5`` is read as 3.5 when the gold is a
     decimal) — two plain numbers that differ are decided "not equivalent" here;
  4. a **structural** match (``structure``): matrices, vectors, tuples and intervals are ordered and their
     shape and brackets must agree, lists and sets are matched one-to-one in any order, clock times and
     other colon forms are compared part by part; entries go through the cheap rules first;
  5. a **symbolic** comparison (``symbolic``: LaTeX -> SymPy, random-point evaluation, exact rationals) of
     what is still undecided, in a worker process killed after the remaining time budget (``process_pool``).
Stages 1-4 are linear-time string work in the calling thread; stage 5 is the only expensive one.
"""
import dataclasses
import re
import time
from typing import Optional

from ngrpo_jax.grading import extract
from ngrpo_jax.grading import guards
from ngrpo_jax.grading import normalize
from ngrpo_jax.grading import numbers
from ngrpo_jax.grading import process_pool
from ngrpo_jax.grading import structure

DEFAULT_TIMEOUT = 1.0
_SYMBOLIC_FUNCTION = "ngrpo_jax.grading.symbolic:compare_texts"
_STRUCTURE_FUNCTION = "ngrpo_jax.grading.symbolic:compare_pending"
_WORD_ANSWER = re.compile(r"[A-Za-z][A-Za-z ]{3,}")
_MAX_NORMALIZE_CHARS = 5000
_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
_BASE_NUMERAL = re.compile(r"([0-9A-Za-z]+)_\{?(\d{1,2})\}?")


@dataclasses.dataclass(frozen=True)
class GradeResult:
  """Detailed outcome of one check.

  Attributes:
    equivalent: the verdict.
    gold_answer: the reference answer string used (after extraction from a boxed gold).
    pred_answer: the extracted prediction, or None when no answer was found.
    gold_normalized: normalised reference ("" if unavailable).
    pred_normalized: normalised prediction ("" if unavailable).
    rule: the rule that decided: "string", "numeric", "structure", "text", "symbolic", or "none".
    reason: human-readable explanation (parse failures, timeouts, guards).
    seconds: wall time of the whole check.
    boxed: the prediction came from a ``\\boxed``/``\\fbox``.
    timed_out: the symbolic stage hit the time bound.
  """
  equivalent: bool
  gold_answer: Optional[str]
  pred_answer: Optional[str]
  gold_normalized: str
  pred_normalized: str
  rule: str
  reason: str
  seconds: float
  boxed: bool = False
  timed_out: bool = False


@dataclasses.dataclass(frozen=True)
class _Prepared:
  """State after the cheap stages; ``verdict`` is None when the symbolic stage is needed."""
  gold_answer: Optional[str]
  pred_answer: Optional[str]
  gold: normalize.Normalized
  pred: normalize.Normalized
  boxed: bool
  verdict: Optional[bool]
  rule: str
  reason: str
  pending: Optional[tuple] = None  # structural comparison left for the symbolic stage


_EXTRACTION_FAILURES = {
    "truncated": "the answer is truncated or malformed (a box, brace, bracket or $ never closes)",
}


def final_value(pred: str, gold_has_equation: bool) -> str:
  """Reduces a chained equality ``x = 2+3 = 5`` to its final value ``5`` (``x = 5`` if the gold is an equation).

  A two-sided ``\\frac{10}{2} = 5`` whose left side has no variable is also reduced to ``5``; an equation
  with variables on the left (``x^2 + y^2 = 25``) is kept whole. Relations (``<=``, ``!=``) are left alone.
  """
  if "=" not in pred or re.search(r"[<>!]=|==|\\(?:le|ge|ne|approx)(?![A-Za-z])", pred):
    return pred
  items = structure.split_top(pred, ",")
  if len(items) > 1 and all("=" in item for item in items):
    return pred  # a list of assignments (``AB=9, CD=4``)
  parts = [x.strip() for x in structure.split_top(pred, "=")]
  if len(parts) < 2 or not all(parts):
    return pred
  if len(parts) == 2:
    if gold_has_equation or re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", parts[0])):
      return pred
    return parts[1]
  return f"{parts[0]} = {parts[-1]}" if gold_has_equation else parts[-1]


def _numeric_equal(g, p, gold: normalize.Normalized, pred: normalize.Normalized) -> bool:
  if g == p:
    return True
  if gold.percent and p == g / 100:
    return True
  if pred.percent and p / 100 == g:
    return True
  return False


def _base_numerals_equal(g_base, p_base, g_key: str, p_key: str) -> Optional[bool]:
  """``52_8`` vs ``52_8``/``52_{8}``/``52``: same digits and (if both given) same base; None if undecidable."""
  if g_base and p_base:
    return g_base.group(1).lower() == p_base.group(1).lower() and int(g_base.group(2)) == int(p_base.group(2))
  base, other = (g_base, p_key) if g_base else (p_base, g_key)
  if re.fullmatch(r"[0-9A-Za-z]+", other):
    return base.group(1).lower() == other.lower()
  return None


def prepare(gold: str, response: str, *, require_boxed: bool = False) -> _Prepared:
  """Cheap stages 1-3 (extraction, normalisation, string and numeric rules). Never raises."""
  empty = normalize.Normalized("", "")
  gold_answer = extract.extract_gold(gold) if isinstance(gold, str) else None
  extraction = extract.extract_answer(response, require_boxed=require_boxed)
  if gold_answer is None or not gold_answer.strip():
    return _Prepared(gold_answer, extraction.answer, empty, empty, extraction.boxed, False, "none",
                     "gold answer is empty or not a string")
  if extraction.answer is None:
    reason = _EXTRACTION_FAILURES.get(extraction.method) or (
        "no boxed answer" if require_boxed else "no answer found in the response")
    return _Prepared(gold_answer, None, normalize.normalize_answer(gold_answer[:_MAX_NORMALIZE_CHARS]), empty,
                     False, False, "none", reason)
  g = normalize.normalize_answer(gold_answer[:_MAX_NORMALIZE_CHARS])
  if len(extraction.answer) > _MAX_NORMALIZE_CHARS:
    return _Prepared(gold_answer, extraction.answer[:200] + "...", g, empty, extraction.boxed,
                     extraction.answer == gold_answer, "string", "prediction too long to normalise")
  p = normalize.normalize_answer(extraction.answer)
  reduced = final_value(p.text, "=" in g.text)
  if reduced != p.text:
    p = normalize.normalize_answer(reduced)
  if not p.key:
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "none", "empty prediction")
  if g.key == p.key:
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, True, "string",
                     "normalised strings match")
  g_text = normalize.strip_leading_variable(g.text) if "=" not in p.text else g.text
  p_text = normalize.strip_leading_variable(p.text) if "=" not in g.text else p.text
  if re.sub(r"\s+", "", g_text) == re.sub(r"\s+", "", p_text):
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, True, "string",
                     "normalised strings match after removing 'x ='")
  g_base, p_base = _BASE_NUMERAL.fullmatch(g.key), _BASE_NUMERAL.fullmatch(p.key)
  if g_base or p_base:
    verdict = _base_numerals_equal(g_base, p_base, g.key, p.key)
    if verdict is not None:
      return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, verdict, "numeric",
                       "base-b numerals " + ("match" if verdict else "differ"))
  g_value, p_value = numbers.parse_number(g_text), numbers.parse_number(p_text)
  if g_value is not None and p_value is None:
    comma = structure.decimal_comma(g_value, g_text, p_text)
    p_value = numbers.parse_number(comma) if comma else None
  if g_value is not None and p_value is not None:
    verdict = _numeric_equal(g_value, p_value, g, p)
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, verdict, "numeric",
                     "exact numeric match" if verdict else "numbers differ")
  g_struct, p_struct = structure.parse_structure(g_text), structure.parse_structure(p_text)
  if (g_struct is not None and g_struct.kind == "colon") or (p_struct is not None and p_struct.kind == "colon"):
    verdict = g_struct is not None and p_struct is not None and structure.compare(g_struct, p_struct) is True
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, verdict, "structure",
                     "colon forms (times, ratios) " + ("match" if verdict else "differ"))
  if g_struct is not None and p_struct is not None and (g_struct.kind == "union") == (p_struct.kind == "union"):
    verdict = structure.compare(g_struct, p_struct)
    if isinstance(verdict, bool):
      return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, verdict, "structure",
                       f"{g_struct.kind} vs {p_struct.kind}: " + ("entries match" if verdict else "differ"))
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, None, "symbolic", "", verdict)
  if (g_struct is not None and p_struct is not None and (g_struct.kind == "union") != (p_struct.kind == "union")
      and (g_struct.kind in ("list", "set") or p_struct.kind in ("list", "set"))):
    # A union of intervals is one set-valued answer: a list of several unions (a hedge) or of several
    # values is not it, and a union is not a list of values.
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "structure",
                     f"{g_struct.kind} vs {p_struct.kind}: a union is one answer")
  if g_struct is not None and g_struct.kind == "matrix" or p_struct is not None and p_struct.kind == "matrix":
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "structure",
                     "a matrix compared with a non-matrix")
  if g_struct is not None and g_struct.kind in ("list", "set") and p_struct is None and not _PLUS_MINUS.search(
      p_text):
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "structure",
                     f"a single value for a {len(g_struct.items)}-part answer")
  if p_struct is not None and p_struct.kind in ("list", "set") and g_struct is None and not _PLUS_MINUS.search(
      g_text) and len(set(p_struct.items)) > 1:
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "structure",
                     f"{len(p_struct.items)} different values for a single answer")
  if normalize.has_disqualifying_text(p.text):
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "text",
                     "prediction contains a sentence or negation in \\text{}")
  if _WORD_ANSWER.fullmatch(g.text) and _WORD_ANSWER.fullmatch(p.text):
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, False, "text", "words differ")
  return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, None, "symbolic", "")


def _result(prep: _Prepared, verdict: bool, rule: str, reason: str, start: float,
            timed_out: bool = False) -> GradeResult:
  return GradeResult(equivalent=bool(verdict), gold_answer=prep.gold_answer, pred_answer=prep.pred_answer,
                     gold_normalized=prep.gold.text, pred_normalized=prep.pred.text, rule=rule, reason=reason,
                     seconds=time.perf_counter() - start, boxed=prep.boxed, timed_out=timed_out)


def _validate(timeout, require_boxed) -> None:
  if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
    raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
  if not isinstance(require_boxed, bool):
    raise TypeError(f"require_boxed must be a bool, got {type(require_boxed).__name__}")


def check(gold: str, response: str, *, timeout: float = DEFAULT_TIMEOUT, require_boxed: bool = False,
          pool: Optional[process_pool.WorkerPool] = None) -> GradeResult:
  """Grades one response against a gold answer, with a hard time bound.

  Args:
    gold: reference answer (plain or LaTeX, optionally a boxed solution).
    response: model output (a full response or just the answer). Any value; non-strings grade as wrong.
    timeout: seconds allowed for the whole check (the symbolic stage gets what is left, at least 50 ms).
    require_boxed: only accept an answer inside ``\\boxed{}``/``\\fbox{}``.
    pool: worker processes for the symbolic stage (default: ``process_pool.default_pool()``).

  Returns:
    A ``GradeResult``. Never raises on any gold/response; invalid ``timeout``/``require_boxed`` raise
    ValueError/TypeError.
  """
  _validate(timeout, require_boxed)
  start = time.perf_counter()
  try:
    prep = prepare(gold, response, require_boxed=require_boxed)
  except Exception as e:  # pylint: disable=broad-except  (a bug here must not stall a rollout)
    empty = normalize.Normalized("", "")
    prep = _Prepared(None, None, empty, empty, False, False, "none", "")
    return _result(prep, False, "none", f"internal error in cheap stages: {type(e).__name__}: {e}", start)
  if prep.verdict is not None:
    return _result(prep, prep.verdict, prep.rule, prep.reason, start)
  remaining = max(timeout - (time.perf_counter() - start), 0.05)
  if prep.pending is not None:
    function, args = _STRUCTURE_FUNCTION, (prep.pending,)
  else:
    for name, text in (("gold", prep.gold.text), ("prediction", prep.pred.text)):
      too_big = guards.guard(text)
      if too_big is not None:
        return _result(prep, False, "symbolic", f"{name} rejected: {too_big}", start)
    function, args = _SYMBOLIC_FUNCTION, (prep.gold.text, prep.pred.text, prep.gold.percent, prep.pred.percent,
                                          prep.gold.degrees, prep.pred.degrees)
  try:
    outcome = (pool or process_pool.default_pool()).run(function, args, remaining)
  except Exception as e:  # pylint: disable=broad-except
    return _result(prep, False, "symbolic", f"worker pool failure: {type(e).__name__}: {e}", start)
  if outcome.status == "ok":
    verdict, reason = outcome.value
    return _result(prep, verdict, "symbolic", reason, start)
  if outcome.status == "timeout":
    return _result(prep, False, "symbolic", f"symbolic stage timed out after {remaining:.2f} s", start,
                   timed_out=True)
  return _result(prep, False, "symbolic", f"symbolic stage {outcome.status}: {outcome.value}", start)


def is_equivalent(gold: str, response: str, *, timeout: float = DEFAULT_TIMEOUT,
                  require_boxed: bool = False) -> bool:
  """True iff ``response``'s final answer is mathematically equivalent to ``gold`` (see ``check``)."""
  return check(gold, response, timeout=timeout, require_boxed=require_boxed).equivalent
