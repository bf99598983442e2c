"""Cheap structural reading of normalised answers: matrices, tuples / intervals, lists, sets, colon forms.

``parse_structure(text)`` returns a ``Structure`` (or None for a scalar / anything else), in linear time:

  * ``matrix``: ``\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}`` (after ``normalize`` made every matrix
    environment ``pmatrix``); rows of equal length, entries in row-major order; **ordered**;
  * ``tuple``: ``(a, b, ...)`` / ``[a, b)`` ... — a point, a vector or an interval; **ordered**, and the two
    bracket characters are part of the value (``[1, 2]`` is not ``(1, 2)``);
  * ``set``: ``\\{a, b\\}`` — **unordered** (a multiset, so ``\\{1, 1\\}`` is not ``\\{1\\}``);
  * ``list``: ``a, b, c`` at top level (solutions of an equation) — **unordered** multiset;
  * ``union``: ``(a, b) \\cup [c, \\infty)`` — its intervals / sets in any order (compared only with another
    union; a union written differently, e.g. merged, goes to the symbolic stage);
  * ``colon``: ``4:30``, ``4:51:06``, ``1:03 pm``, ``3:5`` — parts compared exactly, in order, never as a
    division (two different clock times are two different answers).

``compare(gold, pred)`` matches two structures: shape and order first, then entries with the cheap rules
(``entry_verdict``: normalised strings, exact numbers); it returns True / False when that decides, or the
list of entry pairs (ordered) / the two entry lists (unordered) left for the symbolic stage.
"""
import dataclasses
import fractions
import re
from typing import List, Optional, Tuple

from ngrpo_jax.grading import normalize
from ngrpo_jax.grading import numbers

MAX_ITEMS = 64
_MATRIX = re.compile(r"^\\begin\{pmatrix\}(.*)\\end\{pmatrix\}$", re.DOTALL)
_COLON = re.compile(r"^(\d{1,4}(?:\s*:\s*\d{1,4})+)\s*(?:\\text\{\s*)?([ap])?\.?\s*(?:m\.?)?\s*\}?$", re.IGNORECASE)
_AMPM = re.compile(r"^(.*?\d)\s*(?:\\text\{\s*([ap])\.?\s*m\.?\s*\}|([ap])\.?\s*m\.?)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Structure:
  """A structured answer.

  Attributes:
    kind: "matrix", "tuple", "set", "list", "union" (of intervals / sets, unordered) or "colon".
    items: entry strings (row-major for a matrix; parts for a colon form).
    shape: (rows, columns) for a matrix, (len(items),) otherwise.
    brackets: the two bracket characters of a tuple ("()", "[)", ...), "" otherwise; "am"/"pm" or "" for a
      colon form.
  """
  kind: str
  items: Tuple[str, ...]
  shape: Tuple[int, ...]
  brackets: str = ""

  @property
  def ordered(self) -> bool:
    return self.kind in ("matrix", "tuple", "colon")


def split_top(s: str, sep: str = ",") -> List[str]:
  """Splits ``s`` at ``sep`` outside brackets and braces (``\\{``/``\\}`` count as brackets)."""
  parts, depth, start, i, n = [], 0, 0, 0, len(s)
  while i < n:
    c = s[i]
    if c == "\\" and i + 1 < n and s[i + 1] in "{}":
      depth += 1 if s[i + 1] == "{" else -1
      i += 2
      continue
    if c in "{([":
      depth += 1
    elif c in "})]":
      depth -= 1
    elif depth == 0 and s.startswith(sep, i):
      parts.append(s[start:i])
      start = i + len(sep)
      i += len(sep)
      continue
    i += 1
  parts.append(s[start:])
  return parts


def _enclosed(s: str, left: int, right: int) -> bool:
  """True when ``s[left]`` and ``s[right]`` are one bracket pair enclosing everything between them."""
  depth = 0
  for i in range(left, right + 1):
    if s[i] in "([{":
      depth += 1
    elif s[i] in ")]}":
      depth -= 1
      if depth == 0 and i != right:
        return False
  return depth == 0


def parse_structure(text: str) -> Optional[Structure]:
  """The ``Structure`` of a normalised answer, or None for a scalar (see module docstring)."""
  if not isinstance(text, str):
    return None
  s = text.strip()
  if not s or len(s) > 4000:
    return None
  m = _MATRIX.match(s)
  if m and "\\begin" not in m.group(1):
    rows = [r for r in re.split(r"\\\\", m.group(1))]
    rows = [r for r in rows if r.strip()] or [""]
    cells = [[c.strip() for c in r.split("&")] for r in rows]
    if len({len(r) for r in cells}) != 1 or any(not c for r in cells for c in r):
      return None
    items = tuple(c for r in cells for c in r)
    if len(items) > MAX_ITEMS:
      return None
    return Structure("matrix", items, (len(cells), len(cells[0])))
  colon = _colon(s)
  if colon is not None:
    return colon
  if "\\cup" in s and "\\cap" not in s and "=" not in s:
    items = [x.strip() for x in split_top(s, ",")]
    if len(items) >= 2 and len(items) <= MAX_ITEMS and all(parse_structure(x) is not None for x in items):
      return Structure("list", tuple(items), (len(items),))  # a list of unions (several set answers)
    pieces = [x.strip() for x in split_top(s, "\\cup")]
    parsed = [parse_structure(x) for x in pieces]
    if len(pieces) >= 2 and all(x is not None and x.kind in ("tuple", "set") for x in parsed):
      return Structure("union", tuple(pieces), (len(pieces),))
    return None
  if "\\cup" in s or "\\cap" in s or "<" in s or ">" in s or re.search(r"\\(?:le|ge|ne)(?![A-Za-z])", s):
    return None
  if "=" in s and len(split_top(s)) < 2:
    return None  # an equation, not a structure (a list of assignments "x=1, x=2" is a list)
  if s.startswith("\\{") and s.endswith("\\}"):
    inner = s[2:-2]
    items = [x.strip() for x in split_top(inner)]
    braced = "{" + inner.replace("\\{", "{").replace("\\}", "}") + "}"
    if len(items) <= MAX_ITEMS and all(items) and _enclosed(braced, 0, len(braced) - 1):
      return Structure("set", tuple(items), (len(items),))
    return None
  if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _enclosed(s.replace("\\{", "{").replace("\\}", "}"),
                                                                   0, len(s) - 1):
    items = [x.strip() for x in split_top(s[1:-1])]
    if 2 <= len(items) <= MAX_ITEMS and all(items):
      return Structure("tuple", tuple(items), (len(items),), s[0] + s[-1])
    return None
  items = [x.strip() for x in split_top(s)]
  if 2 <= len(items) <= MAX_ITEMS and all(items):
    return Structure("list", tuple(items), (len(items),))
  return None


def _colon(s: str) -> Optional[Structure]:
  t = re.sub(r"\\text\{([^{}]*)\}", r"\1", s).strip()
  if t.startswith("{") and t.endswith("}"):
    t = t[1:-1].strip()
  ampm = ""
  m = _AMPM.match(t)
  if m:
    t, ampm = m.group(1), (m.group(2) or m.group(3)).lower() + "m"
  if not re.fullmatch(r"\d{1,4}(?:\s*:\s*\d{1,4})+", t):
    return None
  parts = tuple(p.strip() for p in t.split(":"))
  return Structure("colon", parts, (len(parts),), ampm)


_MULTI_KINDS = ("tuple", "matrix", "set", "union")


def entry_verdict(gold: str, pred: str, depth: int = 0) -> Optional[bool]:
  """Cheap equality of two entries: True / False when decided by strings or exact numbers, else None."""
  g, p = normalize.normalize_answer(gold), normalize.normalize_answer(pred)
  if g.key == p.key:
    return True
  g_text, p_text = normalize.strip_leading_variable(g.text), normalize.strip_leading_variable(p.text)
  if re.sub(r"\s+", "", g_text) == re.sub(r"\s+", "", p_text):
    return True
  gv, pv = numbers.parse_number(g_text), numbers.parse_number(p_text)
  if gv is not None and pv is not None:
    if g.percent != p.percent:
      return None
    return gv == pv
  if depth < 3:
    gs, ps = parse_structure(g_text), parse_structure(p_text)
    if gs is not None and ps is not None:
      verdict = compare(gs, ps, depth + 1)
      return verdict if isinstance(verdict, bool) else None
    one = gs if gs is not None else ps
    if one is not None and one.kind in _MULTI_KINDS and len(one.items) >= 2:
      return False  # a tuple / matrix / set of several entries is never equal to a single value
  return None


def _colon_equal(g: Structure, p: Structure) -> bool:
  if len(g.items) != len(p.items):
    return False
  if g.brackets and p.brackets != g.brackets:
    return False
  return all(int(a) == int(b) for a, b in zip(g.items, p.items))


def _matching(verdicts: List[List[Optional[bool]]]) -> Optional[bool]:
  """Perfect matching of a square verdict table: True if one exists through True cells only, False if none
  exists even through the undecided ones, None otherwise. Augmenting paths, O(n^3) for n <= MAX_ITEMS."""

  def perfect(allowed) -> bool:
    n = len(verdicts)
    match_of_col = [-1] * n

    def augment(row, seen):
      for col in range(n):
        if allowed(verdicts[row][col]) and not seen[col]:
          seen[col] = True
          if match_of_col[col] < 0 or augment(match_of_col[col], seen):
            match_of_col[col] = row
            return True
      return False

    return all(augment(row, [False] * n) for row in range(n))

  if perfect(lambda v: v is True):
    return True
  if not perfect(lambda v: v is not False):
    return False
  return None


Pending = Tuple[str, Tuple[Tuple[str, str], ...], Tuple[str, ...], Tuple[str, ...]]


def compare(gold: Structure, pred: Structure, depth: int = 0):
  """Compares two structures (gold first).

  Returns:
    True / False when decided here; otherwise a pending task for the symbolic stage:
    ``("ordered", ((g_i, p_i), ...), (), ())`` — every pair must be equal — or
    ``("unordered", (), g_items, p_items)`` — a one-to-one matching of equal entries must exist.
  """
  if gold.kind == "colon" or pred.kind == "colon":
    return gold.kind == pred.kind and _colon_equal(gold, pred)
  if gold.kind == "matrix" or pred.kind == "matrix":
    # A column (or row) vector may be written as a parenthesised tuple; otherwise both are matrices of one shape.
    other = pred if gold.kind == "matrix" else gold
    matrix = gold if gold.kind == "matrix" else pred
    if other.kind == "matrix":
      if gold.shape != pred.shape:
        return False
    elif not (other.kind == "tuple" and other.brackets == "()" and 1 in matrix.shape
              and len(other.items) == len(matrix.items)):
      return False
    ordered = True
  elif gold.kind == "tuple":
    if pred.kind == "tuple" and pred.brackets != gold.brackets:
      return False
    if pred.kind == "set":
      return False
    ordered = True  # a bare "1, 2" for the ordered pair "(1, 2)" is read in order
  elif pred.kind == "tuple" and pred.brackets != "()":
    return False  # an interval is not a list of solutions
  else:
    ordered = False
  if len(gold.items) != len(pred.items):
    return False
  if ordered:
    pending = []
    for g, p in zip(gold.items, pred.items):
      verdict = entry_verdict(g, p, depth)
      if verdict is False:
        return False
      if verdict is None:
        pending.append((g, p))
    return True if not pending else ("ordered", tuple(pending), (), ())
  table = [[entry_verdict(g, p, depth) for p in pred.items] for g in gold.items]
  verdict = _matching(table)
  if verdict is not None:
    return verdict
  return ("unordered", (), tuple(gold.items), tuple(pred.items))


def decimal_comma(gold_value: Optional[fractions.Fraction], gold_text: str, pred_text: str) -> Optional[str]:
  """``3,5`` -> ``3.5`` when the gold is a decimal number and ``pred_text`` is ``digits,digits`` that is not a
  thousands-separated integer (``3,500``); else None."""
  if gold_value is None or "." not in gold_text:
    return None
  m = re.fullmatch(r"([-+]?\d+),(\d+)", pred_text.replace(" ", ""))
  if not m or re.fullmatch(r"[-+]?[1-9]\d{0,2}(?:,\d{3})+", pred_text.replace(" ", "")):
    return None
  return f"{m.group(1)}.{m.group(2)}"
