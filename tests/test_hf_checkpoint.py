"""Hugging Face checkpoint I/O: load (single / sharded / with shardings / bf16), save, round trip, errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from ngrpo_jax import models
from ngrpo_jax.models import qwen2
from tests import tiny_checkpoints


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  return tiny_checkpoints.make_tiny_checkpoint(tmp_path_factory.mktemp("hf"), with_tokenizer=True)


def _hf_state(path):
  model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
  return model.eval(), {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_loaded_params_equal_hf_tensors(ckpt):
  config, params = models.load_pretrained(ckpt)
  _, state = _hf_state(ckpt)
  np.testing.assert_array_equal(np.asarray(params["embed_tokens"]["embedding"]), state["model.embed_tokens.weight"])
  for i in range(config.num_hidden_layers):
    np.testing.assert_array_equal(np.asarray(params["layers"]["self_attn"]["q_proj"]["kernel"][i]),
                                  state[f"model.layers.{i}.self_attn.q_proj.weight"].T)
    np.testing.assert_array_equal(np.asarray(params["layers"]["mlp"]["down_proj"]["kernel"][i]),
                                  state[f"model.layers.{i}.mlp.down_proj.weight"].T)
  np.testing.assert_array_equal(np.asarray(params["lm_head"]["kernel"]), state["lm_head.weight"].T)
  shapes = qwen2.param_shapes(config)
  assert jax.tree.map(lambda x: tuple(x.shape), params) == shapes


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_hf_flax_hf_sharded(tmp_path, tied):
  """HF → params → save_pretrained (sharded, index) → transformers: same tensors and identical logits."""
  src = tiny_checkpoints.make_tiny_checkpoint(tmp_path / "src", tie_word_embeddings=tied, with_tokenizer=False)
  config, params = models.load_pretrained(src)
  out = tmp_path / "out"
  models.save_pretrained(out, config, params, max_shard_size="60KB")
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  assert ("lm_head.weight" in index["weight_map"]) == (not tied)
  model_a, state_a = _hf_state(src)
  model_b, state_b = _hf_state(out)
  assert state_a.keys() == state_b.keys()
  for k in state_a:
    np.testing.assert_array_equal(state_a[k], state_b[k], err_msg=k)
  tokens = torch.randint(0, config.vocab_size, (2, 7))
  with torch.no_grad():
    np.testing.assert_array_equal(model_a(input_ids=tokens).logits.numpy(), model_b(input_ids=tokens).logits.numpy())
  # And reloading our own output gives the same params.
  config2, params2 = models.load_pretrained(out)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params, params2)


def test_sharded_input_and_target_shardings(tmp_path, ckpt):
  """A sharded HF checkpoint loads to the same params; target shardings place each tensor as asked."""
  sharded = tiny_checkpoints.make_tiny_checkpoint(tmp_path, with_tokenizer=False,
                                                  safe_serialization_max_shard="50KB")
  assert (sharded / "model.safetensors.index.json").is_file()
  _, reference = models.load_pretrained(ckpt)
  mesh = jax.make_mesh((2, 4), ("data", "model"))
  P, NS = jax.sharding.PartitionSpec, jax.sharding.NamedSharding

  def spec(path, x):
    name = jax.tree_util.keystr(path)
    if x.ndim == 3:   # stacked kernels [L, in, out]: shard out over "model", in over "data"
      return NS(mesh, P(None, "data", "model"))
    if x.ndim == 2 and "embed" in name:
      return NS(mesh, P("model", None))
    return NS(mesh, P())

  shardings = jax.tree_util.tree_map_with_path(spec, reference)
  _, params = models.load_pretrained(sharded, shardings=shardings)
  for (path, a), b, s in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(reference),
                             jax.tree.leaves(shardings)):
    assert a.sharding == s, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dtype_conversion_bf16(tmp_path, ckpt):
  config, params = models.load_pretrained(ckpt, dtype=jnp.bfloat16)
  assert config.param_dtype == jnp.bfloat16 and config.dtype == jnp.bfloat16
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
  _, ref = models.load_pretrained(ckpt)
  np.testing.assert_array_equal(np.asarray(params["norm"]["scale"]),
                                np.asarray(ref["norm"]["scale"].astype(jnp.bfloat16)))
  # bf16 on disk → loads back bit-identically (through our own safetensors writer and reader).
  models.save_pretrained(tmp_path / "bf16", config, params)
  assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  _, again = models.load_pretrained(tmp_path / "bf16", dtype=jnp.bfloat16)
  jax.tree.map(np.testing.assert_array_equal, params, again)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
  assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


def _copy_checkpoint(src, dst, drop=None, edit_config=None, extra=None):
  dst.mkdir()
  tensors = safetensors.numpy.load_file(str(src / "model.safetensors"))
  if drop:
    tensors.pop(drop)
  if extra:
    tensors.update(extra)
  safetensors.numpy.save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
  config = json.loads((src / "config.json").read_text())
  if edit_config:
    edit_config(config)
  (dst / "config.json").write_text(json.dumps(config))
  return dst


def test_malformed_checkpoints_raise_named_errors(tmp_path, ckpt):
  bad = _copy_checkpoint(ckpt, tmp_path / "missing", drop="model.layers.1.self_attn.k_proj.bias")
  with pytest.raises(ValueError, match=r"model\.layers\.1\.self_attn\.k_proj\.bias"):
    models.load_pretrained(bad)
  bad = _copy_checkpoint(ckpt, tmp_path / "shape", edit_config=lambda c: c.update(intermediate_size=96))
  with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*shape"):
    models.load_pretrained(bad)
  bad = _copy_checkpoint(ckpt, tmp_path / "arch",
                         edit_config=lambda c: c.update(model_type="llama", architectures=["LlamaForCausalLM"]))
  with pytest.raises(ValueError, match="architecture"):
    models.load_pretrained(bad)
  bad = _copy_checkpoint(ckpt, tmp_path / "key", edit_config=lambda c: c.pop("num_hidden_layers"))
  with pytest.raises(ValueError, match="num_hidden_layers"):
    models.load_pretrained(bad)
  bad = _copy_checkpoint(ckpt, tmp_path / "extra", extra={"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)})
  with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.extra\.weight"):
    models.load_pretrained(bad)
  with pytest.raises(FileNotFoundError, match="safetensors"):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((ckpt / "config.json").read_text())
    models.load_pretrained(tmp_path / "empty")


def test_save_rejects_wrong_param_shapes(tmp_path, ckpt):
  config, params = models.load_pretrained(ckpt)
  params["norm"]["scale"] = params["norm"]["scale"][:-1]
  with pytest.raises(ValueError, match="norm/scale"):
    models.save_pretrained(tmp_path / "x", config, params)


def test_tokenizer_loads_with_chat_template(ckpt):
  tok = models.load_tokenizer(ckpt)
  assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
  assert tok.eos_token_id == 2 and tok.pad_token_id == 0
  text = tok.apply_chat_template([{"role": "user", "content": "What is 1+1?"}], tokenize=False,
                                 add_generation_prompt=True)
  assert text.endswith("<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n")
  assert "\\boxed{}" in text
  ids = tok(text)["input_ids"]
  assert tok.decode(ids) == text
  assert max(ids) < tiny_checkpoints.tiny_qwen2_config().vocab_size


def test_flax_initialised_params_export_to_transformers(tmp_path):
  """params from init_params → save_pretrained → transformers logits equal our forward (f32, ≤ 1e-4)."""
  config = qwen2.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=1, rope_theta=1e6, initializer_range=0.2,
                             eos_token_id=(2, 3), tie_word_embeddings=True)
  params = qwen2.init_params(config, jax.random.key(0))
  params["layers"]["self_attn"]["k_proj"]["bias"] = 0.3 * jax.random.normal(jax.random.key(1), (2, 8))
  models.save_pretrained(tmp_path, config, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
  assert model.config.eos_token_id == [2, 3]
  tokens = np.random.default_rng(0).integers(0, 64, (2, 8))
  with torch.no_grad():
    expected = model(input_ids=torch.tensor(tokens)).logits.numpy()
  logits, _ = qwen2.forward(params, config, jnp.asarray(tokens, jnp.int32))
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
