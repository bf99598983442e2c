"""Qwen2 port vs transformers' Qwen2ForCausalLM (torch CPU) on tiny random checkpoints."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ngrpo_jax.models import hf_checkpoint
from ngrpo_jax.models import qwen2
from tests import tiny_checkpoints

F32_TOL = 1e-4
# bfloat16 compute (8 mantissa bits) through 2 layers: logits of scale ~1 (max ~3) differ by ~6e-2 from f32.
BF16_TOL = 0.15


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


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def checkpoint(request, tmp_path_factory):
  tied = request.param
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), tie_word_embeddings=tied,
                                               with_tokenizer=False)
  model = tiny_checkpoints.make_tiny_model(0, tie_word_embeddings=tied)
  config, params = hf_checkpoint.load_pretrained(path)
  assert config.tie_word_embeddings == tied
  return model, config, params


@pytest.mark.parametrize("left_pad", [False, True], ids=["nopad", "leftpad"])
def test_logits_parity_f32(checkpoint, left_pad):
  model, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad)
  expected = _torch_logits(model, tokens, mask)
  logits, cache = jax.jit(qwen2.forward, static_argnums=1)(params, config, tokens, attention_mask=mask)
  assert cache is None
  assert logits.dtype == jnp.float32 and logits.shape == expected.shape
  real = mask.astype(bool)
  err = np.max(np.abs(np.asarray(logits)[real] - expected[real]))
  print(f"max|dlogit| f32 tied={config.tie_word_embeddings} left_pad={left_pad}: {err:.2e}")
  assert err <= F32_TOL


def test_logits_parity_bf16_compute(checkpoint):
  model, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad=True)
  expected = _torch_logits(model, tokens, mask)
  bf16 = dataclasses.replace(config, dtype=jnp.bfloat16)
  logits, _ = jax.jit(qwen2.forward, static_argnums=1)(params, bf16, tokens, attention_mask=mask)
  assert logits.dtype == jnp.float32
  real = mask.astype(bool)
  err = np.max(np.abs(np.asarray(logits)[real] - expected[real]))
  print(f"max|dlogit| bf16 compute tied={config.tie_word_embeddings}: {err:.2e}")
  assert err <= BF16_TOL


def test_incremental_decoding_matches_full_forward(checkpoint):
  """Prefill a left-padded prompt then decode token by token: logits equal the full forward's, per position."""
  _, config, params = checkpoint
  tokens, mask = _batch(config.vocab_size, left_pad=True, seed=1)
  full, _ = qwen2.forward(params, config, tokens, attention_mask=mask)
  prompt_len = 6
  cache = qwen2.init_cache(config, batch_size=3, max_len=12)
  step = jax.jit(qwen2.forward, static_argnums=1, donate_argnames="cache")
  logits, cache = step(params, config, tokens[:, :prompt_len], attention_mask=mask[:, :prompt_len], cache=cache)
  pieces = [logits]
  for t in range(prompt_len, tokens.shape[1]):
    logits, cache = step(params, config, tokens[:, t:t + 1], attention_mask=mask[:, t:t + 1], cache=cache)
    pieces.append(logits)
  assert int(cache.end) == tokens.shape[1]
  np.testing.assert_array_equal(np.asarray(cache.mask[:, :tokens.shape[1]]), mask.astype(bool))
  incremental = np.concatenate([np.asarray(p) for p in pieces], axis=1)
  real = mask.astype(bool)
  np.testing.assert_allclose(incremental[real], np.asarray(full)[real], atol=1e-5, rtol=1e-5)


def test_default_positions_with_cache_count_real_tokens():
  """With a cache, default positions continue from the number of real tokens already cached."""
  config = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1)
  params = qwen2.init_params(config, jax.random.key(0))
  tokens = jnp.array([[0, 0, 5, 6], [1, 2, 3, 4]], jnp.int32)
  mask = jnp.array([[0, 0, 1, 1], [1, 1, 1, 1]])
  explicit_pos = jnp.array([[2], [4]])
  cache = qwen2.init_cache(config, 2, 5)
  _, cache = qwen2.forward(params, config, tokens, attention_mask=mask, cache=cache)
  a, _ = qwen2.forward(params, config, jnp.array([[7], [7]]), cache=cache)
  b, _ = qwen2.forward(params, config, jnp.array([[7], [7]]), positions=explicit_pos, cache=cache)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_per_layer_cache_and_weights_match_the_stacked_scan():
  """The unrolled decode path (per-layer cache buffers, per-layer weights) gives the scan path's logits and
  cache, and stack_cache inverts unstack_cache."""
  config = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2)
  params = qwen2.init_params(config, jax.random.key(1))
  tokens = jnp.array([[0, 3, 5, 6], [1, 2, 3, 4]], jnp.int32)
  mask = jnp.array([[0, 1, 1, 1], [1, 1, 1, 1]])
  _, stacked = qwen2.forward(params, config, tokens, attention_mask=mask, cache=qwen2.init_cache(config, 2, 7))
  layered = qwen2.unstack_cache(stacked)
  assert layered.per_layer and len(layered.k) == 3 and layered.k[0].shape == (2, 2, 4, 7)
  assert layered.v[0].shape == stacked.v.shape[1:]
  step = jnp.array([[7], [9]], jnp.int32)
  ref, ref_cache = qwen2.forward(params, config, step, cache=stacked)
  for p in (params, qwen2.unstack_layers(params)):
    got, got_cache = qwen2.forward(p, config, step, cache=layered)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(qwen2.stack_cache(got_cache).k), np.asarray(ref_cache.k), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_array_equal(np.asarray(got_cache.mask), np.asarray(ref_cache.mask))
  unrolled, _ = qwen2.forward(params, config, step, cache=stacked, unroll_layers=True)
  np.testing.assert_allclose(np.asarray(unrolled), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_unrolled_training_forward_matches_the_scan():
  """unroll_layers without a cache (a Python loop over layers, no stacked scan residuals) gives the same
  logits and gradients as the lax.scan over stacked layers."""
  config = qwen2.Qwen2Config(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2)
  params = qwen2.init_params(config, jax.random.key(2))
  tokens, mask = _batch(config.vocab_size, left_pad=True, seed=3)
  loss = lambda p, unroll: jnp.sum(jnp.sin(qwen2.forward(p, config, tokens, attention_mask=mask,
                                                         unroll_layers=unroll)[0]))
  (v0, g0), (v1, g1) = (jax.value_and_grad(loss)(params, u) for u in (False, True))
  np.testing.assert_allclose(float(v1), float(v0), rtol=1e-5)
  # Float32 summation order differs between the two programs (|grad| up to ~5 here).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5),
               g1, g0)


def test_eval_shape_param_counts():
  """Param counts of the real configs (config values copied from the Hub's config.json files) match transformers."""
  import transformers
  qwen25_05b = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True, model_type="qwen2",
                    architectures=["Qwen2ForCausalLM"], use_sliding_window=False, sliding_window=32768,
                    max_window_layers=24, hidden_act="silu", bos_token_id=151643, eos_token_id=151643)
  qwen25_math_7b = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=4096,
                        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, model_type="qwen2",
                        architectures=["Qwen2ForCausalLM"], use_sliding_window=False, sliding_window=4096,
                        max_window_layers=28, hidden_act="silu", bos_token_id=151643, eos_token_id=151643,
                        use_mrope=False)
  for hf_dict, known in ((qwen25_05b, 494_032_768), (qwen25_math_7b, 7_615_616_512)):
    config = qwen2.Qwen2Config.from_hf_dict(hf_dict)
    shapes = jax.eval_shape(qwen2.init_params, config, jax.random.key(0))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    hf_kwargs = {k: v for k, v in hf_dict.items()
                 if k not in ("model_type", "architectures", "rope_theta", "use_mrope")}
    hf_kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": hf_dict["rope_theta"]}
    with torch.device("meta"):
      model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**hf_kwargs))
    reference = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    print(f"{hf_dict['hidden_size']=}: ours={ours:,} transformers={reference:,}")
    assert ours == reference
    if known is not None:
      assert ours == known


@pytest.mark.parametrize("bad, match", [
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}), "linear"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(use_mrope=True), "mrope"),
    (dict(layer_types=["sliding_attention"]), "layer_types"),
    (dict(model_type="llama", architectures=["LlamaForCausalLM"]), "architecture"),
    (dict(hidden_size=None), "hidden_size"),
])
def test_from_hf_dict_rejects_unsupported(bad, match):
  d = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2).to_hf_dict()
  d.update(bad)
  d = {k: v for k, v in d.items() if v is not None or k not in bad}
  with pytest.raises(ValueError, match=match):
    qwen2.Qwen2Config.from_hf_dict(d)


def test_value_head_shapes():
  config = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2)
  vp = qwen2.init_value_head(config, jax.random.key(1))
  hidden = jax.random.normal(jax.random.key(2), (2, 5, 16))
  v = qwen2.value(vp, hidden)
  assert v.shape == (2, 5) and v.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(v), np.asarray(hidden) @ np.asarray(vp["kernel"]) + float(vp["bias"]),
                             rtol=1e-5, atol=1e-6)


def test_remat_gives_same_gradients_and_config_is_a_static_pytree():
  config = qwen2.Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1)
  params = qwen2.init_params(config, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 6), 0, 32)
  assert jax.tree.leaves(config) == []

  @jax.jit  # config passed as an ordinary (static pytree) argument
  def grads(params, config):
    return jax.grad(lambda p: jnp.sum(jnp.sin(qwen2.forward(p, config, tokens)[0])))(params)

  g = grads(params, config)
  g_remat = grads(params, dataclasses.replace(config, remat=True))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7),
               g, g_remat)


def test_cached_step_updates_the_donated_cache_in_place():
  """A one-token cached forward, jitted with the cache donated, aliases the cache and allocates far less
  than one cache of temporaries: only the new slot is written (no per-call copy of the [L, ...] cache)."""
  config = qwen2.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                             num_attention_heads=4, num_key_value_heads=2)
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.key(0)))
  cache = jax.eval_shape(lambda: qwen2.init_cache(config, batch_size=4, max_len=512))
  tokens = jax.ShapeDtypeStruct((4, 1), jnp.int32)
  step = jax.jit(lambda p, t, c: qwen2.forward(p, config, t, cache=c), donate_argnums=2)
  memory = step.lower(params, tokens, cache).compile().memory_analysis()
  one_cache = cache.k.size * cache.k.dtype.itemsize  # bytes of k alone (the cache holds k and v)
  assert memory.alias_size_in_bytes >= 2 * one_cache  # k and v outputs reuse the donated buffers
  # Reading one layer's keys/values may materialise that layer's slice (2/L of one_cache); a copy of the
  # stacked cache (the xs -> ys scan pattern) would cost >= 2 · one_cache.
  assert memory.temp_size_in_bytes < one_cache / 2, (memory.temp_size_in_bytes, one_cache)
