"""A fast recursive-descent LaTeX -> SymPy parser for plain polynomial / rational answers; declines the rest.

Why: most of the symbolic stage's cost is the ANTLR parser of ``latex2sympy2_extended`` (tens to hundreds
of milliseconds per answer, seconds on loaded cores; see the checker section of ``docs/benchmarks.md``).
Most answers that reach the symbolic stage are small polynomials and rational expressions, which a
hand-written parser reads in microseconds.

Rule: ``parse_fast(text)`` returns a SymPy expression **only** for texts inside this grammar, and ``None``
for anything else (the caller then uses ``latex2sympy2_extended``)::

    expr    := ["+"|"-"] term (("+"|"-") term)*
    term    := signed (("\\cdot"|"\\times"|"*"|"/") signed | <implicit> power)*
    signed  := ("+"|"-")* power
    power   := atom ["^" (digit | letter | "{" expr "}")]          (one "^" only: x^2^3 declines)
    atom    := integer | letter | "\\pi" | "(" expr ")" | "\\left(" expr "\\right)" | "{" expr "}"
             | ("\\frac"|"\\dfrac"|"\\tfrac") "{" expr "}" "{" expr "}" | "\\sqrt" "{" expr "}"

Letters are single Latin letters, lower-cased (as ``latex2sympy2_extended`` with ``lowercase_symbols``);
runs of three or more letters (words) and ``d`` before a letter (a differential) decline; ``e`` and ``i`` decline (Euler's number / imaginary unit in the other parser). Policy: **decline whenever the
other parser could read the text differently**, so the fast path never changes a verdict, only its cost.
Implicit multiplication declines when

* the right factor is a number literal or a ``{}`` group (``2 3``, ``x2``, MATH leftovers ``100{3}``: the
  other parser adds or concatenates);
* the right factor is a ``\\frac`` and the left is a constant (mixed numbers ``2\\frac{1}{2}`` = 5/2);
* the right factor is a bracket group and the left a bare letter whose group has no top-level ``+``/``-``
  (function application ``f(x)``, ``u(v)``), or both are constants (``(2)(3)``, read as a mixed number).

Decimals must already be rewritten as exact fractions (``symbolic.exact_decimals``); a ``.`` declines.
Every accepted text of the project's corpus and public case file is checked against
``latex2sympy2_extended`` by ``tests/test_grading_fastparse.py``.
"""
import re
from typing import Optional

import sympy

MAX_CHARS = 400
MAX_DEPTH = 40
MAX_EXPONENT = 1000

_TOKEN = re.compile(r"\s+|\\(?:left|right)\s*[()]|\\[A-Za-z]+|\\[,;:! ]|\d+|[A-Za-z]|[-+*/^(){}]|.", re.DOTALL)
_SPACE_COMMANDS = {"\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad"}
# Words (``Monday``, ``odd``) and ``d`` before a letter (``dx``, a differential): the full parser reads them
# specially, so they decline.
_WORDISH = re.compile(r"[A-Za-z]{3,}|[dD][A-Za-z]")
_FRAC = {"\\frac", "\\dfrac", "\\tfrac"}
_TIMES = {"\\cdot", "\\times", "*"}
_OPEN = {"(", "\\left("}
_CLOSE = {")": "(", "\\right)": "\\left("}


class _Decline(Exception):
  """The text is outside the grammar (or ambiguous): let the full parser read it."""


def _tokens(text: str):
  out = []
  for m in _TOKEN.finditer(text):
    tok = m.group(0)
    if tok.isspace() or tok in _SPACE_COMMANDS:
      continue
    if tok.startswith(("\\left", "\\right")):
      tok = re.sub(r"\s+", "", tok)
    out.append(tok)
  return out


class _Parser:
  """Recursive descent over the token list; every method raises ``_Decline`` outside the grammar."""

  def __init__(self, tokens):
    self.toks = tokens
    self.pos = 0
    self.depth = 0

  def peek(self):
    return self.toks[self.pos] if self.pos < len(self.toks) else None

  def take(self, expected=None):
    tok = self.peek()
    if tok is None or (expected is not None and tok != expected):
      raise _Decline()
    self.pos += 1
    return tok

  def enter(self):
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise _Decline()

  def expr(self):
    self.enter()
    value = self.term()
    while self.peek() in ("+", "-"):
      op = self.take()
      rhs = self.term()
      value = value + rhs if op == "+" else value - rhs
    self.depth -= 1
    return value

  def signed(self):
    sign = 1
    while self.peek() in ("+", "-"):
      if self.take() == "-":
        sign = -sign
    value, kind = self.power()
    return (value if sign == 1 else -value), ("signed" if sign == -1 else kind)

  def term(self):
    value, kind = self.signed()
    while True:
      tok = self.peek()
      if tok in _TIMES or tok == "/":
        self.take()
        rhs, kind = self.signed()
        if tok == "/":
          nxt = self.peek()
          if nxt is not None and nxt not in ("+", "-", ")", "}", "\\right)") and nxt not in _TIMES and nxt != "/":
            raise _Decline()  # x/2y: x/(2y) or (x/2)y? left to the full parser
          value = value / rhs
        else:
          value = value * rhs
        continue
      if tok is None or tok in ("+", "-", ")", "}", "\\right)", "^"):
        if tok == "^":
          raise _Decline()  # a second exponent (x^2^3)
        break
      value, kind = self.implicit(value, kind)
    return value

  def implicit(self, left, left_kind):
    """Implicit multiplication ``left · next`` (declines ambiguous juxtapositions, see module docstring)."""
    tok = self.peek()
    left_const = not left.free_symbols
    if tok.isdigit() or tok == "{":
      raise _Decline()
    if tok in _FRAC and left_const:
      raise _Decline()
    if tok in _OPEN:
      start = self.pos
      right, kind = self.power()
      group = self.toks[start:self.pos]
      if left_kind == "letter" and not _has_binary_sign(group):
        raise _Decline()
      if left_const and not right.free_symbols:
        raise _Decline()
      return left * right, kind
    right, kind = self.power()
    return left * right, kind

  def power(self):
    base, kind = self.atom()
    if self.peek() == "^":
      self.take()
      tok = self.peek()
      if tok == "{":
        self.take()
        exponent = self.expr()
        self.take("}")
      elif tok is not None and (tok.isdigit() and len(tok) == 1 or _is_letter(tok)):
        self.take()
        exponent = sympy.Integer(int(tok)) if tok.isdigit() else _symbol(tok)
      else:
        raise _Decline()
      if base.is_zero and (exponent.is_zero or not exponent.is_positive):
        raise _Decline()  # 0^0, 0^{-1}: left to the full parser
      if exponent.is_Integer and abs(int(exponent)) > MAX_EXPONENT:
        raise _Decline()  # huge powers: the guard and the full parser decide
      return sympy.Pow(base, exponent), "power"
    return base, kind

  def atom(self):
    tok = self.take()
    if tok == "i" and self.peek() == "\\sqrt":
      raise _Decline()  # i\sqrt{3}: left to the full parser
    if tok.isdigit():
      return sympy.Integer(int(tok)), "number"
    if _is_letter(tok):
      return _symbol(tok), "letter"
    if tok == "\\pi":
      return sympy.pi, "const"
    if tok in _OPEN:
      inner = self.expr()
      close = self.take()
      if _CLOSE.get(close) != tok:
        raise _Decline()
      return inner, "group"
    if tok == "{":
      before = self.toks[self.pos - 2] if self.pos >= 2 else None
      inner = self.expr()
      self.take("}")
      if before in _OPEN and self.peek() in _CLOSE:
        raise _Decline()  # ({H}): the full parser reads a set in brackets
      return inner, "group"
    if tok in _FRAC:
      self.take("{")
      num = self.expr()
      self.take("}")
      self.take("{")
      den = self.expr()
      self.take("}")
      if den.is_zero:
        raise _Decline()
      return num / den, "frac"
    if tok == "\\sqrt":
      self.take("{")
      inner = self.expr()
      self.take("}")
      return sympy.sqrt(inner), "sqrt"
    raise _Decline()


def _is_letter(tok: str) -> bool:
  return len(tok) == 1 and tok.isascii() and tok.isalpha() and tok.lower() != "e"


def _symbol(tok: str):
  return sympy.Symbol(tok.lower())


def _has_binary_sign(group) -> bool:
  """True when a bracket group's token list has a ``+``/``-`` at its top level that follows an operand."""
  depth = 0
  for k, tok in enumerate(group):
    if tok in ("(", "{", "\\left("):
      depth += 1
    elif tok in (")", "}", "\\right)"):
      depth -= 1
    elif tok in ("+", "-") and depth == 1 and k > 1 and group[k - 1] not in ("+", "-", "(", "\\left(", "^"):
      return True
  return False


def parse_fast(text: str) -> Optional[sympy.Basic]:
  """SymPy expression of ``text`` if it is inside the grammar of the module docstring, else ``None``.

  A text that is one brace group as a whole (``{\\frac{5}{2}}``, what ``exact_decimals`` makes of ``2.5``) is
  returned as a one-element ``FiniteSet``, exactly as ``latex2sympy2_extended`` reads it.
  """
  if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHARS or "." in text:
    return None
  if _WORDISH.search(re.sub(r"\\[A-Za-z]+", " ", text)):
    return None
  try:
    tokens = _tokens(text)
    if tokens.count("=") == 1:
      return _equation(tokens)
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.peek() is not None:
      return None
  except (_Decline, RecursionError, ZeroDivisionError, ValueError, TypeError, OverflowError):
    return None
  if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
    return None
  if tokens[0] == "{" and _closing(tokens, 0) == len(tokens) - 1:
    return sympy.FiniteSet(value)  # as the full parser: a whole-text brace group ({\frac{1}{2}}) is a set
  return value


def _equation(tokens):
  """``lhs = rhs`` (one ``=``, both sides in the grammar and not a whole brace group) -> unevaluated ``Eq``."""
  k = tokens.index("=")
  sides = []
  for part in (tokens[:k], tokens[k + 1:]):
    if not part or part[0] == "{":
      return None
    parser = _Parser(part)
    value = parser.expr()
    if parser.peek() is not None or value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
      return None
    sides.append(value)
  return sympy.Eq(sides[0], sides[1], evaluate=False)


def _closing(tokens, start: int) -> int:
  depth = 0
  for k in range(start, len(tokens)):
    depth += tokens[k] == "{"
    depth -= tokens[k] == "}"
    if depth == 0:
      return k
  return -1
