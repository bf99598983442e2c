"""Generates the labelled answer-checker corpus from the gold answers of MATH train and test.

    python benchmarks/make_checker_corpus.py [--data_dir ../shared/data] [--out benchmarks/data/checker_corpus.jsonl.gz]

For every distinct gold answer string of ``math_train/normalized.jsonl`` and ``math_test/normalized.jsonl``
the script writes

* **equivalent rewrites** (label ``True``): LaTeX styles (``\\dfrac``, ``\\frac12``, spacing, ``\\left(``),
  fraction / decimal / mixed forms of the same exact number, trailing units, thousands separators,
  reordering where order does not matter (solution lists, unions, sums), matrix environments (``pmatrix`` /
  ``bmatrix``, entries ``a/b`` vs ``\\frac{a}{b}``, spacing), equations with swapped sides, times in another
  spelling;
* **near misses** (label ``False``): sign, order of an ordered structure (tuple, vector, matrix), one entry
  off, a dropped / extra list item, reciprocal, open vs closed interval end, rounding (a decimal for a
  non-terminating exact value, a 15-digit mantissa for a huge integer), the bare right-hand side of an
  equation, truncation (a ``\\boxed{`` or brace that never closes);
* **model-style responses** around them: boxed after some reasoning, ``<think>`` blocks, ``Answer: $x$``
  without a box, several boxes for a multi-part answer, an earlier wrong box then the final one, chained
  equalities, a redundant closing brace (label kept), a response cut off inside its box (label ``False``).

Labels hold by construction (each transformation is value-preserving or value-changing by design); no
checker is run here. Problem texts are not written, only answer strings derived from the golds.

Split: ``heldout`` when ``int(sha256(gold)[:8], 16) % 5 == 0`` (about 20% of the golds, all cases of a
gold on the same side), ``tune`` otherwise. The rule was fixed before any checker was run on the corpus.
Output: gzip JSONL, one case per line ``{id, gold, pred, equivalent, kind, transform, split, source}``.
"""
import argparse
import fractions
import gzip
import hashlib
import json
import pathlib
import random
import re

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SETS = (("math_train", "train"), ("math_test", "test"))
MAX_EQUIVALENT = 2
MAX_WRONG = 2
MAX_RESPONSE_LEVEL = 2

_INT = re.compile(r"-?\d+")
_DEC = re.compile(r"-?\d*\.\d+")
_FRAC = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_SLASH = re.compile(r"(-?\d+)/(\d+)")
_MATRIX = re.compile(r"\\begin\{([pbBv]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)
_TIME = re.compile(r"\{?(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:([ap])\.?m\.?|([AP])M)?\}?")


def split_of(gold: str) -> str:
  """``heldout`` for about one gold in five (by hash, fixed before looking at any result), else ``tune``."""
  return "heldout" if int(hashlib.sha256(gold.encode("utf-8")).hexdigest()[:8], 16) % 5 == 0 else "tune"


def _balanced(s: str) -> bool:
  depth = 0
  for c in s:
    depth += c == "{"
    depth -= c == "}"
    if depth < 0:
      return False
  return depth == 0


def split_top(s: str, sep: str = ","):
  """Splits ``s`` at ``sep`` outside any bracket."""
  parts, depth, cur = [], 0, ""
  for c in s:
    if c in "{([":
      depth += 1
    elif c in "})]":
      depth -= 1
    if c == sep and depth == 0:
      parts.append(cur)
      cur = ""
    else:
      cur += c
  parts.append(cur)
  return parts


# ------------------------------------------------------------------ numbers
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")


def parse_number(s: str):
  """Exact value of an integer / decimal / fraction gold (``1,000,000`` included), else None."""
  s = s.strip()
  if _THOUSANDS.fullmatch(s):
    s = s.replace(",", "")
  if _INT.fullmatch(s) or _DEC.fullmatch(s):
    return fractions.Fraction(s)
  m = _FRAC.fullmatch(s)
  if m:
    v = fractions.Fraction(int(m.group(2)), int(m.group(3))) if int(m.group(3)) else None
    return -v if (v is not None and m.group(1)) else v
  m = _SLASH.fullmatch(s)
  if m and int(m.group(2)):
    return fractions.Fraction(int(m.group(1)), int(m.group(2)))
  return None


def terminating_decimal(v: fractions.Fraction):
  """Exact decimal string of ``v`` if its expansion terminates (<= 12 places), else None."""
  d = v.denominator
  for p in (2, 5):
    while d % p == 0:
      d //= p
  if d != 1:
    return None
  for places in range(0, 13):
    scaled = v * 10 ** places
    if scaled.denominator == 1:
      sign = "-" if scaled < 0 else ""
      digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
      return sign + (digits[:-places] + "." + digits[-places:] if places else digits)
  return None


def latex_frac(v: fractions.Fraction, style: str = "frac") -> str:
  sign = "-" if v < 0 else ""
  a, b = abs(v.numerator), v.denominator
  if b == 1:
    return sign + str(a)
  if style == "slash":
    return f"{sign}{a}/{b}"
  return f"{sign}\\{style}{{{a}}}{{{b}}}"


def rounded(v: fractions.Fraction, places: int) -> str:
  return f"{float(v):.{places}f}"


def number_cases(gold: str, v: fractions.Fraction, rng: random.Random):
  """Equivalent and wrong spellings of an exact number."""
  eq, wrong = [], []
  is_int = v.denominator == 1
  if is_int:
    n = v.numerator
    eq.append((f"{n}.0", "trailing_zero"))
    if abs(n) >= 1000:
      eq.append((f"{n:,}", "thousands_comma"))
      eq.append((f"{n:,}".replace(",", "{,}"), "thousands_brace_comma"))
      eq.append((f"{n:,}".replace(",", "\\,"), "thousands_thin_space"))
    eq.append((f"{n} \\text{{ units}}", "unit_text"))
    eq.append((f"\\mathbf{{{n}}}", "bold"))
    if n % 1000 == 0 and n != 0:
      k = len(str(abs(n))) - len(str(abs(n)).rstrip("0"))
      eq.append((f"{n // 10 ** k} \\times 10^{{{k}}}", "scientific_exact"))
    wrong.append((str(n + 1), "off_by_one"))
    wrong.append((str(n - 1), "off_by_minus_one"))
    if n != 0:
      wrong.append((str(-n), "sign"))
    if len(str(abs(n))) >= 2 and str(abs(n))[::-1] != str(abs(n)):
      wrong.append((("-" if n < 0 else "") + str(abs(n))[::-1].lstrip("0") or "0", "digits_reversed"))
    wrong.append((f"{n}.5", "half_off"))
    if len(str(abs(n))) >= 17:
      digits = str(abs(n))
      mantissa = digits[0] + "." + digits[1:15]
      approx = fractions.Fraction(mantissa) * 10 ** (len(digits) - 1)
      if approx != abs(v):
        wrong.append((f"{mantissa} \\times 10^{{{len(digits) - 1}}}", "rounded_scientific"))
  else:
    dec = terminating_decimal(v)
    is_decimal_gold = bool(_DEC.fullmatch(gold.strip()))
    if dec is not None:
      if not is_decimal_gold:
        eq.append((dec, "as_decimal"))
      else:
        eq.append((dec + "0", "trailing_zero"))
        if dec.startswith("0."):
          eq.append((dec[1:], "no_leading_zero"))
        if dec.startswith("-0."):
          eq.append(("-" + dec[2:], "no_leading_zero"))
        if re.fullmatch(r"-?\d+\.\d{1,2}", dec) or re.fullmatch(r"-?\d+\.\d{4,}", dec):
          eq.append((dec.replace(".", ","), "decimal_comma"))
    else:
      wrong.append((rounded(v, 3), "rounded_decimal"))
    eq.append((latex_frac(v, "frac"), "frac"))
    eq.append((latex_frac(v, "dfrac"), "dfrac"))
    eq.append((latex_frac(v, "slash"), "slash"))
    a, b = abs(v.numerator), v.denominator
    if v < 0:
      eq.append((f"\\frac{{-{a}}}{{{b}}}", "minus_in_numerator"))
    if a < 10 and b < 10:
      eq.append((("-" if v < 0 else "") + f"\\frac{a}{b}", "frac_short"))
    eq.append((("-" if v < 0 else "") + f"\\frac{{{2 * a}}}{{{2 * b}}}", "unreduced"))
    if a > b and not is_decimal_gold:
      whole, rest = divmod(a, b)
      eq.append((("-" if v < 0 else "") + f"{whole}\\frac{{{rest}}}{{{b}}}", "mixed_number"))
    wrong.append((latex_frac(-v), "sign"))
    if a != b:
      wrong.append((latex_frac(1 / v), "reciprocal"))
    wrong.append((latex_frac(fractions.Fraction(v.numerator + 1, b)), "numerator_off"))
    if dec is not None and is_decimal_gold:
      last = dec[-1]
      wrong.append((dec[:-1] + str((int(last) + 1) % 10), "last_digit_off"))
      if len(dec.split(".")[1]) >= 2:
        wrong.append((rounded(v, len(dec.split(".")[1]) - 1), "rounded_decimal"))
  return eq, wrong


# ------------------------------------------------------------------ structures
def entry_spellings(entry: str, rng: random.Random) -> str:
  """Another spelling of one matrix / tuple entry (same value)."""
  v = parse_number(entry)
  if v is None:
    return entry.replace("\\frac", "\\dfrac")
  if v.denominator == 1:
    return str(v.numerator)
  return rng.choice([latex_frac(v, "frac"), latex_frac(v, "slash"), latex_frac(v, "dfrac")])


def perturb_entry(entry: str) -> str:
  v = parse_number(entry)
  if v is not None:
    return latex_frac(v + 1)
  m = re.search(r"\d+", entry)
  if m:
    return entry[:m.start()] + str(int(m.group()) + 1) + entry[m.end():]
  return entry + "+1"


def matrix_rows(body: str):
  """Rows of a (possibly ``\\``-collapsed) MATH matrix body; None when ambiguous."""
  rows = re.split(r"\\\\|\\(?=[-\d.(])", body)
  rows = [[c.strip() for c in r.split("&")] for r in rows if r.strip()]
  if not rows or len({len(r) for r in rows}) != 1:
    return None
  if any(re.search(r"\}\s*\\[dt]?frac", c) for r in rows for c in r):
    return None  # a collapsed row separator before \frac: the intended shape is lost
  return rows


def render_matrix(rows, env="pmatrix", sep=" \\\\ ", amp=" & ", rng=None) -> str:
  cells = [[entry_spellings(c, rng) if rng else c for c in r] for r in rows]
  return f"\\begin{{{env}}} " + sep.join(amp.join(r) for r in cells) + f" \\end{{{env}}}"


def matrix_cases(gold: str, rows, rng: random.Random):
  eq, wrong = [], []
  env = _MATRIX.fullmatch(gold).group(1)
  other = "bmatrix" if env == "pmatrix" else "pmatrix"
  eq.append((render_matrix(rows, env), "spacing"))
  eq.append((render_matrix(rows, other), "environment"))
  eq.append((render_matrix(rows, env, rng=rng), "entry_spelling"))
  eq.append((render_matrix(rows, other, sep="\\\\", amp="&", rng=rng), "environment_entry_spelling"))
  flat = [c for r in rows for c in r]
  if len(flat) >= 2:
    values = [parse_number(c) for c in flat]
    order = list(range(len(flat)))
    swaps = [(i, j) for i in order for j in order if i < j and flat[i] != flat[j]
             and (values[i] is None or values[i] != values[j])]
    if swaps:
      i, j = swaps[0]
      new = list(flat)
      new[i], new[j] = new[j], new[i]
      ncols = len(rows[0])
      wrong.append((render_matrix([new[k:k + ncols] for k in range(0, len(new), ncols)], env), "entries_swapped"))
    k = rng.randrange(len(flat))
    new = list(flat)
    new[k] = perturb_entry(new[k])
    ncols = len(rows[0])
    wrong.append((render_matrix([new[i:i + ncols] for i in range(0, len(new), ncols)], other), "one_entry_off"))
    if len(rows) == len(rows[0]) and len(rows) > 1:
      transposed = [list(r) for r in zip(*rows)]
      if transposed != rows:
        wrong.append((render_matrix(transposed, env), "transposed"))
  wrong.append((render_matrix(rows, env).rsplit("\\end", 1)[0].rstrip(), "truncated_environment"))
  return eq, wrong


def tuple_cases(gold: str, items, rng: random.Random):
  eq, wrong = [], []
  open_, close = gold[0], gold[-1]
  eq.append((open_ + ", ".join(items) + close, "spacing"))
  eq.append(("\\left" + open_ + " " + ", ".join(entry_spellings(i, rng) for i in items) + " \\right" + close,
             "left_right_entry_spelling"))
  if len(items) >= 2 and items[0] != items[1]:
    wrong.append((open_ + ",".join([items[1], items[0]] + items[2:]) + close, "order_swapped"))
  k = rng.randrange(len(items))
  new = list(items)
  new[k] = perturb_entry(new[k])
  wrong.append((open_ + ",".join(new) + close, "one_entry_off"))
  wrong.append((open_ + ",".join(items), "truncated_bracket"))
  return eq, wrong


def interval_cases(gold: str, rng: random.Random):
  eq, wrong = [], []
  pieces = gold.split("\\cup")
  if len(pieces) >= 2:
    eq.append(("\\cup".join(reversed(pieces)), "union_reordered"))
  eq.append((" \\cup ".join("\\left" + p[0] + " " + ", ".join(p[1:-1].split(",")) + " \\right" + p[-1]
                            for p in pieces), "left_right_spacing"))
  first = pieces[0]
  if "\\infty" not in first.split(",")[0] and first[0] in "([":
    wrong.append(("[(" [first[0] == "["] + first[1:] + "\\cup".join([""] + pieces[1:]), "open_closed_flip"))
  else:
    last = pieces[-1]
    if "\\infty" not in last.split(",")[-1] and last[-1] in ")]":
      wrong.append(("\\cup".join(pieces[:-1] + [last[:-1] + ")]"[last[-1] == ")"]]), "open_closed_flip"))
  m = re.search(r"\d+", gold)
  if m:
    wrong.append((gold[:m.start()] + str(int(m.group()) + 1) + gold[m.end():], "endpoint_off"))
  return eq, wrong


def list_cases(gold: str, items, rng: random.Random):
  eq, wrong = [], []
  shuffled = list(items)
  for _ in range(5):
    rng.shuffle(shuffled)
    if shuffled != items:
      break
  if shuffled != items:
    eq.append((", ".join(shuffled), "list_reordered"))
  eq.append((", ".join(entry_spellings(i, rng) for i in items), "list_spacing_spelling"))
  if len(items) == 2:
    eq.append((f"{items[0]} \\text{{ or }} {items[1]}", "list_or"))
  if len(set(items)) == len(items):
    wrong.append((",".join(items[:-1]), "item_dropped"))
    k = rng.randrange(len(items))
    new = list(items)
    new[k] = perturb_entry(new[k])
    if len(set(new)) == len(new):
      wrong.append((",".join(new), "one_item_off"))
  return eq, wrong


def equation_cases(gold: str, rng: random.Random):
  eq, wrong = [], []
  lhs, rhs = gold.split("=", 1)
  eq.append((f"{rhs} = {lhs}", "sides_swapped"))
  eq.append((f"{lhs} = {rhs}".replace("+", " + "), "spacing"))
  wrong.append((rhs, "bare_right_hand_side"))
  m = re.search(r"\d+", rhs) or re.search(r"\d+", lhs)
  if m:
    side = rhs if re.search(r"\d+", rhs) else lhs
    m = re.search(r"\d+", side)
    changed = side[:m.start()] + str(int(m.group()) + 1) + side[m.end():]
    wrong.append((f"{lhs}={changed}" if side is rhs else f"{changed}={rhs}", "constant_off"))
  return eq, wrong


def time_cases(gold: str, m, rng: random.Random):
  eq, wrong = [], []
  h, mi, sec = m.group(1), m.group(2), m.group(3)
  ampm = (m.group(4) or m.group(5) or "").lower()
  suffix = f" \\text{{ {ampm}.m.}}" if ampm else ""
  base = f"{h}:{mi}" + (f":{sec}" if sec else "")
  eq.append((base + suffix, "time_spacing"))
  eq.append((f"\\text{{{base}}}" + suffix, "time_text"))
  wrong.append((f"{int(h) % 12 + 1}:{mi}" + (f":{sec}" if sec else "") + suffix, "hour_off"))
  wrong.append((f"{h}:{(int(mi) + 1) % 60:02d}" + (f":{sec}" if sec else "") + suffix, "minute_off"))
  return eq, wrong


_TEXT_WORDS = ("Monday Tuesday Wednesday Thursday Friday Saturday Sunday circle ellipse parabola hyperbola "
               "even odd neither east west north south").split()


def text_cases(word: str, rng: random.Random):
  eq = [(f"\\text{{{word}}}", "text"), (word, "plain"), (f"\\textbf{{{word}}}", "bold")]
  others = [w for w in _TEXT_WORDS if w.lower() != word.lower()]
  wrong = [(f"\\text{{{rng.choice(others)}}}", "other_word")]
  return eq, wrong


def _split_sum(s: str):
  """Top-level terms of a sum (a leading sign stays with its term); signs after ``^``/``_`` do not split."""
  terms, depth, cur = [], 0, ""
  for k, c in enumerate(s):
    if c in "{([":
      depth += 1
    elif c in "})]":
      depth -= 1
    if c in "+-" and depth == 0 and cur and s[k - 1] not in "^_":
      terms.append(cur)
      cur = ""
    cur += c
  terms.append(cur)
  return terms


def expression_cases(gold: str, rng: random.Random):
  """Generic LaTeX expressions (radicals, pi, polynomials)."""
  eq, wrong = [], []
  if "\\frac" in gold:
    eq.append((gold.replace("\\frac", "\\dfrac"), "dfrac"))
  spaced = re.sub(r"(?<=[\w}])([+-])", r" \1 ", gold)
  if spaced != gold:
    eq.append((spaced, "spacing"))
  m = re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", gold)
  if m:
    eq.append((f"{m.group(1)} \\cdot \\sqrt{{{m.group(2)}}}", "explicit_cdot"))
    eq.append((f"\\sqrt{{{m.group(2)}}} \\cdot {m.group(1)}", "factor_order"))
  m = re.fullmatch(r"\\frac\{(\d*)\\pi\}\{(\d+)\}", gold)
  if m:
    eq.append((f"\\frac{{{m.group(1) or 1}}}{{{m.group(2)}}}\\pi", "pi_outside"))
  if "\\sqrt{" in gold and re.search(r"\\sqrt\{\d\}(?![\w{])", gold):
    eq.append((re.sub(r"\\sqrt\{(\d)\}(?![\w{])", r"\\sqrt\1", gold), "sqrt_short"))
  terms = [t for t in _split_sum(gold)]
  if (len(terms) == 2 and all(_balanced(t) for t in terms) and not any(c in gold for c in "=<>,|!")
      and "\\pm" not in gold and "^-" not in gold and "_" not in gold):
    a, b = terms
    b = b if b.startswith("-") else b.lstrip("+")
    a = a if a.startswith("-") else "+" + a
    eq.append((b + a, "sum_reordered"))
  if gold.startswith("-"):
    wrong.append((gold[1:], "sign"))
  elif not any(c in gold for c in ",=<>"):
    wrong.append(("-" + gold if len(split_top(gold, "+")) == 1 and len(split_top(gold, "-")) == 1
                  else f"-({gold})", "sign"))
  m = re.search(r"\d+", gold)
  if m:
    wrong.append((gold[:m.start()] + str(int(m.group()) + 1) + gold[m.end():], "first_integer_off"))
  if "\\sqrt{" in gold:
    wrong.append((gold.replace("\\sqrt{", "{", 1), "dropped_sqrt"))
  cut = gold.rfind("}")
  if cut > 0 and gold.count("{") >= 1:
    wrong.append((gold[:cut], "truncated_brace"))
  return eq, wrong


def classify(gold: str):
  """(kind, payload) of a gold answer; ``("other", None)`` when no model applies."""
  g = gold.strip()
  if not g or not _balanced(g) or "{\\}" in g:
    return "malformed", None
  if re.search(r"\{,\}|\{\s*(?:or|and)\s*\}", g):
    return "other", None  # ambiguous MATH normalisation leftovers (``6,8{,}10``, ``-2{or}-12``)
  v = parse_number(g)
  if v is not None:
    if v.denominator == 1 and abs(v) >= 10 ** 16:
      return "big_number", v
    return ("integer" if _INT.fullmatch(g.replace(",", "")) else "decimal" if _DEC.fullmatch(g.replace(",", "")) else "decimal" if _DEC.fullmatch(g) else "fraction"), v
  m = _MATRIX.fullmatch(g)
  if m:
    rows = matrix_rows(m.group(2))
    return ("matrix", rows) if rows else ("other", None)
  m = _TIME.fullmatch(g)
  if m and ":" in g:
    return "colon", m
  if re.fullmatch(r"\{[A-Za-z][A-Za-z ]*\}|\\text\{[A-Za-z][A-Za-z ]*\}", g):
    return "text", g[g.index("{") + 1:-1]
  if ("\\cup" in g or re.fullmatch(r"[(\[][^,()\[\]]+,[^,()\[\]]+[)\]]", g)) and (
      "\\infty" in g or "\\cup" in g or g[0] != g[-1] or g[0] == "["):
    if all(re.fullmatch(r"[(\[][^,]+,[^,]+[)\]]", p) for p in g.split("\\cup")):
      if g[0] == "(" and g[-1] == ")" and "\\cup" not in g and "\\infty" not in g:
        pass  # (a, b) is a point as much as an open interval: treated as a tuple below
      else:
        return "interval", None
  if g.count("=") == 1 and not re.search(r"[<>,]|\\le|\\ge|\\approx", g):
    return "equation", None
  if g[0] == "(" and g[-1] == ")" and _balanced(g[1:-1]):
    items = split_top(g[1:-1])
    if len(items) >= 2 and all(items):
      return "tuple", items
  items = split_top(g)
  if len(items) >= 2 and all(i.strip() for i in items) and not re.search(r"[=<>]", g):
    return "list", [i.strip() for i in items]
  if len(g) <= 80 and not re.search(r"[A-Za-z]{4,}", re.sub(r"\\[A-Za-z]+", "", g)):
    return "expression", None
  return "other", None


def answer_cases(gold: str, rng: random.Random):
  """(kind, equivalent [(pred, transform)], wrong [(pred, transform)]) for one gold."""
  kind, payload = classify(gold)
  eq, wrong = [], []
  if kind in ("integer", "decimal", "fraction", "big_number"):
    eq, wrong = number_cases(gold, payload, rng)
    if kind == "big_number":
      eq.append((f"{payload:,}", "thousands_comma"))
  elif kind == "matrix":
    eq, wrong = matrix_cases(gold, payload, rng)
  elif kind == "tuple":
    eq, wrong = tuple_cases(gold, payload, rng)
  elif kind == "interval":
    eq, wrong = interval_cases(gold, rng)
  elif kind == "list":
    eq, wrong = list_cases(gold, payload, rng)
  elif kind == "equation":
    eq, wrong = equation_cases(gold, rng)
  elif kind == "colon":
    eq, wrong = time_cases(gold, payload, rng) if (payload.group(4) or payload.group(5) or int(
        payload.group(1)) <= 24 and len(payload.group(2)) == 2 and int(payload.group(2)) < 60) else ([], [])
  elif kind == "text":
    eq, wrong = text_cases(payload, rng)
  elif kind == "expression":
    eq, wrong = expression_cases(gold, rng)
  eq = [(p, t) for p, t in eq if p.strip() and p != gold]
  wrong = [(p, t) for p, t in wrong if p.strip() and p != gold]
  return kind, eq, wrong


# ------------------------------------------------------------------ responses
_REASONING = (
    "Let me work through this step by step.\n\nWe set up the relation and simplify carefully.\n\n",
    "<think>\nFirst I rewrite the condition, then I check the cases one at a time.\n</think>\n\n",
    "We start from the given data. Combining the two conditions and simplifying gives the result.\n\n",
)


def respond(answer: str, style: int) -> str:
  """A model-style response whose final answer is ``answer``."""
  if style == 0:
    return _REASONING[0] + f"Therefore, the final answer is $\\boxed{{{answer}}}$."
  if style == 1:
    return _REASONING[1] + f"The answer is \\(\\boxed{{{answer}}}\\)."
  if style == 2:
    return _REASONING[2] + f"**Final Answer**\n\\[\n\\boxed{{{answer}}}\n\\]"
  if style == 3:
    return f"Answer: ${answer}$"
  return f"\\boxed{{{answer}}}"


def cases_for_gold(gold: str, rng: random.Random):
  """All cases of one gold: (pred, equivalent, kind, transform)."""
  kind, eq, wrong = answer_cases(gold, rng)
  out = [(respond(gold, rng.randrange(5)), True, kind, "identity")]
  rng.shuffle(eq)
  rng.shuffle(wrong)
  # Pick distinct transforms first.
  eq = sorted(eq, key=lambda x: 0 if x[1] in ("decimal_comma", "rounded_scientific") else 1)[:MAX_EQUIVALENT]
  wrong = sorted(wrong, key=lambda x: 0 if x[1] in ("rounded_scientific", "bare_right_hand_side", "rounded_decimal")
                 else 1)[:MAX_WRONG]
  for pred, transform in eq:
    out.append((respond(pred, rng.randrange(5)), True, kind, transform))
  for pred, transform in wrong:
    label = False
    out.append((respond(pred, rng.randrange(5)), label, kind, transform))
  # Response-level cases (MAX_RESPONSE_LEVEL of them, picked at random per gold).
  boxed_gold = f"\\boxed{{{gold}}}"
  head = len(out)
  if wrong:
    out.append((f"A first attempt gives \\boxed{{{wrong[0][0]}}}, but that misses a case. Redoing it, the answer "
                f"is {boxed_gold}.", True, kind, "earlier_wrong_box"))
    out.append((f"A first attempt gives {boxed_gold}. On reflection that is wrong and the answer is "
                f"\\boxed{{{wrong[0][0]}}}.", False, kind, "final_box_wrong"))
  # Truncated responses never earn the reward, even when the visible part is right.
  out.append((_REASONING[0] + "So the final answer is $\\boxed{" + gold, False, kind, "response_cut_in_box"))
  if "{" in gold:
    out.append((_REASONING[2] + "The answer is $" + gold[:gold.rfind("}")], False, kind, "response_cut_in_math"))
  out.append((f"The final answer is \\boxed{{{gold}}}}}.", True, kind, "redundant_closing_brace"))
  if kind == "list":
    items = split_top(gold)
    boxes = " and ".join(f"$\\boxed{{{i.strip()}}}$" for i in items)
    out.append((f"The solutions are {boxes}.", True, kind, "multi_box"))
    fewer = " and ".join(f"$\\boxed{{{i.strip()}}}$" for i in items[:-1])
    out.append((f"The solutions are {fewer}.", False, kind, "multi_box_missing_one"))
  if kind in ("integer", "fraction", "decimal") and len(gold) < 20:
    out.append((f"\\boxed{{x = {gold} + 0 = {gold}}}", True, kind, "chained_equality"))
    if wrong:
      out.append((f"\\boxed{{x = {gold} = {wrong[0][0]}}}", False, kind, "chained_equality_wrong_final"))
  extra = out[head:]
  rng.shuffle(extra)
  return out[:head] + extra[:MAX_RESPONSE_LEVEL]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default=str(_REPO_ROOT.parent / "shared" / "data"))
  parser.add_argument("--out", default=str(_REPO_ROOT / "benchmarks" / "data" / "checker_corpus.jsonl.gz"))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  golds = {}
  for directory, source in _SETS:
    with open(pathlib.Path(args.data_dir) / directory / "normalized.jsonl", encoding="utf-8") as f:
      for line in f:
        answer = json.loads(line)["answer"]
        golds.setdefault(answer, source)
  rows = []
  kinds = {}
  skipped = 0
  for gold in sorted(golds):
    if classify(gold)[0] == "malformed":
      skipped += 1  # unbalanced braces or a stray "\}": no labelled meaning to build on
      continue
    rng = random.Random(f"{args.seed}:{gold}")
    for pred, label, kind, transform in cases_for_gold(gold, rng):
      rows.append({"id": len(rows), "gold": gold, "pred": pred, "equivalent": label, "kind": kind,
                   "transform": transform, "split": split_of(gold), "source": golds[gold]})
    kinds[classify(gold)[0]] = kinds.get(classify(gold)[0], 0) + 1
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
    for row in rows:
      f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
  heldout = sum(r["split"] == "heldout" for r in rows)
  print(f"{len(golds)} golds ({skipped} malformed ones skipped) {kinds}")
  print(f"wrote {len(rows)} cases ({sum(r['equivalent'] for r in rows)} equivalent, {heldout} held out) to {out}")


if __name__ == "__main__":
  main()
