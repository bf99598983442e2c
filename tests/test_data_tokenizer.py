"""Tests of the task tokenizer and prompt templates (ngrpo_jax.data.tokenizer, .prompts)."""
import numpy as np
import pytest
import transformers

from ngrpo_jax.data import prompts
from ngrpo_jax.data import synthetic
from ngrpo_jax.data import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def saved_tokenizer(tmp_path_factory):
  path = tokenizer_lib.save_tokenizer(tmp_path_factory.mktemp("tok"))
  return transformers.AutoTokenizer.from_pretrained(path)


def test_vocab_is_small_with_qwen_special_tokens(saved_tokenizer):
  tok = saved_tokenizer
  assert len(tok) == tokenizer_lib.VOCAB_SIZE < 128
  assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
  ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
  assert len(set(ids.values())) == 3
  # Special tokens are single tokens, never split into characters.
  assert tok("<|im_start|>1+2<|im_end|>")["input_ids"] == [ids["<|im_start|>"]] + [
      tok.convert_tokens_to_ids(c) for c in "1+2"] + [ids["<|im_end|>"]]
  assert tok.bos_token is None


def test_round_trip_is_exact_and_character_level(saved_tokenizer):
  tok = saved_tokenizer
  built = tokenizer_lib.build_tokenizer()
  texts = [prompts.compact_prompt(r["problem"]) + prompts.completion_text(r["solution"], tok)
           for r in synthetic.make_dataset(0, 50, (1.0, 8.0))]
  texts += [prompts.qwen_math_prompt("What is $\\frac{1}{2} + x^2$?  Two  spaces.", tok),
            "".join(tokenizer_lib.CHARACTERS)]
  for text in texts:
    ids = tok(text)["input_ids"]
    assert ids == built(text)["input_ids"]  # the reloaded tokenizer equals the built one
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
  text = "12+345\n\\boxed{357}"
  assert [tok.decode([i]) for i in tok(text)["input_ids"]] == list(text)
  assert tok.decode(tok(text + tok.eos_token)["input_ids"], skip_special_tokens=True) == text


def test_characters_outside_the_vocabulary_are_left_out_as_by_qwen2(saved_tokenizer):
  assert saved_tokenizer("√2")["input_ids"] == saved_tokenizer("2")["input_ids"]
  assert saved_tokenizer.convert_tokens_to_ids(tokenizer_lib.UNK) == 3    # ids of older exports unchanged


# Ids of the tokenizer before it became a Qwen2Tokenizer (a PreTrainedTokenizerFast over the raw characters):
# trained policies and checkpoints depend on them.
LEGACY_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<unk>": 3, "\n": 4, " ": 5, "0": 21, "+": 16,
              "\\": 65, "~": 99}


@pytest.mark.parametrize("with_model_config", [False, True])
def test_saved_tokenizer_reloads_as_itself_through_auto_tokenizer(tmp_path, with_model_config):
  # Regression: beside a `model_type: qwen2` config.json (a Hugging Face export), AutoTokenizer built a
  # Qwen2Tokenizer from the saved vocabulary that dropped every space and newline.
  built = tokenizer_lib.build_tokenizer()
  if with_model_config:
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "vocab_size": 100}')
  built.save_pretrained(tmp_path)
  loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert type(loaded).__name__ == "Qwen2Tokenizer" == type(built).__name__
  text = prompts.qwen_math_prompt("What is 12 + 345?  Two  spaces.\n\nNew lines.", loaded) + "\\boxed{357}" + \
      tokenizer_lib.IM_END
  assert loaded(text)["input_ids"] == built(text)["input_ids"]
  assert loaded.decode(loaded(text)["input_ids"]) == text
  assert {t: loaded(t)["input_ids"] for t in LEGACY_IDS} == {t: [i] for t, i in LEGACY_IDS.items()}
  assert (loaded.eos_token_id, loaded.pad_token_id, loaded.padding_side, len(loaded)) == (2, 0, "left", 100)


def test_batch_padding_is_left_with_pad_token(saved_tokenizer):
  batch = saved_tokenizer(["1+2\n", "123+456\n"], padding=True, return_tensors="np")
  assert batch["input_ids"].shape == (2, 8)
  np.testing.assert_array_equal(batch["attention_mask"][0], [0] * 4 + [1] * 4)
  assert (batch["input_ids"][0, :4] == saved_tokenizer.pad_token_id).all()


def test_qwen_math_prompt_matches_the_chatml_reference(saved_tokenizer):
  question = "Compute 478+65."
  expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
              "<|im_start|>user\nCompute 478+65.\nPlease reason step by step, and put your final "
              "answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
  assert prompts.qwen_math_prompt(question, saved_tokenizer) == expected
  assert prompts.format_prompt(question, saved_tokenizer, "qwen_math") == expected
  no_system = prompts.qwen_math_prompt(question, saved_tokenizer, system=None)
  assert no_system == expected[expected.index("<|im_start|>user"):]
  ids = saved_tokenizer(expected)["input_ids"]
  assert saved_tokenizer.decode(ids) == expected


def test_compact_prompt_and_completion(saved_tokenizer):
  assert prompts.compact_prompt("478+65") == "<|im_start|>478+65\n"
  assert prompts.format_prompt("478+65", None) == "<|im_start|>478+65\n"
  assert len(saved_tokenizer(prompts.compact_prompt("478+65"))["input_ids"]) == 8
  assert prompts.completion_text("\\boxed{1}", saved_tokenizer) == "\\boxed{1}<|im_end|>"
  with pytest.raises(ValueError, match="template"):
    prompts.format_prompt("1+1", saved_tokenizer, "alpaca")
  with pytest.raises(TypeError, match="question"):
    prompts.compact_prompt(12)
