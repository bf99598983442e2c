"""Prompt templates: the Qwen math chat prompt of the paper and a compact one for tiny models.

* ``qwen_math_prompt``: the NGRPO authors' prompt (Qwen chat format, system "You are a helpful
  assistant.", user = question + "\\n" + "Please reason step by step, and put your final answer
  within \\boxed{}."), rendered with the tokenizer's own chat template — the "qwen-boxed" prompt of
  the Qwen2.5-Math / simpleRL evaluation code. About 40 tokens of scaffolding for a BPE tokenizer
  but ~110 characters, too long for a sub-1M-parameter character-level model.
* ``qwen3_no_thinking_prompt``: the negative-reinforcement paper's Qwen3 prompt (Zhu et al. 2025, repository
  RLVR-Decomposed, ``verl/utils/dataset/rl_dataset.py``, ``prompt_template_type="qwen3_no_thinking"``): the
  same system / user turns written out literally, then ``<|im_start|>assistant\n<think>\n\n</think>\n`` — an
  empty thinking block, so Qwen3 answers in non-thinking mode.
* ``compact_prompt``: ``"<|im_start|>" + question + "\\n"`` (the synthetic task's default: 8
  tokens for ``"478+65"``). Responses in both templates end with the tokenizer's eos token
  (``<|im_end|>``), see ``completion_text``.
"""
from typing import Any

from ngrpo_jax.data import tokenizer as tokenizer_lib

QWEN_SYSTEM_PROMPT = "You are a helpful assistant."
QWEN_MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = ("compact", "qwen_math", "qwen3_no_thinking")


def qwen_math_prompt(question: str, tokenizer: Any, *, system: str | None = QWEN_SYSTEM_PROMPT,
                     instruction: str = QWEN_MATH_INSTRUCTION) -> str:
  """The paper's prompt for ``question`` rendered by ``tokenizer.apply_chat_template``.

  messages = [system?, {"role": "user", "content": question + "\\n" + instruction}], with the
  generation prompt (``<|im_start|>assistant\\n`` for Qwen) appended.

  Args:
    question: the problem text.
    tokenizer: a Hugging Face tokenizer with a chat template (Qwen2.5's or ``build_tokenizer()``).
    system: system message; None omits it.
    instruction: appended to the question after a newline.

  Returns:
    The prompt string (not tokenized).
  """
  _check_question(question)
  if not getattr(tokenizer, "chat_template", None):
    raise ValueError("tokenizer has no chat_template; use compact_prompt or a chat tokenizer")
  messages = []
  if system is not None:
    messages.append({"role": "system", "content": system})
  messages.append({"role": "user", "content": f"{question}\n{instruction}"})
  return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def qwen3_no_thinking_prompt(question: str) -> str:
  """The Qwen3 non-thinking prompt of Zhu et al. (2025) for ``question`` (module docstring), as a string.

  Written out as their training code writes it (not via the tokenizer's chat template, whose non-thinking
  rendering ends ``</think>\n\n``).
  """
  _check_question(question)
  return (f"<|im_start|>system\n{QWEN_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}\n"
          f"{QWEN_MATH_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n")


def compact_prompt(question: str) -> str:
  """The compact prompt ``"<|im_start|>" + question + "\\n"`` for the synthetic task."""
  _check_question(question)
  return f"{tokenizer_lib.IM_START}{question}\n"


def format_prompt(question: str, tokenizer: Any, template: str = "compact") -> str:
  """Dispatches on a template name from ``TEMPLATES`` (for configs).

  Args:
    question: the problem text.
    tokenizer: needed by ``"qwen_math"``; ignored by ``"compact"`` and ``"qwen3_no_thinking"``.
    template: one of ``TEMPLATES``: ``"compact"``, ``"qwen_math"`` or ``"qwen3_no_thinking"``.
  """
  if template == "compact":
    return compact_prompt(question)
  if template == "qwen_math":
    return qwen_math_prompt(question, tokenizer)
  if template == "qwen3_no_thinking":
    return qwen3_no_thinking_prompt(question)
  raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")


def completion_text(solution: str, tokenizer: Any) -> str:
  """A supervised target: ``solution`` followed by the tokenizer's eos token (``<|im_end|>``)."""
  if not isinstance(solution, str):
    raise TypeError(f"solution must be a str, got {type(solution).__name__}")
  if tokenizer.eos_token is None:
    raise ValueError("tokenizer has no eos_token")
  return solution + tokenizer.eos_token


def _check_question(question):
  if not isinstance(question, str):
    raise TypeError(f"question must be a str, got {type(question).__name__}")
