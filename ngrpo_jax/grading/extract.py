"""Extraction of the final answer from a model response.

The RL reward normally requires the answer inside ``\\boxed{...}``; evaluation may be lenient. Extraction
runs on arbitrary (possibly megabyte-long, possibly truncated) text in linear time and never raises.

Order of preference (``require_boxed=False``):
  1. the last ``\\boxed{...}`` / ``\\fbox{...}`` with nested braces (or ``\\boxed 5`` without braces); when
     several boxes stand together at the end (``\\boxed{-2} and \\boxed{1}``) they form one list answer,
  2. the last "final answer: ..." / "the answer is ..." / "**Answer:** ..." phrase,
  3. the whole text when it is short and looks like a bare answer (``5``, ``$\\frac{3}{4}$``),
  4. the last inline math segment ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``.
Text before the last ``</think>`` is ignored when the tag is present.

Complete-answer rule (a truncated answer never earns a reward): when the last box command never closes
(``... \\boxed{\\frac{3}{4``, a response cut by the length limit) the response has **no** answer; it does not
fall back to an earlier box or to a phrase. An extracted answer whose brackets do not close (``(1, 2``,
``\\frac{3}{4``, ``\\begin{pmatrix}`` without ``\\end``, an unclosed ``$``) is rejected the same way
(method ``"truncated"``). A redundant closing brace after a complete answer (``\\boxed{5}}``) is harmless.
"""
import dataclasses
import re
from typing import List, Optional, Tuple

# Pattern-based extraction only looks at the tail of a response (answers are at the end); this bounds the
# cost of the regular expressions on very long inputs.
_TAIL_CHARS = 4000
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_MAX_ANSWER_CHARS = 20000


@dataclasses.dataclass(frozen=True)
class Extraction:
  """An extracted answer.

  Attributes:
    answer: the answer string (un-normalised), or None when nothing was found.
    method: how it was found: "boxed", "phrase", "whole", "math", "none", or "truncated" (an answer was
      started but never completed; ``answer`` is None).
    boxes: for a boxed answer, the final run of boxes it was assembled from (one entry for a single box).
  """
  answer: Optional[str]
  method: str
  boxes: Tuple[str, ...] = ()

  @property
  def boxed(self) -> bool:
    return self.method == "boxed"


def _match_braces(text: str, open_index: int) -> Optional[int]:
  """Index one past the brace closing ``text[open_index] == '{'``; None if unbalanced."""
  depth = 0
  i = open_index
  n = len(text)
  while i < n:
    c = text[i]
    if c == "\\":
      i += 2  # skip escaped characters such as \{ and \}
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return i + 1
    i += 1
  return None


def _box_content(text: str, start: int, command: str) -> Optional[str]:
  """Content of the box command starting at ``text[start:]``; None when malformed."""
  i = start + len(command)
  if i < len(text) and (text[i].isalpha()):
    return None  # e.g. \boxedsomething: a different macro
  while i < len(text) and text[i] in " \t":
    i += 1
  if i >= len(text):
    return None
  if text[i] == "{":
    end = _match_braces(text, i)
    if end is None:
      return None
    return text[i + 1:end - 1]
  # \boxed 5 : the argument runs to the next whitespace, '$' or end of sentence.
  m = re.match(r"[^\s$]+", text[i:i + 200])
  if not m:
    return None
  return m.group(0).rstrip(".,;")


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Text allowed between two boxes of one multi-part answer ("$\boxed{-2}$ and $\boxed{1}$", ", ", " or ").
_BOX_JOINER = re.compile(r"[\s$,;.]*(?:and|or|&|\\quad|\\qquad|\\text\{\s*(?:and|or)\s*\})?[\s$,;.]*"
                         r"(?:\\\(|\\\[|\\\)|\\\])?[\s$,;.]*", re.IGNORECASE)


def boxes(text: str) -> List[Tuple[int, int, Optional[str]]]:
  """All box commands in ``text`` as ``(start, end, content)``; ``content`` is None for one that never closes.

  ``end`` is the index just past the box (for a malformed box, just past the command name).
  """
  out = []
  if not isinstance(text, str):
    return out
  for m in _BOX_RE.finditer(text):
    start = m.start()
    if out and out[-1][2] is not None and start < out[-1][1]:
      continue  # a box nested inside the previous one
    cmd = text[start:m.end()]
    content = _box_content(text, start, cmd)
    if content is None:
      out.append((start, m.end(), None))
      continue
    i = m.end()
    while i < len(text) and text[i] in " \t":
      i += 1
    end = (_match_braces(text, i) if i < len(text) and text[i] == "{" else i + len(content)) or m.end()
    out.append((start, end, content))
  return out


def last_boxed(text: str) -> Optional[str]:
  """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

  Nested and escaped braces are handled. Returns None when there is no box **or when the last box never
  closes** (a truncated response has no final answer; see the module docstring).
  """
  found = boxes(text)
  if not found:
    return None
  return found[-1][2]


_PHRASES = re.compile(r"(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is|:|=)\s*(?:\*\*)?\s*:?\s*",
                      re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
# ``$...$`` segments: an escaped ``\$`` (money, ``$\$12.50$``) is part of the math, not a delimiter.
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|(?<!\\)\$((?:[^$\\]|\\.)+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset(
    "frac dfrac tfrac sqrt text mbox mathrm mathbf boxed left right cdot times infty circ pmatrix bmatrix "
    "begin end cup cap sin cos tan log exp mathbb pi".split())


def _rstrip_punctuation(s: str) -> str:
  """Strips trailing spaces and sentence punctuation, but not the ``;``/``,`` of ``\\;``/``\\,``."""
  s = s.rstrip()
  while s and s[-1] in ".;," and not (len(s) >= 2 and s[-2] == "\\"):
    s = s[:-1].rstrip()
  return s


def _strip_wrappers(s: str) -> str:
  s = s.strip()
  s = re.sub(r"^\*\*|\*\*$", "", s).strip()
  s = _rstrip_punctuation(s)
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
      s = s[len(left):len(s) - len(right)].strip()
      break
  return _rstrip_punctuation(s)


def incomplete_reason(answer: str) -> Optional[str]:
  """Why ``answer`` is not a complete expression (unclosed brace, bracket, environment or ``$``), else None.

  Checks: ``{}`` depth never negative and back to zero (a trailing surplus ``}`` is tolerated: strip it with
  ``strip_surplus_braces``); ``\\{``/``\\}``, ``\\left``/``\\right`` and ``\\begin``/``\\end`` counts match;
  no more ``(``/``[`` than ``)``/``]`` (intervals such as ``[1, 2)`` mix them); an even number of ``$``.
  Linear time.
  """
  if not isinstance(answer, str):
    return "not a string"
  s = strip_surplus_braces(answer)
  depth = opens = closes = dollars = 0
  for _, c in _unescaped(s):
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth < 0:
        return "a closing brace without an opening one"
    elif c in "([":
      opens += 1
    elif c in ")]":
      closes += 1
    elif c == "$":
      dollars += 1
  if depth > 0:
    return "a brace never closes"
  if s.count("\\{") != s.count("\\}"):
    return "an escaped brace never closes"
  if len(re.findall(r"\\left(?![A-Za-z])", s)) != len(re.findall(r"\\right(?![A-Za-z])", s)):
    return "a \\left without \\right"
  if s.count("\\begin{") != s.count("\\end{"):
    return "an environment never ends"
  if opens > closes:
    return "a bracket never closes"
  if dollars % 2:
    return "a $ never closes"
  return None


def _unescaped(s: str):
  """(index, character) of every character of ``s`` that no backslash escapes (``\\x`` skips both)."""
  i, n = 0, len(s)
  while i < n:
    if s[i] == "\\":
      i += 2
      continue
    yield i, s[i]
    i += 1


def strip_surplus_braces(answer: str) -> str:
  """Removes closing braces at the end of ``answer`` that close nothing (``5}`` -> ``5``)."""
  depth, cut = 0, None
  for i, c in _unescaped(answer):
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth < 0:
        cut = i
        break
  if cut is not None and not answer[cut:].strip().strip("}").strip():
    return answer[:cut].rstrip()
  return answer


def _final_box_run(text: str) -> Tuple[Optional[str], Tuple[str, ...], bool]:
  """(last box content, the run of boxes standing together at the end, truncated?)."""
  found = boxes(text)
  if not found:
    return None, (), False
  if found[-1][2] is None:
    return None, (), True
  run = [found[-1]]
  for prev in reversed(found[:-1]):
    if prev[2] is None:
      break
    gap = text[prev[1]:run[0][0]]
    if len(gap) > 40 or not _BOX_JOINER.fullmatch(gap):
      break
    run.insert(0, prev)
  return found[-1][2], tuple(content.strip() for _, _, content in run), False


def _looks_like_bare_answer(text: str) -> bool:
  """Short text with at most a couple of English words (e.g. ``5 cents``, ``\\text{Evelyn}``)."""
  if len(text) > 200 or "\n" in text.strip():
    return False
  words = [w for w in _WORD.findall(text) if w.lower() not in _MATH_WORDS]
  return len(words) <= 2


def extract_answer(text: str, *, require_boxed: bool = False) -> Extraction:
  """Extracts the final answer from a model response.

  Args:
    text: the response (any string; non-strings give ``Extraction(None, "none")``).
    require_boxed: if True only a ``\\boxed``/``\\fbox`` answer counts (the usual RL format requirement).

  Returns:
    An ``Extraction`` with the answer string and the method used.
  """
  if not isinstance(text, str) or not text.strip():
    return Extraction(None, "none")
  think_end = text.rfind("</think>")
  if think_end >= 0:
    text = text[think_end + len("</think>"):]
  boxed, run, truncated = _final_box_run(text)
  if truncated:
    return Extraction(None, "truncated")
  if boxed is not None and not require_boxed:
    later = _phrase_after_last_box(text)
    if later is not None:
      return later
  if boxed is not None:
    if len(run) > 1:
      if any(incomplete_reason(b) for b in run):
        return Extraction(None, "truncated")
      return Extraction(", ".join(strip_surplus_braces(b) for b in run)[:_MAX_ANSWER_CHARS], "boxed", run)
    return _complete(boxed[:_MAX_ANSWER_CHARS], "boxed", (boxed,))
  if require_boxed:
    return Extraction(None, "none")
  tail = text[-_TAIL_CHARS:]
  phrases = list(_PHRASES.finditer(tail))
  if phrases:
    found = _phrase_answer(tail, phrases[-1])
    if found is not None:
      return found
  if _looks_like_bare_answer(text):
    return _complete(_strip_wrappers(text), "whole")
  maths = _INLINE_MATH.findall(tail)
  if maths:
    return _complete(_strip_wrappers(next(g for g in maths[-1] if g)), "math")
  return Extraction(None, "none")


def _phrase_answer(tail: str, phrase) -> Optional[Extraction]:
  """The answer stated after an answer phrase (``the answer is $73$.``, ``**Answer:** 5``); None if empty."""
  rest = tail[phrase.end():]
  inner = _INLINE_MATH.match(rest.lstrip())
  if inner:  # "the answer is $73$." -> 73
    candidate = _strip_wrappers(next(g for g in inner.groups() if g))
  elif rest.lstrip().startswith(("$", "\\(", "\\[")):
    return Extraction(None, "truncated")  # the math after "the answer is" never closes
  else:
    end = _SENTENCE_END.search(rest)
    candidate = _strip_wrappers(rest[:end.start()] if end else rest)
  if candidate and not _BOX_RE.search(candidate):
    return _complete(candidate, "phrase")
  return None


def _phrase_after_last_box(text: str) -> Optional[Extraction]:
  """An answer phrase that comes **after** the last box (``... $\\boxed{12}$ for part one ... **Answer:** $5$``).

  Policy: the final stated answer wins. A box earlier in the response is an intermediate result when the
  response later says "Answer: ..." / "the final answer is ..." without a box (only when ``require_boxed`` is
  off). A phrase whose answer is itself a box does not override it; a phrase answer that is cut off
  (``Answer: $5`` at the end) makes the response truncated, as a cut-off box would.
  """
  last = boxes(text)[-1]
  tail_start = max(last[1], len(text) - _TAIL_CHARS)
  tail = text[tail_start:]
  phrases = list(_PHRASES.finditer(tail))
  if not phrases:
    return None
  return _phrase_answer(tail, phrases[-1])  # a cut-off phrase answer is "truncated": no fall-back to the box


def _complete(answer: str, method: str, run: Tuple[str, ...] = ()) -> Extraction:
  """The extraction if ``answer`` is complete (surplus closing braces dropped), else ``truncated``."""
  if incomplete_reason(answer) is not None:
    return Extraction(None, "truncated")
  return Extraction(strip_surplus_braces(answer), method, run)


def extract_gold(gold: str) -> Optional[str]:
  """The reference answer: the last box content if the gold is a boxed solution, else the gold itself."""
  if not isinstance(gold, str):
    return None
  found = [b for b in boxes(gold) if b[2] is not None]
  if found:
    return found[-1][2]
  return _strip_wrappers(gold)
