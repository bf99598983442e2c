"""Grading backends chosen by name: ``"sympy"`` (this package's checker, the default) or ``"math_verify"``.

    check = grading.get_backend("math_verify")     # a function with the signature of ``grading.check``
    grading.grade_batch(golds, responses, backend="math_verify")

A backend is a function ``check(gold, response, *, timeout, require_boxed, pool) -> GradeResult`` that never
raises on any gold / response. ``register_backend`` adds one under a new name (a config then holds the name,
so it stays serialisable), the way tunix / verl register advantage estimators.

``"math_verify"`` runs HuggingFace Math-Verify (the verifier TRL and verl use) inside this package's worker
processes, so it gets the same hard time bound. ``math_verify`` is imported lazily, only in the workers and
only when this backend is used; it is not a dependency of the library (``pip install math-verify==0.9.0``).
Its policies differ from ours (see ``docs/grading.md``): e.g. it repairs a truncated ``\\boxed{`` and it
accepts a decimal rounded to the gold's precision.

Time bound and import: a worker that has not imported ``math_verify`` yet imports it during its first task,
and that import counts against the task's bound (on a loaded machine it alone can exceed 1 s, so a correct
answer would time out). Policy: a pool that serves this backend imports it before accepting tasks
(``preload_for(backend)``; ``Grader`` and ``grade_batch`` build their own pools that way; for a pool of your
own: ``grading.WorkerPool(2, preload=backends.preload_for("math_verify"))``), so the bound covers the check
alone.
"""
import importlib.util
import time
from typing import Callable, Dict, Optional

from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import extract
from ngrpo_jax.grading import process_pool

CheckFn = Callable[..., equivalence.GradeResult]
DEFAULT_BACKEND = "sympy"
_MATH_VERIFY_FUNCTION = "ngrpo_jax.grading.backends:math_verify_compare"


def preload_for(backend: str) -> tuple:
  """The modules a grading worker imports before its first task when it serves ``backend`` (so no import
  counts against a check's time bound): the checker's own, plus ``math_verify`` for that backend.

  Raises:
    ValueError: unknown backend name (as ``get_backend``).
  """
  get_backend(backend)
  return process_pool.DEFAULT_PRELOAD + (("math_verify",) if backend == "math_verify" else ())


def _check_math_verify(gold: str, response: str, *, timeout: float = equivalence.DEFAULT_TIMEOUT,
                       require_boxed: bool = False,
                       pool: Optional[process_pool.WorkerPool] = None) -> equivalence.GradeResult:
  """``grading.check`` with Math-Verify 0.9 as the verifier (run in a worker process, hard time bound).

  Raises:
    ImportError: ``math_verify`` is not installed.
  """
  equivalence._validate(timeout, require_boxed)  # pylint: disable=protected-access
  if importlib.util.find_spec("math_verify") is None:
    raise ImportError("the 'math_verify' grading backend needs Math-Verify: pip install math-verify==0.9.0 "
                      "(or use the default backend 'sympy')")
  start = time.perf_counter()
  ok_types = isinstance(gold, str) and isinstance(response, str)
  extraction = extract.extract_answer(response if ok_types else "", require_boxed=require_boxed)

  def result(verdict, reason, timed_out=False, pred=None):
    return equivalence.GradeResult(
        equivalent=bool(verdict), gold_answer=gold if isinstance(gold, str) else None,
        pred_answer=pred if pred is not None else extraction.answer, gold_normalized="", pred_normalized="",
        rule="math_verify", reason=reason, seconds=time.perf_counter() - start, boxed=extraction.boxed,
        timed_out=timed_out)

  if not ok_types or not gold.strip():
    return result(False, "gold or response is not a non-empty string")
  if require_boxed and not extraction.boxed:
    return result(False, "no boxed answer")
  outcome = (pool or process_pool.default_pool()).run(_MATH_VERIFY_FUNCTION, (gold, response), timeout)
  if outcome.status == "ok":
    verdict, pred = outcome.value
    return result(verdict, "math_verify match" if verdict else "math_verify mismatch", pred=pred)
  if outcome.status == "timeout":
    return result(False, f"math_verify timed out after {timeout:.2f} s", timed_out=True)
  return result(False, f"math_verify {outcome.status}: {outcome.value}")


def math_verify_compare(gold: str, response: str):
  """Worker side of the ``math_verify`` backend: ``(verdict, extracted prediction)``. Never raises."""
  import logging  # pylint: disable=import-outside-toplevel
  import math_verify  # pylint: disable=import-outside-toplevel
  logging.getLogger("math_verify").setLevel(logging.ERROR)  # the "timeout disabled" notice: we bound time
  try:
    gold_text = gold if ("$" in gold or "\\boxed" in gold or "\\(" in gold) else f"${gold}$"
    gold_parsed = math_verify.parse(gold_text, parsing_timeout=None)
    pred_parsed = math_verify.parse(response, parsing_timeout=None)
    verdict = bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None))
    return verdict, (str(pred_parsed[-1]) if pred_parsed else None)
  except Exception as e:  # pylint: disable=broad-except
    return False, f"error: {type(e).__name__}"


_BACKENDS: Dict[str, CheckFn] = {"sympy": equivalence.check, "math_verify": _check_math_verify}


def register_backend(name: str, check_fn: CheckFn) -> None:
  """Registers ``check_fn`` (signature of ``grading.check``) under ``name``; ValueError if taken."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"backend name must be a non-empty string, got {name!r}")
  if not callable(check_fn):
    raise TypeError(f"check_fn must be callable, got {type(check_fn).__name__}")
  if name in _BACKENDS:
    raise ValueError(f"grading backend {name!r} is already registered")
  _BACKENDS[name] = check_fn


def get_backend(name: str = DEFAULT_BACKEND) -> CheckFn:
  """The check function registered under ``name`` ("sympy", "math_verify", or a registered one).

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  try:
    return _BACKENDS[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown grading backend {name!r}; known: {sorted(_BACKENDS)}") from None


def available_backends():
  """Names of the registered backends."""
  return sorted(_BACKENDS)
