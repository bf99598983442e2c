"""A thin normalisation layer in front of the LaTeX parser.

``normalize_answer`` rewrites an extracted answer into a canonical LaTeX-ish string and records the
annotations it removed (percent sign, degree sign, units). It only does what the parser
(``latex2sympy2_extended``) does not: presentation macros, spacing, unicode, thousands separators, units
and text, and ``or``/``and`` lists. Everything is linear-time string work and never raises.

Truncated answers are **not** repaired (an unclosed brace stays unclosed and fails to parse); extraction
rejects them first (``extract.incomplete_reason``).

Policies (documented here, applied by ``equivalence``):
  * percent: ``8\\%`` is compared as ``8`` and, alternatively, as ``0.08``; ``0.8\\%`` is not ``8\\%``.
  * degrees: ``120^\\circ`` is compared as ``120`` (a radian answer ``2\\pi/3`` is also accepted).
  * units / trailing text: ``5.4 \\text{ cents}``, ``864 \\mbox{ inches}^2`` and ``5.4 cents`` become the number.
  * thousands separators: ``13,535`` and ``27{,}648`` are integers only when the whole answer is one
    number with 3-digit groups; otherwise commas separate list items.
"""
import dataclasses
import re

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ",
    "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt", "\u2264": "\\le ", "\u2265": "\\ge ",
    "\u2260": "\\ne ", "\u00b0": "^\\circ", "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00bd": "1/2",
    "\u2009": " ", "\u00a0": " ", "\u200b": "",
}
_SPACING = re.compile(r"(?<!\\)\\[!,;:> ]|\\quad|\\qquad|~|\\displaystyle|\\textstyle|\\limits")
_WRAPPER_COMMANDS = ("\\mathrm", "\\textnormal", "\\mathbf", "\\textbf", "\\boldsymbol", "\\bm", "\\mathit", "\\textit", "\\operatorname",
                     "\\displaystyle", "\\boxed", "\\fbox")
# Matrix environments with the same meaning (``vmatrix`` is a determinant and is left alone).
_MATRIX_ENV = re.compile(r"\\(begin|end)\{(?:bmatrix|Bmatrix|matrix|smallmatrix|pmatrix)\}")
# MATH's normalised golds collapse the row separator ``\\`` to one backslash (``\begin{pmatrix}7\-2\end{pmatrix}``).
_COLLAPSED_ROW = re.compile(r"(?<!\\)\\(?=[-+\d.(])")
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|\^\s*\{\s*\\text\{\s*o\s*\}\s*\}|"
                     r"\s*\\text\{\s*degrees?\s*\}|\s+degrees?\b")
_PERCENT = re.compile(r"\\%|%|\s*\\text\{\s*percent\s*\}|\s+percent\b")
_TRAILING_TEXT_UNIT = re.compile(
    r"^(?P<value>.*?[\w}).])\s*\\(?:text|mbox|textrm|mathrm)\s*\{\s*(?P<unit>[A-Za-z][A-Za-z .\-]*)\}"
    r"\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*$")
_MATH_NAMES = frozenset("pi sin cos tan cot sec csc log ln exp sqrt frac cup cap infty or and i e".split())
_TRAILING_WORD_UNIT = re.compile(r"^(?P<value>[-+]?[\d.,/{}\\a-z]*\d[\d.}]*)(?P<space>\s*)(?P<unit>[A-Za-z][A-Za-z .]*?)"
                                 r"(?:\^\s*\{?\s*[23]\s*\}?)?\s*$")
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_OR_AND = re.compile(r"\s*(?:\\text\{\s*(?:or|and)\s*\}|\{\s*(?:or|and)\s*\}|\\(?:mbox|textrm)\{\s*(?:or|and)\s*\}|\s+or\s+|\s+and\s+)\s*")
_LEADING_VARIABLE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?!=)")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF_SHORT = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d)|\\frac\s*(\d)\s*(\{[^{}]*\})")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_DOLLAR_UNITS = re.compile(r"^\\\$\s*|^\$\s*(?=\d)")


_TRIG = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc)")
_DEGREE_ARGUMENT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ)")
_SHORT_UNITS = frozenset(
    "cm m km mm nm kg g mg lb lbs oz ft in yd mi s ms min h hr hrs l ml mph kph sq cc km/h m/s".split())
_NOT_UNITS = frozenset("not no is isn't are wrong incorrect false never none or and but than if".split())
_MAX_UNIT_WORDS = 3
_MAX_UNIT_SCAN = 300  # answers longer than this are not searched for a trailing unit


def _is_unit(unit: str, spaced: bool = True) -> bool:
  """A trailing unit: up to 3 words, none a negation or a math name; without a space only known units of two
  or more letters (``5cm``), never a single letter (``3s^2`` is an expression in ``s``)."""
  words = unit.replace(".", " ").lower().split()
  if not words or len(words) > _MAX_UNIT_WORDS:
    return False
  if any(w in _NOT_UNITS or w in _MATH_NAMES for w in words):
    return False
  if not spaced and len(words[0]) == 1:
    return False  # 3s^2, 2m: a single letter right after a number is a variable, not seconds / metres
  if not spaced or len(words[0]) < 3:
    return words[0] in _SHORT_UNITS or (spaced and len(words[0]) >= 3)
  return True


def has_disqualifying_text(text: str) -> bool:
  """True if a ``\text{...}`` left in the answer contains a negation or sentence (``42 \text{ is not it}``)."""
  for m in re.finditer(r"\\(?:text|mbox|textrm)\s*\{([^{}]*)\}", text):
    words = m.group(1).lower().split()
    if len(words) > _MAX_UNIT_WORDS or any(w in _NOT_UNITS and w not in ("or", "and") for w in words):
      return True
  return False


def _canonical_matrices(s: str) -> str:
  """``bmatrix``/``Bmatrix``/``matrix``/``smallmatrix`` -> ``pmatrix``; collapsed row separators restored."""
  if "matrix}" not in s:
    return s
  s = _MATRIX_ENV.sub(lambda m: "\\" + m.group(1) + "{pmatrix}", s)
  out, i = [], 0
  while True:
    j = s.find("\\begin{pmatrix}", i)
    k = s.find("\\end{pmatrix}", j) if j >= 0 else -1
    if j < 0 or k < 0:
      out.append(s[i:])
      break
    body = s[j + len("\\begin{pmatrix}"):k]
    out.append(s[i:j] + "\\begin{pmatrix}" + _COLLAPSED_ROW.sub(r"\\\\", body) + "\\end{pmatrix}")
    i = k + len("\\end{pmatrix}")
  return "".join(out)


# A matrix written as an ``array`` (or any matrix environment) inside round / square brackets:
# ``\left(\begin{array}{cc} 1 & 2 \\ 3 & 4 \end{array}\right)`` is the pmatrix of the same entries.
_BRACKETED_MATRIX = re.compile(r"[(\[]\s*\\begin\{(array|pmatrix)\}(?:\{[lcr| ]*\})?(.*)\\end\{\1\}\s*[)\]]",
                               re.DOTALL)
# Upright-roman words are text: ``\mathrm{Thursday}``, ``\textnormal{even}`` -> ``\text{...}`` (then handled as
# words / units); ``\mathrm{}`` around anything else (``\mathrm{12}``) is a presentation wrapper.
_ROMAN_WORD = re.compile(r"\\(?:mathrm|textnormal|textrm)\s*\{([A-Za-z][A-Za-z .\-]*)\}")
_EMPTY_ITEM = re.compile(r",\s*,")
_ASSIGNMENT_ITEM = re.compile(r"^\s*([A-Za-z])\s*=\s*([^=<>]+)$")


def _bracketed_matrix(s: str) -> str:
  """``(\\begin{array}{cc}...\\end{array})`` / ``[\\begin{pmatrix}...\\end{pmatrix}]`` -> the pmatrix alone."""
  if "\\begin{" not in s:
    return s
  m = _BRACKETED_MATRIX.fullmatch(s.strip())
  if not m or "\\begin{" in m.group(2):
    return s
  return "\\begin{pmatrix}" + m.group(2) + "\\end{pmatrix}"


def _same_variable_assignments(s: str) -> str:
  """``x = 1, x = 3`` -> ``1, 3``: a list whose items all assign the **same** variable is the list of values.

  Items assigning different variables (``x = 1, y = 2``) are kept: that is a tuple-like answer, not a list.
  """
  if s.count("=") < 2 or "," not in s:
    return s
  depth, items, cur = 0, [], ""
  for c in s:
    depth += c in "{([" 
    depth -= c in "})]"
    if c == "," and depth == 0:
      items.append(cur)
      cur = ""
    else:
      cur += c
  items.append(cur)
  matches = [_ASSIGNMENT_ITEM.match(item) for item in items]
  if not all(matches) or len({m.group(1) for m in matches}) != 1:
    return s
  return ", ".join(m.group(2).strip() for m in matches)


@dataclasses.dataclass(frozen=True)
class Normalized:
  """A normalised answer.

  Attributes:
    text: canonical LaTeX string (spaces kept where meaningful for the parser).
    key: ``text`` with all whitespace removed and lower-cased ``\\text``; used for string matching.
    percent: a percent sign was removed.
    degrees: a degree sign was removed.
    unit: a trailing unit / text that was removed (or "").
  """
  text: str
  key: str
  percent: bool = False
  degrees: bool = False
  unit: str = ""


def _strip_math_delimiters(s: str) -> str:
  s = s.strip()
  changed = True
  while changed and s:
    changed = False
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
      if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
        s = s[len(left):len(s) - len(right)].strip()
        changed = True
    if s.endswith(".") and not re.search(r"\d\.$", s[-3:] if len(s) > 2 else s):
      s = s[:-1].strip()
      changed = True
  return s


def _unwrap(s: str, command: str) -> str:
  """Replaces ``\\command{X}`` by ``X`` (balanced braces, linear per occurrence)."""
  out = []
  i = 0
  while True:
    j = s.find(command + "{", i)
    if j < 0:
      out.append(s[i:])
      break
    depth = 0
    k = j + len(command)
    end = None
    while k < len(s):
      if s[k] == "{":
        depth += 1
      elif s[k] == "}":
        depth -= 1
        if depth == 0:
          end = k
          break
      k += 1
    if end is None:
      out.append(s[i:])
      break
    out.append(s[i:j])
    out.append(s[j + len(command) + 1:end])
    i = end + 1
  return "".join(out)


def extract_braces_balanced(s: str) -> bool:
  """True when every prefix of ``s`` closes no more braces than it opens and the totals match."""
  depth = 0
  for c in s:
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth < 0:
        return False
  return depth == 0


def strip_leading_variable(s: str) -> str:
  """``x = 5`` -> ``5`` (a single variable, optionally subscripted, then ``=``)."""
  m = _LEADING_VARIABLE.match(s)
  if m and "=" not in s[m.end():] and "<" not in s and ">" not in s:
    return s[m.end():].strip()
  return s


def normalize_answer(answer: str) -> Normalized:
  """Normalises an extracted answer string (see module docstring for the rules and policies).

  Args:
    answer: extracted answer (LaTeX or plain text). Non-strings are treated as "".

  Returns:
    A ``Normalized`` record.
  """
  if not isinstance(answer, str):
    answer = ""
  s = answer
  for k, v in _UNICODE.items():
    if k in s:
      s = s.replace(k, v)
  s = _strip_math_delimiters(s)
  s = _canonical_matrices(s)
  s = s.replace("\\left", "").replace("\\right", "")
  s = re.sub(r"\\(?:big|Big|bigg|Bigg)[lr]?", "", s)
  s = _bracketed_matrix(s)
  s = _ROMAN_WORD.sub(r"\\text{\1}", s)
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
  s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}").replace("\\lvert", "|").replace("\\rvert", "|")
  s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
  s = s.replace("\\leqslant", "\\le").replace("\\geqslant", "\\ge")
  s = re.sub(r"\\(?:hline|vline)", "", s)
  s = _SPACING.sub(" ", s)
  for command in _WRAPPER_COMMANDS:
    if command in s:
      s = _unwrap(s, command)
  s = s.replace("{,}", "")
  s = _DOLLAR_UNITS.sub("", s)
  s = s.replace("\\$", "")
  if _TRIG.search(s):  # \cos 30^\circ: the degree sign converts the argument to radians
    s = _DEGREE_ARGUMENT.sub(r"(\1\\pi/180)", s)
  degrees = False
  if _DEGREE.search(s):
    s = _DEGREE.sub("", s)
    degrees = True
  percent = False
  if _PERCENT.search(s):
    s = _PERCENT.sub("", s)
    percent = True
  s = _OR_AND.sub(", ", s)
  s = _EMPTY_ITEM.sub(",", s)  # an Oxford comma: "1, 2, and 3" -> "1, 2, , 3" -> "1, 2, 3"
  s = _same_variable_assignments(s)
  unit = ""
  m = _TRAILING_TEXT_UNIT.match(s) if len(s) <= _MAX_UNIT_SCAN else None  # (the unit patterns backtrack)
  if m and m.group("value").strip() and _is_unit(m.group("unit")):
    unit = m.group("unit").strip()
    s = m.group("value").strip()
  m = _TRAILING_WORD_UNIT.match(s) if len(s) <= _MAX_UNIT_SCAN else None
  if m and _is_unit(m.group("unit"), spaced=bool(m.group("space"))):
    unit = m.group("unit").strip()
    s = m.group("value").strip()
  # A bare \text{...} answer (a name, a word): keep the words.
  stripped = s.strip()
  if re.fullmatch(r"\\(?:text|mbox|textrm)\{[^{}]*\}", stripped):
    s = stripped[stripped.index("{") + 1:-1]
  s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
  s = _FRAC_HALF_SHORT.sub(lambda m: ("\\frac" + m.group(1) + "{" + m.group(2) + "}") if m.group(1)
                           else ("\\frac{" + m.group(3) + "}" + m.group(4)), s)
  s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
  s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
  if _THOUSANDS.match(s.replace(" ", "")):
    s = s.replace(",", "").replace(" ", "")
  while s.startswith("{") and s.endswith("}") and extract_braces_balanced(s[1:-1]):
    s = s[1:-1].strip()
  key = re.sub(r"\s+", "", s)
  key = re.sub(r"\\text\{([^{}]*)\}", lambda m: m.group(1).lower(), key)
  if re.fullmatch(r"[A-Za-z][A-Za-z ]*", s):
    key = key.lower()
  return Normalized(text=s, key=key, percent=percent, degrees=degrees, unit=unit)
