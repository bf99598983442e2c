"""Cheap size guards for answers about to be parsed symbolically (string work only, no SymPy import).

``guard(text)`` rejects answers whose symbolic evaluation could allocate without bound or take seconds
(huge powers, towers, factorials, long literals, deep nesting). ``equivalence`` runs it in the calling
process before dispatching to a worker, so such answers are decided at once instead of costing a worker
time-out and restart; ``symbolic`` runs it again inside the worker.
"""
import math
import re
from typing import Optional

MAX_CHARS = 1000
MAX_NESTING = 24
MAX_FACTORIAL = 1000
MAX_POWER_DIGITS = 10 ** 5
MAX_EXPONENT_NESTING = 3
MAX_MATRIX_CELLS = 64

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


def _exponent_nesting(text: str) -> int:
  """Deepest nesting of braced exponents: ``e^{e^{x}}`` -> 2."""
  stack = []  # for each open brace: True if it opened an exponent
  level = best = 0
  i, n = 0, len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c == "{":
      is_exp = text[:i].rstrip().endswith("^")
      stack.append(is_exp)
      level += is_exp
      best = max(best, level)
    elif c == "}" and stack:
      level -= stack.pop()
    i += 1
  return best


def guard(text: str) -> Optional[str]:
  """Cheap pre-check; returns a reason string when ``text`` is too expensive to parse, else None.

  Rejects: more than ``MAX_CHARS`` characters, nesting deeper than ``MAX_NESTING``, numeric powers with more
  than ``MAX_POWER_DIGITS`` digits (including towers such as ``10^{10^{10}}``), factorials of numbers above
  ``MAX_FACTORIAL`` or of bracketed powers, exponents nested deeper than ``MAX_EXPONENT_NESTING``
  (``e^{e^{e^{e^{10}}}}``), matrices with more than ``MAX_MATRIX_CELLS`` cells (``(10^{100})!``), binomials / Gamma of huge arguments and
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
  if _exponent_nesting(text) > MAX_EXPONENT_NESTING:
    return f"exponents nested deeper than {MAX_EXPONENT_NESTING} (a power tower)"
  if "matrix" in text and text.count("&") + text.count("\\\\") > 2 * MAX_MATRIX_CELLS:
    return f"matrix with more than {MAX_MATRIX_CELLS} cells"
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
