"""Tiny random Qwen2 / Qwen3 checkpoints and tokenizers for tests (no hub downloads).

``tiny_qwen2_config(**overrides)`` is a transformers ``Qwen2Config`` (float32) small enough that a forward
pass takes milliseconds (``tiny_qwen3_config``: the Qwen3 equivalent, head_dim 32 ≠ hidden / heads);
``make_tiny_checkpoint(tmp_path, **overrides)`` saves a seeded random ``Qwen2ForCausalLM`` there (or a
``Qwen3ForCausalLM`` with ``model_type="qwen3"``; optionally with a tiny tokenizer) and returns the directory.
"""
import json
import pathlib

import torch
import transformers

torch.set_num_threads(1)

# Qwen's special tokens (ids follow the small vocab below, not Qwen's real ids).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Qwen2.5's chat template, reduced to the system/user/assistant turns the project uses.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tiny_qwen2_config(**overrides) -> transformers.Qwen2Config:
  """A tiny float32 Qwen2 config (vocab 320, hidden 64, 2 layers, 4 query / 2 kv heads); kwargs override."""
  kwargs = dict(
      vocab_size=320,
      hidden_size=64,
      intermediate_size=128,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=512,
      initializer_range=0.1,  # logits of order 1 (0.02 gives near-uniform attention and tiny logits)
      rms_norm_eps=1e-6,
      rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
      tie_word_embeddings=False,
      bos_token_id=None,
      eos_token_id=2,
      pad_token_id=0,
  )
  if "rope_theta" in overrides:
    kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(overrides.pop("rope_theta"))}
  kwargs.update(overrides)
  config = transformers.Qwen2Config(**kwargs)
  config.dtype = torch.float32
  return config


def tiny_qwen3_config(**overrides) -> transformers.Qwen3Config:
  """A tiny float32 Qwen3 config: as ``tiny_qwen2_config`` but head_dim 32 (≠ hidden 64 / 4 heads), no
  attention bias, q/k norms; kwargs override."""
  kwargs = tiny_qwen2_config().to_dict()
  kwargs = {k: kwargs[k] for k in (
      "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "max_position_embeddings", "initializer_range", "rms_norm_eps", "rope_parameters",
      "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")}
  kwargs.update(head_dim=32, attention_bias=False)
  if "rope_theta" in overrides:
    kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(overrides.pop("rope_theta"))}
  kwargs.update(overrides)
  config = transformers.Qwen3Config(**kwargs)
  config.dtype = torch.float32
  return config


def make_tiny_model(seed: int = 0, *, model_type: str = "qwen2", **overrides):
  """A seeded random float32 ``Qwen2ForCausalLM`` (or ``Qwen3ForCausalLM`` for ``model_type="qwen3"``; eval
  mode, eager attention) from ``tiny_qwen2_config`` / ``tiny_qwen3_config``.

  Biases and norm weights (incl. Qwen3's q/k norms) are randomised too (transformers initialises them to
  zero / one, which would hide bugs).
  """
  torch.manual_seed(seed)
  if model_type == "qwen2":
    config, cls = tiny_qwen2_config(**overrides), transformers.Qwen2ForCausalLM
  elif model_type == "qwen3":
    config, cls = tiny_qwen3_config(**overrides), transformers.Qwen3ForCausalLM
  else:
    raise ValueError(f"model_type must be 'qwen2' or 'qwen3', got {model_type!r}")
  config._attn_implementation = "eager"
  model = cls(config).to(torch.float32).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        param.add_(0.1 * torch.randn_like(param))
  return model


def make_tiny_tokenizer(path, vocab_size: int = 320) -> transformers.PreTrainedTokenizerFast:
  """A byte-level tokenizer (Qwen2's pipeline, no merges) with Qwen's special tokens and chat template.

  Ids: 0 <|endoftext|> (pad), 1 <|im_start|>, 2 <|im_end|> (eos), then the 256 byte-level symbols, so any
  text round-trips. Saved to ``path`` with ``tokenizer_class = "Qwen2Tokenizer"`` like real Qwen checkpoints
  (transformers then rebuilds Qwen2's pre-tokenizer, which gives the same ids for this vocabulary).
  """
  import tokenizers
  from tokenizers import decoders, models
  from tokenizers.pre_tokenizers import ByteLevel

  vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
  for ch in sorted(ByteLevel.alphabet(), key=ord):
    vocab[ch] = len(vocab)
  if len(vocab) > vocab_size:
    raise ValueError(f"vocab_size={vocab_size} is smaller than the {len(vocab)} tokens of the tiny tokenizer")
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
      additional_special_tokens=["<|im_start|>"])
  fast.chat_template = CHAT_TEMPLATE
  fast.save_pretrained(str(path))
  config_path = pathlib.Path(path) / "tokenizer_config.json"
  tok_config = json.loads(config_path.read_text())
  tok_config["tokenizer_class"] = "Qwen2Tokenizer"
  config_path.write_text(json.dumps(tok_config, indent=2))
  return fast


def make_tiny_checkpoint(tmp_path, *, seed: int = 0, with_tokenizer: bool = True, safe_serialization_max_shard=None,
                         **overrides) -> pathlib.Path:
  """Saves a seeded random tiny ``Qwen2ForCausalLM`` (float32 safetensors) to ``tmp_path/"tiny_qwen2_<seed>"``
  (a ``Qwen3ForCausalLM`` to ``tiny_qwen3_<seed>`` with ``model_type="qwen3"``).

  Args:
    tmp_path: a directory (pytest's tmp_path).
    seed: torch seed of the random weights.
    with_tokenizer: also save ``make_tiny_tokenizer`` into the directory.
    safe_serialization_max_shard: e.g. "20KB" to force a sharded checkpoint with an index file.
    **overrides: ``model_type`` and ``tiny_qwen2_config`` / ``tiny_qwen3_config`` overrides (e.g.
      tie_word_embeddings=True).

  Returns:
    The checkpoint directory.
  """
  path = pathlib.Path(tmp_path) / f"tiny_{overrides.get('model_type', 'qwen2')}_{seed}"
  model = make_tiny_model(seed, **overrides)
  kwargs = {}
  if safe_serialization_max_shard is not None:
    kwargs["max_shard_size"] = safe_serialization_max_shard
  model.save_pretrained(str(path), **kwargs)
  if with_tokenizer:
    make_tiny_tokenizer(path, vocab_size=model.config.vocab_size)
  return path


def read_config_json(path) -> dict:
  """The checkpoint's config.json as a dict."""
  return json.loads((pathlib.Path(path) / "config.json").read_text())
