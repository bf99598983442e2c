"""Extraction of the final answer from a model response.

The RL reward normally requires the answer inside ``\\boxed{...}``; evaluation may be lenient. Extraction
runs on arbitrary (possibly megabyte-long, possibly truncated) text in linear time and never raises.

Order of preference (``require_boxed=False``):
  1. the last ``\\boxed{...}`` / ``\\fbox{...}`` with nested braces (or ``\\boxed 5`` without braces),
  2. the last "final answer: ..." / "the answer is ..." / "**Answer:** ..." phrase,
  3. the whole text when it is short and looks like a bare answer (``5``, ``$\\frac{3}{4}$``),
  4. the last inline math segment ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``.
Text before the last ``</think>`` is ignored when the tag is present.
"""
import dataclasses
import re
from typing import Optional

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
    method: how it was found: "boxed", "phrase", "whole", "math", or "none".
  """
  answer: Optional[str]
  method: str

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


def last_boxed(text: str) -> Optional[str]:
  """Content of the last well-formed ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` (None if none).

  Nested braces and escaped braces are handled; a truncated last box falls back to the previous one.
  """
  if not isinstance(text, str):
    return None
  end = len(text)
  while end > 0:
    positions = [(text.rfind(cmd, 0, end), cmd) for cmd in _BOX_COMMANDS]
    pos, cmd = max(positions)
    if pos < 0:
      return None
    content = _box_content(text, pos, cmd)
    if content is not None:
      return content
    end = pos
  return None


_PHRASES = re.compile(r"(?:final\s+answer|answer)\s*(?:\*\*)?\s*(?:is|:|=)\s*(?:\*\*)?\s*:?\s*",
                      re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_WORD = re.compile(r"[A-Za-z]{3,}")
_MATH_WORDS = frozenset(
    "frac dfrac tfrac sqrt text mbox mathrm mathbf boxed left right cdot times infty circ pmatrix bmatrix "
    "begin end cup cap sin cos tan log exp mathbb pi".split())


def _strip_wrappers(s: str) -> str:
  s = s.strip()
  s = re.sub(r"^\*\*|\*\*$", "", s).strip()
  s = s.rstrip(" .;,")
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
      s = s[len(left):len(s) - len(right)].strip()
      break
  return s.rstrip(" .;,")


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
  boxed = last_boxed(text)
  if boxed is not None:
    return Extraction(boxed[:_MAX_ANSWER_CHARS], "boxed")
  if require_boxed:
    return Extraction(None, "none")
  tail = text[-_TAIL_CHARS:]
  phrases = list(_PHRASES.finditer(tail))
  if phrases:
    rest = tail[phrases[-1].end():]
    inner = _INLINE_MATH.match(rest.lstrip())
    if inner:  # "the answer is $73$." -> 73
      candidate = _strip_wrappers(next(g for g in inner.groups() if g))
    else:
      end = _SENTENCE_END.search(rest)
      candidate = _strip_wrappers(rest[:end.start()] if end else rest)
    if candidate:
      return Extraction(candidate, "phrase")
  if _looks_like_bare_answer(text):
    return Extraction(_strip_wrappers(text), "whole")
  maths = _INLINE_MATH.findall(tail)
  if maths:
    return Extraction(_strip_wrappers(next(g for g in maths[-1] if g)), "math")
  return Extraction(None, "none")


def extract_gold(gold: str) -> Optional[str]:
  """The reference answer: the last box content if the gold is a boxed solution, else the gold itself."""
  if not isinstance(gold, str):
    return None
  boxed = last_boxed(gold)
  if boxed is not None:
    return boxed
  return _strip_wrappers(gold)
