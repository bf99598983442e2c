"""A small character-level, Hugging Face-compatible tokenizer for the synthetic task.

The tiny models of the default experiment are loaded through the same code path as a real Qwen2
checkpoint, so the task's tokenizer is a real ``tokenizers`` tokenizer wrapped as
``transformers.PreTrainedTokenizerFast`` and saved with ``save_pretrained``; ``AutoTokenizer.
from_pretrained(dir)`` reloads it.

Vocabulary (size ``VOCAB_SIZE`` = 100): the Qwen special tokens ``<|endoftext|>`` (id 0, also the
pad token, as in Qwen2.5), ``<|im_start|>`` (1), ``<|im_end|>`` (2, the end-of-turn / eos token),
``<unk>`` (3), then one token per character: newline and the 95 printable ASCII characters
(``" "`` … ``"~"``). Every ASCII text — the task's prompts, scratchpads, the Qwen chat template and
the math instruction — round-trips exactly; other characters decode as ``<unk>``.

The chat template is Qwen's ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message,
then ``<|im_start|>assistant\\n`` when ``add_generation_prompt``.
"""
import os
import string

import tokenizers
from tokenizers import decoders
from tokenizers import models
import transformers

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK = "<unk>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, UNK)
CHARACTERS = "\n" + "".join(chr(c) for c in range(0x20, 0x7F))
VOCAB_SIZE = len(SPECIAL_TOKENS) + len(CHARACTERS)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

assert set(string.printable) - set("\t\r\x0b\x0c") <= set(CHARACTERS)


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """Builds the character-level tokenizer (pure; nothing is read or written).

  Returns:
    A ``PreTrainedTokenizerFast`` with ``VOCAB_SIZE`` tokens, eos ``<|im_end|>``, pad
    ``<|endoftext|>``, unk ``<unk>``, no BOS (as Qwen2), and the ChatML ``chat_template``.
  """
  vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
  for ch in CHARACTERS:
    vocab[ch] = len(vocab)
  # A BPE model without merges and without a pre-tokenizer splits text into single characters;
  # the Fuse decoder concatenates them back without inserting spaces.
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
  backend.decoder = decoders.Fuse()
  backend.add_special_tokens(list(SPECIAL_TOKENS))
  tok = transformers.PreTrainedTokenizerFast(
      tokenizer_object=backend,
      eos_token=IM_END,
      pad_token=ENDOFTEXT,
      unk_token=UNK,
      additional_special_tokens=[IM_START],
      model_max_length=4096,
      padding_side="left",
      clean_up_tokenization_spaces=False,
  )
  tok.chat_template = CHAT_TEMPLATE
  return tok


def save_tokenizer(directory: str | os.PathLike) -> str:
  """Builds the tokenizer and writes it with ``save_pretrained(directory)``.

  Args:
    directory: output folder (created if missing).

  Returns:
    ``str(directory)``, loadable with ``transformers.AutoTokenizer.from_pretrained``.
  """
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  build_tokenizer().save_pretrained(directory)
  return directory
