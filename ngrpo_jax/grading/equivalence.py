"""Answer equivalence, cheapest rule first, with a hard time bound.

``check(gold, response)`` runs:
  1. extraction (``extract``): the reference is the gold itself (or its last box); the prediction is the last
     box of the response, or, unless ``require_boxed``, a "the answer is" phrase / bare answer / last ``$..$``;
  2. normalisation (``normalize``) and a **string** match of the normalised forms;
  3. an exact **numeric** match (``numbers``: integers, decimals, fractions, scientific notation; percent
     policy: ``p%`` also matches ``p/100``) — two plain numbers that differ are decided "not equivalent" here;
  4. a **symbolic** comparison (``symbolic``: LaTeX -> SymPy, structures, random-point evaluation) in a worker
     process killed after the remaining time budget (``process_pool``).
Stages 1-3 are linear-time string work in the calling thread; stage 4 is the only expensive one.
"""
import dataclasses
import re
import time
from typing import Optional

from ngrpo_jax.grading import extract
from ngrpo_jax.grading import normalize
from ngrpo_jax.grading import numbers
from ngrpo_jax.grading import process_pool

DEFAULT_TIMEOUT = 1.0
_SYMBOLIC_FUNCTION = "ngrpo_jax.grading.symbolic:compare_texts"
_WORD_ANSWER = re.compile(r"[A-Za-z][A-Za-z ]{3,}")
_MAX_NORMALIZE_CHARS = 5000
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
    rule: the rule that decided: "string", "numeric", "text", "symbolic", or "none".
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
    reason = "no boxed answer" if require_boxed else "no answer found in the response"
    return _Prepared(gold_answer, None, normalize.normalize_answer(gold_answer[:_MAX_NORMALIZE_CHARS]), empty,
                     False, False, "none", reason)
  g = normalize.normalize_answer(gold_answer[:_MAX_NORMALIZE_CHARS])
  if len(extraction.answer) > _MAX_NORMALIZE_CHARS:
    return _Prepared(gold_answer, extraction.answer[:200] + "...", g, empty, extraction.boxed,
                     extraction.answer == gold_answer, "string", "prediction too long to normalise")
  p = normalize.normalize_answer(extraction.answer)
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
  if g_value is not None and p_value is not None:
    verdict = _numeric_equal(g_value, p_value, g, p)
    return _Prepared(gold_answer, extraction.answer, g, p, extraction.boxed, verdict, "numeric",
                     "exact numeric match" if verdict else "numbers differ")
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
  try:
    outcome = (pool or process_pool.default_pool()).run(
        _SYMBOLIC_FUNCTION, (prep.gold.text, prep.pred.text, prep.gold.percent, prep.pred.percent,
                             prep.gold.degrees, prep.pred.degrees), remaining)
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
