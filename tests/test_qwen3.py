"""Qwen3 (dense) in the one transformer implementation vs transformers' Qwen3ForCausalLM (torch CPU).

Tiny random checkpoints (``tests/tiny_checkpoints.py``, head_dim 32 ≠ hidden 64 / 4 heads, random q/k norm
weights) are written with ``save_pretrained`` into temporary directories; nothing is downloaded. Tolerances
are those of the Qwen2 tests (``tests/test_qwen2.py``).
"""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ngrpo_jax import sampling
from ngrpo_jax import sharding
from ngrpo_jax.models import hf_checkpoint
from ngrpo_jax.models import logprobs
from ngrpo_jax.models import qwen2
from tests import tiny_checkpoints

F32_TOL = 1e-4
BF16_TOL = 0.15   # as tests/test_qwen2.py: bfloat16 compute through 2 layers, logits of scale ~1
PAD = 0

# Qwen3-4B's config.json values (https://huggingface.co/Qwen/Qwen3-4B/blob/main/config.json), written out so
# nothing is downloaded.
QWEN3_4B = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=2560,
    intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960,
    attention_bias=False, attention_dropout=0.0, hidden_act="silu", max_window_layers=36, rope_scaling=None,
    sliding_window=None, use_sliding_window=False, bos_token_id=151643, eos_token_id=151645)


def _batch(vocab_size, left_pad, seed=0):
  """tokens int32[3, 9] and mask [3, 9]; with left_pad rows 1 and 2 start with 3 and 5 padding slots."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab_size, size=(3, 9)).astype(np.int32)
  mask = np.ones((3, 9), np.int32)
  if left_pad:
    mask[1, :3] = 0
    mask[2, :5] = 0
    tokens[mask == 0] = 0
  return tokens, mask


def _torch_logits(model, tokens, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0), dtype=torch.long))
  return out.logits.float().numpy()


def _load(tmp_path_factory, seed=0, **overrides):
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path_factory.mktemp("qwen3"), seed=seed, model_type="qwen3",
                                               with_tokenizer=False, **overrides)
  model = tiny_checkpoints.make_tiny_model(seed, model_type="qwen3", **overrides)
  config, params = hf_checkpoint.load_pretrained(path)
  return path, model, config, params


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def checkpoint(request, tmp_path_factory):
  path, model, config, params = _load(tmp_path_factory, tie_word_embeddings=request.param)
  assert config.model_type == "qwen3" and config.tie_word_embeddings == request.param
  return path, model, config, params


def test_config_and_param_layout(checkpoint):
  """Qwen3's params are Qwen2's pytree without q/k/v biases plus q_norm / k_norm scales over head_dim."""
  _, _, config, params = checkpoint
  assert config.head_dim == 32 != config.hidden_size // config.num_attention_heads
  assert config.qk_norm and not config.attention_bias and not config.o_bias
  attn = params["layers"]["self_attn"]
  assert sorted(attn) == ["k_norm", "k_proj", "o_proj", "q_norm", "q_proj", "v_proj"]
  assert all(sorted(attn[k]) == ["kernel"] for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
  assert attn["q_norm"]["scale"].shape == attn["k_norm"]["scale"].shape == (2, 32)
  assert attn["q_proj"]["kernel"].shape == (2, 64, 4 * 32) and attn["k_proj"]["kernel"].shape == (2, 64, 2 * 32)
  assert jax.tree.structure(params) == jax.tree.structure(qwen2.param_shapes(config),
                                                          is_leaf=lambda x: isinstance(x, tuple))


@pytest.mark.parametrize("left_pad", [False, True], ids=["nopad", "leftpad"])
def test_logits_parity_f32(checkpoint, left_pad):
  _, model, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad)
  expected = _torch_logits(model, tokens, mask)
  logits, cache = jax.jit(qwen2.forward, static_argnums=1)(params, config, tokens, attention_mask=mask)
  assert cache is None
  assert logits.dtype == jnp.float32 and logits.shape == expected.shape
  real = mask.astype(bool)
  err = np.max(np.abs(np.asarray(logits)[real] - expected[real]))
  print(f"qwen3 max|dlogit| f32 tied={config.tie_word_embeddings} left_pad={left_pad}: {err:.2e}")
  assert err <= F32_TOL


def test_logits_parity_with_attention_bias(tmp_path_factory):
  """Qwen3 with attention_bias=True has biases on q, k, v AND o (transformers' Qwen3Attention)."""
  _, model, config, params = _load(tmp_path_factory, seed=4, attention_bias=True)
  assert config.attention_bias and config.o_bias
  assert params["layers"]["self_attn"]["o_proj"]["bias"].shape == (2, config.hidden_size)
  tokens, mask = _batch(config.vocab_size, left_pad=True, seed=2)
  expected = _torch_logits(model, tokens, mask)
  logits, _ = qwen2.forward(params, config, tokens, attention_mask=mask)
  real = mask.astype(bool)
  err = np.max(np.abs(np.asarray(logits)[real] - expected[real]))
  print(f"qwen3 attention_bias max|dlogit| f32: {err:.2e}")
  assert err <= F32_TOL


def test_logits_parity_bf16_compute(checkpoint):
  _, model, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad=True)
  expected = _torch_logits(model, tokens, mask)
  bf16 = dataclasses.replace(config, dtype=jnp.bfloat16)
  logits, _ = jax.jit(qwen2.forward, static_argnums=1)(params, bf16, tokens, attention_mask=mask)
  assert logits.dtype == jnp.float32
  real = mask.astype(bool)
  err = np.max(np.abs(np.asarray(logits)[real] - expected[real]))
  print(f"qwen3 max|dlogit| bf16 compute tied={config.tie_word_embeddings}: {err:.2e}")
  assert err <= BF16_TOL


def test_incremental_decoding_matches_full_forward(checkpoint):
  """Prefill a left-padded prompt then decode token by token (stacked cache scan, and the sampler's per-layer
  cache with unstacked weights): logits equal the full forward's, per position."""
  _, _, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad=True, seed=1)
  full, _ = qwen2.forward(params, config, tokens, attention_mask=mask)
  prompt_len = 6
  real = mask.astype(bool)
  step = jax.jit(qwen2.forward, static_argnums=1, donate_argnames="cache")
  for per_layer in (False, True):
    cache = qwen2.init_cache(config, batch_size=3, max_len=12)
    p = params
    logits, cache = step(p, config, tokens[:, :prompt_len], attention_mask=mask[:, :prompt_len], cache=cache)
    if per_layer:
      cache, p = qwen2.unstack_cache(cache), qwen2.unstack_layers(params)
    pieces = [logits]
    for t in range(prompt_len, tokens.shape[1]):
      logits, cache = step(p, config, tokens[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache)
      pieces.append(logits)
    assert int(cache.end) == tokens.shape[1] and cache.per_layer == per_layer
    incremental = np.concatenate([np.asarray(x) for x in pieces], axis=1)
    np.testing.assert_allclose(incremental[real], np.asarray(full)[real], atol=1e-5, rtol=1e-5)


def test_greedy_matches_transformers_generate(checkpoint):
  """The sampler's greedy tokens equal transformers' ``generate`` token for token (left-padded prompts)."""
  _, model, config, params = checkpoint
  rng = np.random.RandomState(1)
  lengths, width, max_new = [4, 11, 7, 1], 11, 12
  tokens = np.full((len(lengths), width), PAD, np.int32)
  mask = np.zeros((len(lengths), width), bool)
  for i, n in enumerate(lengths):
    tokens[i, width - n:] = rng.randint(3, config.vocab_size, n)
    mask[i, width - n:] = True
  with torch.no_grad():
    hf = model.generate(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                        do_sample=False, max_new_tokens=max_new, eos_token_id=None, pad_token_id=PAD)
  hf = hf[:, width:].numpy()
  out = sampling.generate(params, config, tokens, mask, jax.random.key(0), max_new_tokens=max_new, greedy=True,
                          stop_token_ids=(), pad_token_id=PAD)
  np.testing.assert_array_equal(np.asarray(out.tokens), hf)


def test_hf_round_trip_is_bit_identical(checkpoint, tmp_path):
  """HF → params → HF: every tensor of the re-saved checkpoint equals the original bit for bit, the same
  tensor names, and transformers loads it back as a Qwen3ForCausalLM with identical logits."""
  import safetensors.numpy
  import transformers
  path, model, config, params = checkpoint
  out = tmp_path / "resaved"
  hf_checkpoint.save_pretrained(out, config, params)
  original = safetensors.numpy.load_file(str(path / "model.safetensors"))
  resaved = safetensors.numpy.load_file(str(out / "model.safetensors"))
  assert sorted(resaved) == sorted(original)
  for name, array in original.items():
    assert resaved[name].dtype == array.dtype and resaved[name].shape == array.shape, name
    assert resaved[name].tobytes() == array.tobytes(), name
  hf_config = json.loads((out / "config.json").read_text())
  assert hf_config["model_type"] == "qwen3" and hf_config["head_dim"] == 32 and not hf_config["attention_bias"]
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32,
                                                               attn_implementation="eager").eval()
  assert type(reloaded).__name__ == "Qwen3ForCausalLM"
  tokens, mask = _batch(config.vocab_size, left_pad=True)
  np.testing.assert_array_equal(_torch_logits(reloaded, tokens, mask), _torch_logits(model, tokens, mask))
  config2, params2 = hf_checkpoint.load_pretrained(out)
  assert config2 == config
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params2, params)


def test_gradients_remat_unrolled_and_logprob_vjp(checkpoint):
  """Scan, unrolled layers and remat give the same gradients; the hand-written log-prob VJP equals autodiff
  of a plain log-softmax through the Qwen3 body (q/k norm scales included)."""
  _, _, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad=True, seed=3)
  tokens, targets, mask = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:]), jnp.asarray(mask[:, :-1])

  def loss(p, cfg, unroll, chunk):
    hidden, _ = qwen2.hidden_states(p, cfg, tokens, attention_mask=mask, unroll_layers=unroll)
    logp, entropy = logprobs.token_logprobs(p, cfg, hidden, targets, chunk_size=chunk, return_entropy=True)
    return jnp.sum((logp + 0.1 * entropy) * mask)

  def reference(p):
    logits, _ = qwen2.forward(p, config, tokens, attention_mask=mask)
    logp_all = jax.nn.log_softmax(logits, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return jnp.sum((logp + 0.1 * entropy) * mask)

  v_ref, g_ref = jax.value_and_grad(reference)(params)
  assert float(jnp.max(jnp.abs(g_ref["layers"]["self_attn"]["q_norm"]["scale"]))) > 0
  for cfg, unroll, chunk in ((config, False, None), (config, True, 4),
                             (dataclasses.replace(config, remat=True), False, 4)):
    v, g = jax.jit(jax.value_and_grad(loss), static_argnums=(1, 2, 3))(params, cfg, unroll, chunk)
    np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5),
                 g, g_ref)


def test_sharded_forward_matches_single_device(tmp_path):
  """Qwen3 params loaded straight into shardings on a data=2,fsdp=2,tensor=2 mesh (q/k norms replicated)
  give the single-device logits and KV cache."""
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path, model_type="qwen3", with_tokenizer=False,
                                               num_attention_heads=8, num_key_value_heads=4, head_dim=16,
                                               vocab_size=64)
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  config, sharded = sharding.load_pretrained_sharded(path, mesh)
  _, plain = hf_checkpoint.load_pretrained(path)
  specs = sharding.param_specs(config, qwen2.param_shapes(config), mesh)
  assert specs["layers"]["self_attn"]["q_norm"]["scale"] == P(None, None)
  assert specs["layers"]["self_attn"]["q_proj"]["kernel"] == P(None, "fsdp", "tensor")
  tokens, mask = _batch(config.vocab_size, left_pad=True)
  tokens, mask = np.concatenate([tokens, tokens[:1]]), np.concatenate([mask, mask[:1]])  # 4 rows

  def prefill(p, tokens, mask):
    return qwen2.forward(p, config, tokens, attention_mask=mask, cache=qwen2.init_cache(config, 4, 12))

  with jax.default_device(jax.devices()[0]):
    ref_logits, ref_cache = jax.device_get(jax.jit(prefill)(plain, tokens, mask))
  p_sh = sharding.param_shardings(config, sharded, mesh)
  b_sh = sharding.batch_sharding(mesh, 2)
  c_sh = sharding.kv_cache_shardings(config, mesh, batch_size=4)
  fn = jax.jit(prefill, in_shardings=(p_sh, b_sh, b_sh),
               out_shardings=(NamedSharding(mesh, P(sharding.BATCH_AXES, None, "tensor")), c_sh))
  logits, cache = fn(sharded, tokens, mask)
  np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(cache.k), ref_cache.k, atol=1e-5, rtol=1e-5)


def test_eval_shape_param_count_qwen3_4b():
  """The parameter count of the real Qwen3-4B config (values above, no download) equals transformers'."""
  import transformers
  config = qwen2.Qwen2Config.from_hf_dict(QWEN3_4B)
  assert config.model_type == "qwen3" and config.head_dim == 128 and not config.attention_bias
  shapes = jax.eval_shape(qwen2.init_params, config, jax.random.key(0))
  ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  hf_kwargs = {k: v for k, v in QWEN3_4B.items() if k not in ("model_type", "architectures", "rope_theta",
                                                               "rope_scaling")}
  hf_kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": QWEN3_4B["rope_theta"]}
  with torch.device("meta"):
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**hf_kwargs))
  reference = sum(p.numel() for p in model.parameters())  # tied weights are counted once
  print(f"Qwen3-4B: ours={ours:,} transformers={reference:,}")
  assert ours == reference == 4_022_468_096


def test_from_hf_dict_round_trip_and_transformers_config():
  """to_hf_dict → transformers.Qwen3Config → to_dict → from_hf_dict gives the same config."""
  import transformers
  config = qwen2.Qwen2Config.from_hf_dict(QWEN3_4B)
  assert qwen2.Qwen2Config.from_hf_dict(config.to_hf_dict()) == config
  hf = transformers.Qwen3Config(**{k: v for k, v in config.to_hf_dict().items()
                                   if k not in ("architectures", "model_type", "rope_theta", "rope_scaling")},
                                rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta})
  assert qwen2.Qwen2Config.from_hf_dict(hf.to_dict()) == config


@pytest.mark.parametrize("bad, match", [
    (dict(use_sliding_window=True, sliding_window=4096), "use_sliding_window"),
    (dict(layer_types=["sliding_attention", "full_attention"]), "layer_types"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
     "rope_scaling"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}), "rope_parameters"),
    (dict(num_experts=128, num_experts_per_tok=8), "num_experts"),
    (dict(moe_intermediate_size=768), "moe_intermediate_size"),
    (dict(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"]), "architecture"),
    (dict(architectures=["Qwen2ForCausalLM"]), "architecture"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(attention_dropout=0.1), "attention_dropout"),
    (dict(head_dim=None, hidden_size=2560, num_attention_heads=24), "head_dim"),
])
def test_from_hf_dict_rejects_unsupported(bad, match):
  d = dict(QWEN3_4B)
  d.update(bad)
  with pytest.raises(ValueError, match=match):
    qwen2.Qwen2Config.from_hf_dict(d)


def test_config_rejects_bad_family_options():
  kw = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
  with pytest.raises(ValueError, match="model_type"):
    qwen2.Qwen2Config(**kw, model_type="llama")
  with pytest.raises(ValueError, match="attention_bias"):
    qwen2.Qwen2Config(**kw, model_type="qwen2", attention_bias=False)
  assert qwen2.Qwen2Config(**kw).attention_bias and not qwen2.Qwen2Config(**kw, model_type="qwen3").attention_bias
  # A Qwen2 config.json without model_type but with its architecture still loads as Qwen2.
  d = qwen2.Qwen2Config(**kw).to_hf_dict()
  del d["model_type"]
  assert qwen2.Qwen2Config.from_hf_dict(d).model_type == "qwen2"


def test_trainer_builds_a_tiny_qwen3_from_its_model_spec():
  """``ModelSpec(model_type="qwen3", head_dim=...)`` (the cpu.py:ngrpo_qwen3 preset's model) builds a Qwen3."""
  from experiments.configs import cpu
  from ngrpo_jax.data import tokenizer as tokenizer_lib
  from ngrpo_jax.training import builders
  spec = cpu.build("ngrpo_qwen3").model
  tokenizer = tokenizer_lib.build_tokenizer()
  config, params = builders.build_model(spec, tokenizer, seed=0)
  assert (config.model_type, config.head_dim, config.num_attention_heads, config.hidden_size) == ("qwen3", 48, 4, 128)
  assert params["layers"]["self_attn"]["k_norm"]["scale"].shape == (3, 48)
  assert "bias" not in params["layers"]["self_attn"]["q_proj"]


def test_cached_step_updates_the_donated_cache_in_place():
  """As for Qwen2 (tests/test_qwen2.py): the q/k norms add no copy of the donated [L, ...] cache per step."""
  config = qwen2.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, model_type="qwen3")
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.key(0)))
  cache = jax.eval_shape(lambda: qwen2.init_cache(config, batch_size=4, max_len=512))
  tokens = jax.ShapeDtypeStruct((4, 1), jnp.int32)
  step = jax.jit(lambda p, t, c: qwen2.forward(p, config, t, cache=c), donate_argnums=2)
  memory = step.lower(params, tokens, cache).compile().memory_analysis()
  one_cache = cache.k.size * cache.k.dtype.itemsize
  assert memory.alias_size_in_bytes >= 2 * one_cache
  assert memory.temp_size_in_bytes < one_cache / 2, (memory.temp_size_in_bytes, one_cache)
