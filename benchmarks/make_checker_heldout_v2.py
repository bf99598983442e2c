"""Generates a second, fresh held-out answer-checker corpus (v2) from the held-out golds of MATH train + test.

    python benchmarks/make_checker_heldout_v2.py [--data_dir ../shared/data] \
        [--out benchmarks/data/checker_heldout_v2.jsonl.gz]

Why: the held-out part of ``checker_corpus.jsonl.gz`` has been measured and its failures listed in
``docs/benchmarks.md``, so it no longer supports a claim about unseen answers. This corpus uses only the golds
on the held-out side of the first corpus' split (``make_checker_corpus.split_of(gold) == "heldout"``; no
tune-side gold appears) and **new generators**: rewrite styles and perturbations that the first corpus does
not produce. It was generated and committed before the checker was measured on it; the checker must not be
tuned on it (measure it once before changes, once at the end).

New families (labelled by construction, value-preserving → ``True``, value-changing → ``False``):

* equivalent: ``\\tfrac`` and spaced ``\\frac {a} {b}``, ``(a)/(b)``, ``\\frac{a}{-b}``; ``+`` signs and
  ``\\displaystyle``; integers as ``n.00``, with a ``\\$`` prefix or a unit word (``\\text{ cm}``,
  ``\\ \\text{meters}``, ``\\mbox{ units}``), in ``\\mathrm{}``; thousands as ``1\\,000`` / ``1{,}000`` / ``1,000``
  for integers of 4-6 digits; decimals for fractions of 2/5 denominators with trailing zeros; radicals written
  ``\\sqrt {n}`` or with ``\\times``; ``\\pi`` spelled with a space; sums with bracketed terms; tuples and
  intervals with ``\\big(``/``\\Big[`` sizes or ``\\left`` and irregular spacing; matrices in an ``array``
  environment inside ``\\left( \\right)`` and ``\\begin{matrix}`` in ``\\left[ \\right]``; lists with an Oxford
  comma (``a, b, and c``), with ``x = a`` / ``x = b`` assignments, or as a set ``\\{a, b\\}``; equations with
  the right-hand terms reordered; text answers in ``\\mathrm{}`` / ``\\textnormal{}`` / with a period;
* wrong: decimal point shifted (×10, ÷10), adjacent digits transposed, double, +10, denominator off, a
  truncated (not rounded) decimal for a non-terminating value, an exponent changed, a sign flipped inside a
  term, a term dropped, a tuple / list with an item missing or an extra item, one matrix entry negated, rows
  swapped, a row dropped, an interval end negated, the other end's bracket flipped, an equation coefficient
  changed on one side, another text word;
* response level: long model-style responses with intermediate boxes before the final one, ``\\[ \\boxed{}
  \\]`` blocks, ``**Answer:** $x$`` and ``Final answer: x`` without a box, money in ``$\\$x$``, hedges
  (``\\boxed{a}`` or ``\\boxed{b}`` with a wrong ``b`` → ``False``), a response cut inside ``\\frac{`` of its final
  box or inside its final ``$`` (→ ``False``), box with inner spaces.

Output: gzip JSONL ``{id, gold, pred, equivalent, kind, transform, split: "heldout_v2", source}``.
``--side tune`` writes the same families for the tune-side golds (``split: "tune_v2"``): the cases to develop
against, so that the held-out v2 file stays unseen.
"""
import argparse
import fractions
import gzip
import json
import pathlib
import random
import re
import sys

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO_ROOT / "benchmarks") not in sys.path:
  sys.path.insert(0, str(_REPO_ROOT / "benchmarks"))

import make_checker_corpus as v1  # pylint: disable=wrong-import-position

MAX_EQUIVALENT = 3
MAX_WRONG = 3
MAX_RESPONSE_LEVEL = 2


def _frac(v: fractions.Fraction, style: str = "tfrac") -> str:
  sign = "-" if v < 0 else ""
  a, b = abs(v.numerator), v.denominator
  if b == 1:
    return sign + str(a)
  if style == "spaced":
    return f"{sign}\\frac {{{a}}} {{{b}}}"
  if style == "paren_slash":
    return f"{sign}({a})/({b})"
  if style == "neg_denominator":
    return f"\\frac{{{a}}}{{-{b}}}" if v < 0 else f"\\frac{{{a}}}{{{b}}}"
  return f"{sign}\\{style}{{{a}}}{{{b}}}"


def number_cases(gold: str, v: fractions.Fraction, rng: random.Random):
  eq, wrong = [], []
  if v.denominator == 1:
    n = v.numerator
    eq.append((f"{n}.00", "two_decimal_zeros"))
    if n > 0:
      eq.append((f"+{n}", "plus_sign"))
      eq.append((f"\\${n}", "dollar_prefix"))
    eq.append((f"{n}\\ \\text{{meters}}", "unit_backslash_space"))
    eq.append((f"{n} \\mbox{{ units}}", "unit_mbox"))
    eq.append((f"\\mathrm{{{n}}}", "mathrm"))
    eq.append((f"\\displaystyle {n}", "displaystyle"))
    if 1000 <= abs(n) < 10 ** 6:
      s = str(abs(n))
      head, tail = s[:-3], s[-3:]
      sign = "-" if n < 0 else ""
      eq.append((f"{sign}{head}\\,{tail}", "thousands_thin_space_v2"))
      eq.append((f"{sign}{head}{{,}}{tail}", "thousands_brace_comma_v2"))
    wrong.append((str(n * 10), "times_ten"))
    if n % 10 == 0 and n != 0:
      wrong.append((str(n // 10), "divided_by_ten"))
    else:
      wrong.append((f"{n / 10:.1f}" if abs(n) < 10 ** 12 else str(n + 10), "decimal_point_shift"))
    s = str(abs(n))
    if len(s) >= 2:
      k = rng.randrange(len(s) - 1)
      t = s[:k] + s[k + 1] + s[k] + s[k + 2:]
      if t != s and not t.startswith("0"):
        wrong.append((("-" if n < 0 else "") + t, "adjacent_digits_swapped"))
    if n != 0:
      wrong.append((str(2 * n), "doubled"))
    wrong.append((str(n + 10), "plus_ten"))
  else:
    a, b = abs(v.numerator), v.denominator
    sign = "-" if v < 0 else ""
    eq.append((_frac(v, "tfrac"), "tfrac"))
    eq.append((_frac(v, "spaced"), "frac_spaced"))
    eq.append((_frac(v, "paren_slash"), "paren_slash"))
    if v < 0:
      eq.append((_frac(v, "neg_denominator"), "negative_denominator"))
    dec = v1.terminating_decimal(v)
    if dec is not None:
      eq.append((dec + "00", "decimal_trailing_zeros"))
      wrong.append((v1.terminating_decimal(v * 10), "decimal_point_shift"))
    else:
      digits = f"{float(abs(v)):.6f}"[:-2]  # 4 decimals, truncated rather than rounded
      truncated = fractions.Fraction(digits)
      if truncated != abs(v):
        wrong.append((sign + digits, "truncated_decimal"))
    wrong.append((f"{sign}\\frac{{{a}}}{{{b + 1}}}", "denominator_off"))
    wrong.append((_frac(v * 2, "dfrac"), "doubled"))
  return eq, wrong


_SIZES = (("\\big", "\\big"), ("\\Big", "\\Big"), ("\\left", "\\right"), ("\\bigl", "\\bigr"))


def tuple_cases(gold: str, items, rng: random.Random):
  eq, wrong = [], []
  o, c = gold[0], gold[-1]
  left, right = rng.choice(_SIZES)
  eq.append((f"{left}{o} " + " ,  ".join(i.strip() for i in items) + f" {right}{c}", "sized_brackets"))
  eq.append((o + " " + " , ".join(i.strip().replace("\\frac", "\\tfrac") for i in items) + " " + c,
             "spaces_tfrac"))
  wrong.append((o + ",".join(items[:-1]) + c if len(items) > 2 else o + ",".join(items + ["0"]) + c,
                "item_missing_or_extra"))
  nonzero = [k for k, i in enumerate(items) if i.strip() not in ("0", "-0")]
  new = list(items)
  if nonzero:
    k = rng.choice(nonzero)
    new[k] = new[k][1:] if new[k].startswith("-") else "-" + new[k]
  if new != items:
    wrong.append((o + ",".join(new) + c, "one_entry_negated"))
  return eq, wrong


def matrix_cases(gold: str, rows, rng: random.Random):
  eq, wrong = [], []
  env = v1._MATRIX.fullmatch(gold).group(1)  # pylint: disable=protected-access
  if env == "vmatrix":
    return eq, wrong
  ncols = len(rows[0])
  body = " \\\\ ".join(" & ".join(r) for r in rows)
  eq.append(("\\left(\\begin{array}{" + "c" * ncols + "} " + body + " \\end{array}\\right)", "array_env"))
  eq.append(("\\left[\\begin{matrix}" + "\\\\".join("&".join(c.replace("\\frac", "\\dfrac") for c in r)
                                                    for r in rows) + "\\end{matrix}\\right]", "matrix_in_brackets"))
  flat = [(i, j) for i in range(len(rows)) for j in range(ncols) if rows[i][j].strip() not in ("0", "-0")]
  if flat:
    i, j = rng.choice(flat)
    new = [list(r) for r in rows]
    cell = new[i][j].strip()
    new[i][j] = cell[1:] if cell.startswith("-") else "-" + cell
    wrong.append((v1.render_matrix(new, env), "one_entry_negated"))
  if len(rows) >= 2 and rows[0] != rows[1]:
    wrong.append((v1.render_matrix([rows[1], rows[0]] + rows[2:], env), "rows_swapped"))
  if len(rows) >= 2:
    wrong.append((v1.render_matrix(rows[:-1], env), "row_dropped"))
  return eq, wrong


def interval_cases(gold: str, rng: random.Random):
  eq, wrong = [], []
  pieces = gold.split("\\cup")
  sized = []
  for p in pieces:
    left, right = rng.choice(_SIZES[:2])
    inner = " , ".join(x.strip().replace("-\\infty", "- \\infty") for x in p[1:-1].split(","))
    sized.append(f"{left}{p[0]} {inner} {right}{p[-1]}")
  eq.append((" \\cup ".join(sized), "sized_spaced_interval"))
  last = pieces[-1]
  if "\\infty" not in last.split(",")[-1] and last[-1] in ")]":
    wrong.append(("\\cup".join(pieces[:-1] + [last[:-1] + ")]"[last[-1] == ")"]]), "right_end_flipped"))
  m = re.search(r"(?<![\d.\-])(\d+)", gold)
  if m and m.group(1) != "0":
    wrong.append((gold[:m.start()] + "-" + gold[m.start():], "endpoint_negated"))
  return eq, wrong


def list_cases(gold: str, items, rng: random.Random):
  eq, wrong = [], []
  items = [i.strip() for i in items]
  if len(items) >= 3:
    eq.append((", ".join(items[:-1]) + ", and " + items[-1], "oxford_comma"))
  elif len(items) == 2:
    eq.append((f"{items[0]} \\text{{ and }} {items[1]}", "list_and"))
  if all(re.fullmatch(r"-?[\d\\{}a-z^+\-. ]+", i) for i in items) and len(set(items)) == len(items):
    eq.append(("\\{" + ", ".join(reversed(items)) + "\\}", "as_set_reversed"))
    eq.append((", ".join(f"x = {i}" for i in items), "assignments"))
  if len(set(items)) == len(items):
    wrong.append((", ".join(items + [v1.perturb_entry(items[-1])]), "extra_item"))
    if len(items) >= 2:
      wrong.append((", ".join(items[:-1] + [items[0]]), "item_duplicated"))
  return eq, wrong


def equation_cases(gold: str, rng: random.Random):
  eq, wrong = [], []
  lhs, rhs = gold.split("=", 1)
  terms = v1._split_sum(rhs.strip())  # pylint: disable=protected-access
  if len(terms) >= 2 and all(v1._balanced(t) for t in terms) and "\\pm" not in rhs:  # pylint: disable=protected-access
    rotated = terms[1:] + terms[:1]
    text = "".join((t if t.startswith(("-", "+")) or k == 0 else "+" + t) for k, t in enumerate(rotated))
    text = text[1:] if text.startswith("+") else text
    eq.append((f"{lhs.strip()} = {text}", "rhs_terms_rotated"))
  eq.append((f"{lhs.strip()}\\,=\\,{rhs.strip()}", "thin_spaces"))
  m = re.search(r"(?<![\d.^{_])(\d+)(?![\d.])", rhs)
  if m:
    k = int(m.group(1))
    wrong.append((f"{lhs}={rhs[:m.start()]}{k + 2}{rhs[m.end():]}", "rhs_constant_plus_two"))
  if "+" in rhs[1:] and "-" not in rhs[1:]:
    i = rhs.index("+", 1)
    wrong.append((f"{lhs}={rhs[:i]}-{rhs[i + 1:]}", "inner_sign_flipped"))
  return eq, wrong


def text_cases(word: str, rng: random.Random):
  others = [w for w in v1._TEXT_WORDS if w.lower() != word.lower()]  # pylint: disable=protected-access
  eq = [(f"\\mathrm{{{word}}}", "mathrm"), (f"\\textnormal{{{word}}}", "textnormal"), (f"\\text{{{word}.}}", "period")]
  wrong = [(f"\\mathrm{{{rng.choice(others)}}}", "other_word")]
  return eq, wrong


def expression_cases(gold: str, rng: random.Random):
  eq, wrong = [], []
  if "\\sqrt{" in gold:
    eq.append((gold.replace("\\sqrt{", "\\sqrt {"), "sqrt_spaced"))
  m = re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", gold)
  if m:
    eq.append((f"{m.group(1)} \\times \\sqrt{{{m.group(2)}}}", "times_sqrt"))
  if "\\pi" in gold:
    eq.append((gold.replace("\\pi", "\\pi "), "pi_space"))
  if "\\frac" in gold:
    eq.append((gold.replace("\\frac", "\\tfrac"), "tfrac"))
  terms = v1._split_sum(gold)  # pylint: disable=protected-access
  if (len(terms) == 2 and all(v1._balanced(t) for t in terms) and not any(c in gold for c in "=<>,|!")  # pylint: disable=protected-access
      and "\\pm" not in gold and "_" not in gold and "^-" not in gold):
    a, b = terms
    b_term = b[1:] if b.startswith("+") else b
    eq.append((f"({a}) + ({b_term})" if not b_term.startswith("-") else f"({a}) - ({b_term[1:]})",
               "bracketed_terms"))
    wrong.append((a, "term_dropped"))
    flipped = ("+" + b[1:]) if b.startswith("-") else ("-" + b.lstrip("+"))
    wrong.append((a + flipped, "inner_sign_flipped"))
  m = re.search(r"\^(?:\{(\d+)\}|(\d))", gold)
  if m:
    k = int(m.group(1) or m.group(2))
    wrong.append((gold[:m.start()] + "^{" + str(k + 1) + "}" + gold[m.end():], "exponent_changed"))
  m = re.search(r"\\sqrt\{(\d+)\}", gold)
  if m and int(m.group(1)) > 1:
    wrong.append((gold[:m.start()] + f"\\sqrt{{{int(m.group(1)) + 1}}}" + gold[m.end():], "radicand_off"))
  return eq, wrong


def answer_cases(gold: str, rng: random.Random):
  kind, payload = v1.classify(gold)
  eq, wrong = [], []
  if kind in ("integer", "decimal", "fraction", "big_number"):
    if "%" not in gold:
      eq, wrong = number_cases(gold, payload, rng)
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
  elif kind == "text":
    eq, wrong = text_cases(payload, rng)
  elif kind == "expression":
    eq, wrong = expression_cases(gold, rng)
  eq = [(p, t) for p, t in eq if p and p.strip() and p != gold]
  wrong = [(p, t) for p, t in wrong if p and p.strip() and p != gold]
  return kind, eq, wrong


_STEPS = (
    "First, note that the constraint can be rewritten in a simpler form. Substituting, we get an intermediate "
    "quantity of $\\boxed{{{mid}}}$ for the first part, which we now use.\n\n",
    "Step 1: Identify what is asked.\nStep 2: Compute the auxiliary value, which is \\(\\boxed{{{mid}}}\\).\n"
    "Step 3: Combine the results.\n\n",
    "Let's verify with a quick check: plugging in small values gives $\\boxed{{{mid}}}$ as a sanity value, which "
    "is consistent.\n\nNow for the actual question.\n\n",
)


def respond(answer: str, style: int, mid: str) -> str:
  """A longer model-style response whose final answer is ``answer`` (``mid``: an intermediate boxed value)."""
  if style == 0:
    return _STEPS[0].format(mid=mid) + f"Putting everything together:\n\\[ \\boxed{{ {answer} }} \\]"
  if style == 1:
    return _STEPS[1].format(mid=mid) + f"**Answer:** ${answer}$"
  if style == 2:
    return _STEPS[2].format(mid=mid) + f"Hence the result is $\\boxed{{{answer}}}$.\n\nI hope this helps!"
  if style == 3:
    return "Working it out carefully gives the value below.\n\nFinal answer: " + answer
  return f"$$\\boxed{{{answer}}}$$"


_MIDS = ("7", "\\frac{1}{3}", "12", "x^2", "2\\sqrt{2}")


def cases_for_gold(gold: str, rng: random.Random):
  kind, eq, wrong = answer_cases(gold, rng)
  out = []
  rng.shuffle(eq)
  rng.shuffle(wrong)
  # Prose-style (unboxed) answers only for short answers without spaces that could be read as prose.
  def style_for(answer):
    s = rng.randrange(5)
    if s == 3 and (len(answer) > 30 or re.search(r"\\text|\\mathrm|\\mbox|\\\$", answer) or " " in answer.strip()):
      s = 2
    return s
  for pred, transform in eq[:MAX_EQUIVALENT]:
    out.append((respond(pred, style_for(pred), rng.choice(_MIDS)), True, kind, transform))
  for pred, transform in wrong[:MAX_WRONG]:
    out.append((respond(pred, style_for(pred), rng.choice(_MIDS)), False, kind, transform))
  head = len(out)
  extra = []
  v = v1.parse_number(gold) if kind in ("integer", "decimal") else None
  if v is not None and v > 0 and "%" not in gold:
    extra.append((f"Adding the costs, she pays $\\${gold}$ in total.", True, kind, "money_unboxed"))
  if wrong:
    extra.append((f"It is either $\\boxed{{{gold}}}$ or $\\boxed{{{wrong[0][0]}}}$, depending on the reading.",
                  False, kind, "hedge_two_boxes"))
  cut = gold.find("\\frac{")
  if cut >= 0:
    extra.append((_STEPS[0].format(mid="7") + "Therefore $\\boxed{" + gold[:cut + 6] + gold[cut + 6:cut + 8],
                  False, kind, "cut_inside_frac"))
  extra.append(("We conclude that the answer is $" + gold, False, kind, "cut_inside_dollar"))
  extra.append((f"The answer is $\\boxed{{\\;{gold}\\;}}$.", True, kind, "box_inner_spaces"))
  if kind == "list":
    items = v1.split_top(gold)
    extra.append(("The roots are " + ", ".join(f"$\\boxed{{{i.strip()}}}$" for i in items[:-1]) +
                  f", and $\\boxed{{{items[-1].strip()}}}$.", True, kind, "multi_box_oxford"))
  rng.shuffle(extra)
  return out[:head] + extra[:MAX_RESPONSE_LEVEL]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", default=str(_REPO_ROOT.parent / "shared" / "data"))
  parser.add_argument("--out", default=str(_REPO_ROOT / "benchmarks" / "data" / "checker_heldout_v2.jsonl.gz"))
  parser.add_argument("--seed", type=int, default=2)
  parser.add_argument("--side", default="heldout", choices=("heldout", "tune"),
                      help="golds to use: the held-out ones (the committed v2 corpus) or the tune-side ones (the "
                           "same families on tune golds, for development; not committed)")
  args = parser.parse_args(argv)
  golds = {}
  for directory, source in v1._SETS:  # pylint: disable=protected-access
    with open(pathlib.Path(args.data_dir) / directory / "normalized.jsonl", encoding="utf-8") as f:
      for line in f:
        answer = json.loads(line)["answer"]
        golds.setdefault(answer, source)
  rows, kinds = [], {}
  for gold in sorted(golds):
    if v1.split_of(gold) != args.side or v1.classify(gold)[0] in ("malformed", "other"):
      continue
    rng = random.Random(f"v2:{args.seed}:{gold}")
    for pred, label, kind, transform in cases_for_gold(gold, rng):
      rows.append({"id": len(rows), "gold": gold, "pred": pred, "equivalent": label, "kind": kind,
                   "transform": transform, "split": f"{args.side}_v2", "source": golds[gold]})
    kinds[v1.classify(gold)[0]] = kinds.get(v1.classify(gold)[0], 0) + 1
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
    for row in rows:
      f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
  print(f"{sum(kinds.values())} {args.side} golds {kinds}")
  print(f"wrote {len(rows)} cases ({sum(r['equivalent'] for r in rows)} equivalent) to {out}")


if __name__ == "__main__":
  main()
