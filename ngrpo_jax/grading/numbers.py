"""Exact parsing of plain numeric answers, the cheap stage before SymPy.

Integers, decimals (``.35625``), fractions (``\\frac{3}{4}``, ``-35/9``, ``(35)/(9)``, ``\\frac{35}{-9}``), and scientific
notation (``3\\times 10^{5}``, ``3e5``) are parsed into exact ``fractions.Fraction`` values, so
``99999999999999999999`` and ``10^{20}`` differ while ``3.2`` and ``\\frac{16}{5}`` agree. Exponents are
capped (|exponent| <= ``MAX_EXPONENT``) and digit strings are capped (``MAX_DIGITS``) so a parse never
allocates a huge integer; anything else returns None and is left to the symbolic stage.
"""
import fractions
import re
from typing import Optional

MAX_EXPONENT = 400
MAX_DIGITS = 400

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_INT = r"[-+]?\d+"
_DECIMAL = re.compile(rf"^({_NUM})$")
_FRAC_LATEX = re.compile(rf"^([-+]?)\\frac\{{\s*({_NUM})\s*\}}\{{\s*({_NUM})\s*\}}$")
# ``a/b``, also with bracketed parts ``(a)/(b)`` (a bracket around a plain numeral changes nothing).
_FRAC_SLASH = re.compile(rf"^([-+]?)(?:\(({_NUM})\)|({_NUM}))\s*/\s*(?:\(({_NUM})\)|({_NUM}))$")
_SCI_LATEX = re.compile(rf"^({_NUM})\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*(?:\{{\s*({_INT})\s*\}}|({_INT}))$")
_POW10 = re.compile(rf"^([-+]?)10\s*\^\s*(?:\{{\s*({_INT})\s*\}}|(\d))$")
_SCI_E = re.compile(rf"^({_NUM})[eE]({_INT})$")


def _decimal(text: str) -> Optional[fractions.Fraction]:
  digits = sum(c.isdigit() for c in text)
  if digits > MAX_DIGITS:
    return None
  try:
    return fractions.Fraction(text)
  except (ValueError, ZeroDivisionError):
    return None


def _pow10(exponent: str) -> Optional[fractions.Fraction]:
  try:
    e = int(exponent)
  except ValueError:
    return None
  if abs(e) > MAX_EXPONENT:
    return None
  return fractions.Fraction(10) ** e


def parse_number(text: str) -> Optional[fractions.Fraction]:
  """Exact value of a plain numeric answer, or None if ``text`` is not one of the supported forms.

  Args:
    text: a normalised answer string (see ``normalize.normalize_answer``).

  Returns:
    The exact rational value, or None.
  """
  if not isinstance(text, str) or len(text) > 2 * MAX_DIGITS:
    return None
  s = text.strip().replace(" ", "")
  if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
    s = s[1:-1]
  m = _DECIMAL.match(s)
  if m:
    return _decimal(m.group(1))
  m = _FRAC_LATEX.match(s)
  if m:
    num, den = _decimal(m.group(2)), _decimal(m.group(3))
    if num is None or den is None or den == 0:
      return None
    value = num / den
    return -value if m.group(1) == "-" else value
  m = _FRAC_SLASH.match(s)
  if m:
    num, den = _decimal(m.group(2) or m.group(3)), _decimal(m.group(4) or m.group(5))
    if num is None or den is None or den == 0:
      return None
    return -num / den if m.group(1) == "-" else num / den
  m = _SCI_LATEX.match(s)
  if m:
    mantissa, scale = _decimal(m.group(1)), _pow10(m.group(2) or m.group(3))
    if mantissa is None or scale is None:
      return None
    return mantissa * scale
  m = _POW10.match(s)
  if m:
    scale = _pow10(m.group(2) or m.group(3))
    if scale is None:
      return None
    return -scale if m.group(1) == "-" else scale
  m = _SCI_E.match(s)
  if m:
    mantissa, scale = _decimal(m.group(1)), _pow10(m.group(2))
    if mantissa is None or scale is None:
      return None
    return mantissa * scale
  return None
