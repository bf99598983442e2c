"""A small character-level Qwen2 tokenizer for the synthetic task, saved and reloaded as what it is.

The tiny models of the default experiment are loaded through the same code path as a real Qwen2
checkpoint, so the task's tokenizer is a real ``transformers.Qwen2Tokenizer``: Qwen2's byte-level BPE
(the same normaliser, pre-tokeniser and decoder) with a 100-symbol vocabulary and *no merges*, so every
character is one token. Its exported ``tokenizer_config.json`` says ``"tokenizer_class": "Qwen2Tokenizer"``,
which is also the class transformers' ``AutoTokenizer`` picks for a ``model_type: qwen2`` checkpoint (it
rebuilds a Qwen2 tokenizer from the saved vocabulary whatever class the file names), so a Hugging Face
export of a trained policy reloads with the very same token ids through every standard loader
(``AutoTokenizer.from_pretrained(dir)`` with or without ``config.json``, ``Qwen2Tokenizer``, or the raw
``tokenizer.json``).

Vocabulary (size ``VOCAB_SIZE`` = 100): the Qwen special tokens ``<|endoftext|>`` (id 0, also the
pad token, as in Qwen2.5), ``<|im_start|>`` (1), ``<|im_end|>`` (2, the end-of-turn / eos token),
``<unk>`` (3), then one token per character: newline and the 95 printable ASCII characters
(``" "`` … ``"~"``), spelled as Qwen2's byte-level symbols (``"Ġ"`` for a space, ``"Ċ"`` for a newline,
the character itself otherwise). Every ASCII text — the task's prompts, scratchpads, the Qwen chat
template and the math instruction — round-trips exactly. Other characters have no token: Qwen2's
byte-level model leaves bytes missing from its vocabulary out of the ids (the synthetic task never
produces any; ``<unk>`` keeps its id 3 so that models trained with earlier versions load unchanged).

The chat template is Qwen's ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message,
then ``<|im_start|>assistant\\n`` when ``add_generation_prompt``.
"""
import os
import string

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


def byte_symbol(byte: int) -> str:
  """The byte-level BPE symbol of a byte (GPT-2 / Qwen2's ``bytes_to_unicode``).

  Bytes that are printable and not whitespace (``!`` … ``~``, ``¡`` … ``¬``, ``®`` … ``ÿ``) are their own
  character; the other 68 bytes, in increasing order, are ``chr(256)``, ``chr(257)``, … (so ``" "`` is
  ``"Ġ"`` and ``"\\n"`` is ``"Ċ"``).
  """
  if not 0 <= byte < 256:
    raise ValueError(f"byte must be in [0, 256), got {byte}")
  printable = lambda b: 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF
  if printable(byte):
    return chr(byte)
  return chr(256 + sum(1 for b in range(byte) if not printable(b)))


def vocabulary() -> dict:
  """{token: id}: the special tokens, then one byte-level symbol per character of ``CHARACTERS``."""
  vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
  for ch in CHARACTERS:
    vocab[byte_symbol(ord(ch))] = len(vocab)
  return vocab


def build_tokenizer() -> transformers.PreTrainedTokenizerBase:
  """Builds the character-level tokenizer (pure; nothing is read or written).

  Returns:
    A ``transformers.Qwen2Tokenizer`` with ``VOCAB_SIZE`` tokens and no merges, eos ``<|im_end|>``, pad
    ``<|endoftext|>``, unk ``<unk>``, no BOS (as Qwen2), left padding and the ChatML ``chat_template``.
  """
  tok = transformers.Qwen2Tokenizer(
      vocab=vocabulary(),
      merges=[],
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
