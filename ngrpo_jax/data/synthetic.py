"""The embedded synthetic math task: multi-digit addition with a carry scratchpad.

This is the task the default experiment trains on (no downloads). One problem family with a smooth
difficulty knob, so a small policy's per-prompt solve rates spread over a range instead of being
bimodal:

* **Problem** ``"478+65"``: the sum of two non-negative integers. ``difficulty`` d ∈ [1, MAX_DIGITS]
  is the *expected* number of digits of the longer operand: it has ⌊d⌋ digits, or ⌊d⌋+1 with
  probability d - ⌊d⌋. The other operand has a uniform number of digits in [1, that length]; which
  operand is longer is a coin flip.
* **Solution** (what the warm-start imitates and what a correct response looks like): one line per
  digit column, least-significant first, each ``x+y+c=s`` with the column digits x, y (0 when an
  operand is shorter), the carry-in c ∈ {0, 1} and the column sum s = x + y + c written with exactly
  two digits (carry-out, result digit); then ``\\boxed{answer}``::

      8+5+0=13
      7+6+1=14
      4+0+1=05
      \\boxed{543}

  Every line has the same shape (9 characters with its newline), so a wrong step changes one digit
  of the answer: errors are near misses, which is what makes "all-wrong" groups informative.
  The answer is the second digits of the lines read bottom-up, preceded by the last carry if it is 1.

Generation is pure: a ``numpy.random.Generator`` is passed in (``make_problem``) or built from an
integer seed (``make_dataset``). Train and held-out splits are disjoint by construction: a problem's
split is a hash of its unordered operand pair (``split_of``), so ``a+b`` and ``b+a`` share a split.
"""
import hashlib
import math
from typing import Sequence

import numpy as np

MAX_DIGITS = 30
TRAIN = "train"
TEST = "test"
VALIDATION = "validation"
SPLITS = (TRAIN, TEST, VALIDATION)
_HASH_BUCKETS = 1_000_000


def addition_scratchpad(a: int, b: int) -> str:
  """The deterministic column-addition scratchpad for ``a + b``, ending in ``\\boxed{a+b}``.

  Column i (i = 0 least significant) is the line ``f"{x_i}+{y_i}+{c_i}={s_i:02d}"`` with
  s_i = x_i + y_i + c_i, c_0 = 0 and c_{i+1} = ⌊s_i / 10⌋; there are max(len(a), len(b)) lines.

  Args:
    a: first operand, a non-negative int.
    b: second operand, a non-negative int.

  Returns:
    The scratchpad lines joined by ``"\\n"``, then ``"\\n\\boxed{<a+b>}"``.
  """
  _check_operand("a", a)
  _check_operand("b", b)
  da, db = str(a)[::-1], str(b)[::-1]
  lines = []
  carry = 0
  for i in range(max(len(da), len(db))):
    x = int(da[i]) if i < len(da) else 0
    y = int(db[i]) if i < len(db) else 0
    s = x + y + carry
    lines.append(f"{x}+{y}+{carry}={s:02d}")
    carry = s // 10
  lines.append(f"\\boxed{{{a + b}}}")
  return "\n".join(lines)


def max_solution_chars(num_digits: int) -> int:
  """Upper bound on ``len(addition_scratchpad(a, b))`` when the longer operand has ``num_digits``.

  num_digits lines of 8 characters plus newline, then ``\\boxed{`` (7), at most num_digits + 1
  answer digits and ``}``: 10·num_digits + 9. With the character-level tokenizer this is also the
  token count; add 1 for the eos token to get a response-length budget for sampling.
  """
  if not isinstance(num_digits, (int, np.integer)) or num_digits < 1:
    raise ValueError(f"num_digits must be a positive int, got {num_digits!r}")
  return 10 * int(num_digits) + 9


def count_carries(a: int, b: int) -> int:
  """Number of columns of ``a + b`` whose sum is ≥ 10 (a secondary difficulty measure)."""
  _check_operand("a", a)
  _check_operand("b", b)
  carries, carry = 0, 0
  while a or b:
    carry = (a % 10 + b % 10 + carry) // 10
    carries += carry
    a, b = a // 10, b // 10
  return carries


def split_of(a: int, b: int, heldout_fraction: float = 0.1, validation_fraction: float = 0.0) -> str:
  """The split (``"train"``, ``"test"`` or ``"validation"``) a problem belongs to, fixed by a hash of {a, b}.

  With u = (SHA-256("min(a,b)+max(a,b)") mod 10^6) / 10^6: "test" iff u < heldout_fraction, "validation"
  iff heldout_fraction ≤ u < heldout_fraction + validation_fraction, else "train". The test split does not
  depend on ``validation_fraction``; a validation split (for tuning) is carved out of the train split.

  Args:
    a: first operand (non-negative int).
    b: second operand (non-negative int).
    heldout_fraction: share of all operand pairs in the held-out (test) split, in [0, 1].
    validation_fraction: share in the validation split, in [0, 1 − heldout_fraction] (default 0: none).

  Returns:
    ``"train"``, ``"test"`` or ``"validation"``.
  """
  _check_fraction(heldout_fraction)
  _check_fraction(validation_fraction, "validation_fraction")
  if heldout_fraction + validation_fraction > 1.0:
    raise ValueError(f"heldout_fraction + validation_fraction must be <= 1, got {heldout_fraction} + "
                     f"{validation_fraction}")
  key = f"{min(a, b)}+{max(a, b)}".encode()
  bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % _HASH_BUCKETS
  if bucket < heldout_fraction * _HASH_BUCKETS:
    return TEST
  return VALIDATION if bucket < (heldout_fraction + validation_fraction) * _HASH_BUCKETS else TRAIN


def make_problem(rng: np.random.Generator, difficulty: float) -> dict:
  """Samples one addition problem at a given difficulty.

  Digits of the longer operand: n = ⌊d⌋ + Bernoulli(d - ⌊d⌋) (so E[n] = d, smooth in d); the other
  operand has m ~ Uniform{1..n} digits; leading digits are non-zero (except the number 0 itself).

  Args:
    rng: a ``numpy.random.Generator`` (consumed; pass a fresh or split generator for
      reproducibility).
    difficulty: float in [1, MAX_DIGITS].

  Returns:
    A record ``{"problem": "a+b", "answer": str(a+b), "solution": scratchpad, "difficulty": d,
    "digits": n, "carries": int, "operands": (a, b)}`` (no id/split; ``make_dataset`` adds them).
  """
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
  d = _check_difficulty("difficulty", difficulty)
  n = int(math.floor(d))
  if n < MAX_DIGITS and rng.random() < d - n:
    n += 1
  m = int(rng.integers(1, n + 1))
  long_op, short_op = _random_int(rng, n), _random_int(rng, m)
  a, b = (long_op, short_op) if rng.random() < 0.5 else (short_op, long_op)
  return {
      "problem": f"{a}+{b}",
      "answer": str(a + b),
      "solution": addition_scratchpad(a, b),
      "difficulty": d,
      "digits": n,
      "carries": count_carries(a, b),
      "operands": (a, b),
  }


def make_dataset(seed: int, n: int, difficulty_range: Sequence[float] = (1.0, 4.0), *,
                 split: str = TRAIN, heldout_fraction: float = 0.1, validation_fraction: float = 0.0,
                 unique: bool = False, max_tries_per_problem: int = 1000) -> list[dict]:
  """Generates ``n`` problems of one split with difficulties ~ Uniform[lo, hi].

  Problems whose ``split_of`` differs from ``split`` are rejected and redrawn, so the train and
  test datasets of any seeds never share a problem (up to operand order).

  Args:
    seed: int seed of the ``numpy.random.Generator`` (PCG64). Same arguments → same dataset.
    n: number of problems (≥ 0).
    difficulty_range: (lo, hi) with 1 ≤ lo ≤ hi ≤ MAX_DIGITS; each problem draws
      d ~ Uniform[lo, hi] and calls ``make_problem``.
    split: ``"train"``, ``"test"`` or ``"validation"`` (the last needs ``validation_fraction`` > 0).
    heldout_fraction: share of operand pairs that belong to ``"test"`` (default 0.1).
    validation_fraction: share that belongs to ``"validation"`` (default 0; see ``split_of``).
    unique: reject problems already in the dataset (for evaluation sets). Raises ValueError when
      the range holds too few problems.
    max_tries_per_problem: bound on redraws per record before giving up with a ValueError.

  Returns:
    A list of ``n`` records as ``make_problem`` plus ``"id"`` (``f"add-{split}-{seed}-{i}"``) and
    ``"split"``.
  """
  if not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f"n must be a non-negative int, got {n!r}")
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if split == VALIDATION and not validation_fraction > 0:
    raise ValueError(f"split={VALIDATION!r} needs validation_fraction > 0, got {validation_fraction!r}")
  _check_fraction(heldout_fraction)
  if len(difficulty_range) != 2:
    raise ValueError(f"difficulty_range must be (lo, hi), got {difficulty_range!r}")
  lo = _check_difficulty("difficulty_range[0]", difficulty_range[0])
  hi = _check_difficulty("difficulty_range[1]", difficulty_range[1])
  if lo > hi:
    raise ValueError(f"difficulty_range must have lo <= hi, got {difficulty_range!r}")
  rng = np.random.default_rng(seed)
  records, seen = [], set()
  for i in range(int(n)):
    for _ in range(max_tries_per_problem):
      record = make_problem(rng, rng.uniform(lo, hi) if hi > lo else lo)
      a, b = record["operands"]
      if split_of(a, b, heldout_fraction, validation_fraction) != split:
        continue
      if unique and (a, b) in seen:
        continue
      break
    else:
      raise ValueError(
          f"could not draw problem {i} of split {split!r} in {max_tries_per_problem} tries: "
          f"difficulty_range={tuple(difficulty_range)!r} holds too few {split} problems "
          f"(heldout_fraction={heldout_fraction}, unique={unique})")
    seen.add((a, b))
    records.append({"id": f"add-{split}-{seed}-{i}", "split": split, **record})
  return records


def _random_int(rng: np.random.Generator, num_digits: int) -> int:
  if num_digits == 1:
    return int(rng.integers(0, 10))
  digits = [int(rng.integers(1, 10))] + [int(x) for x in rng.integers(0, 10, size=num_digits - 1)]
  return int("".join(map(str, digits)))


def _check_operand(name, value):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_difficulty(name, value) -> float:
  try:
    d = float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{name} must be a number, got {value!r}") from None
  if not 1.0 <= d <= MAX_DIGITS:
    raise ValueError(f"{name} must be in [1, {MAX_DIGITS}], got {value!r}")
  return d


def _check_fraction(value, name="heldout_fraction"):
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value!r}")
