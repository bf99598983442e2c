"""The Flax NNX module layer: its state is the params pytree, its call is the functional forward (bitwise),
split / merge round trip, and the sharding annotations equal the rules table (8 virtual CPU devices)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ngrpo_jax import sharding
from ngrpo_jax.models import modules
from ngrpo_jax.models import qwen2
from tests import sharding_worker as cases


def _config(**overrides):
  return cases.tiny_config(**overrides)


def _tokens(config, left_pad=True):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, config.vocab_size, size=(3, 7)).astype(np.int32)
  mask = np.ones((3, 7), bool)
  if left_pad:
    mask[1, :2] = False
    mask[2, :4] = False
  return jnp.asarray(tokens), jnp.asarray(mask)


def _same(a, b):
  return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                                  jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("tied, family", [(False, {}), (True, {}),
                                           (True, dict(model_type="qwen3", head_dim=6))],
                         ids=["untied", "tied", "qwen3"])
def test_state_is_the_params_pytree(tied, family):
  config = _config(tie_word_embeddings=tied, **family)
  params = cases.make_params(config)
  model = modules.from_params(config, params)
  if config.qk_norm:
    assert isinstance(model.layers.self_attn.q_norm, modules.RMSNorm)
    assert isinstance(model.layers.self_attn.k_norm, modules.RMSNorm)
  assert _same(nnx.state(model, nnx.Param).to_pure_dict(), params)
  assert _same(modules.to_params(model), params)
  assert isinstance(model.layers.self_attn.q_proj, modules.Linear)
  assert isinstance(model.layers.input_layernorm, modules.RMSNorm)
  assert isinstance(model.embed_tokens, modules.Embed)
  assert hasattr(model, "lm_head") != tied
  assert modules.param_count(model) == sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_unknown_leaves_become_param_groups():
  """A family's extra leaves (e.g. Qwen3's per-head q/k norms) are picked up from the pytree by name."""
  config = _config()
  params = cases.make_params(config)
  params["layers"]["self_attn"]["q_norm"] = {"scale": np.ones((2, config.head_dim), np.float32)}
  params["layers"]["self_attn"]["extra"] = {"weight": np.zeros((2, 3), np.float32)}
  model = modules.from_params(config, params)
  assert isinstance(model.layers.self_attn.q_norm, modules.RMSNorm)
  assert type(model.layers.self_attn.extra) is modules.ParamGroup   # pylint: disable=unidiomatic-typecheck
  assert _same(modules.to_params(model), params)
  with pytest.raises(TypeError, match="layers/bad"):
    modules.from_params(config, {**params, "layers": {**params["layers"], "bad": "not an array"}})


@pytest.mark.parametrize("tied, family", [(False, {}), (True, {}),
                                           (False, dict(model_type="qwen3", head_dim=6))],
                         ids=["untied", "tied", "qwen3"])
def test_module_call_is_bitwise_the_functional_forward(tied, family):
  config = _config(tie_word_embeddings=tied, **family)
  params = jax.tree_util.tree_map(jnp.asarray, cases.make_params(config))
  model = modules.from_params(config, params)
  tokens, mask = _tokens(config)
  want, _ = qwen2.forward(params, config, tokens, attention_mask=mask)
  got, _ = model(tokens, attention_mask=mask)
  assert np.array_equal(np.asarray(got), np.asarray(want))
  # jitted: the functional view (graphdef static) vs the jitted functional forward.
  graphdef, state = modules.functional_view(model)
  got_jit, _ = jax.jit(modules.apply, static_argnums=0)(graphdef, state, tokens, attention_mask=mask)
  want_jit, _ = jax.jit(lambda p: qwen2.forward(p, config, tokens, attention_mask=mask))(params)
  assert np.array_equal(np.asarray(got_jit), np.asarray(want_jit))
  # hidden states / lm head / cached decoding through the module.
  hidden, _ = model.hidden_states(tokens, attention_mask=mask)
  assert np.array_equal(np.asarray(model.lm_logits(hidden)), np.asarray(want))
  cache = qwen2.init_cache(config, 3, 10)
  got_c, cache_m = model(tokens, attention_mask=mask, cache=cache)
  want_c, cache_f = qwen2.forward(params, config, tokens, attention_mask=mask, cache=cache)
  assert np.array_equal(np.asarray(got_c), np.asarray(want_c)) and _same(cache_m, cache_f)


def test_leaf_modules_run_the_functional_blocks():
  config = _config()
  params = jax.tree_util.tree_map(jnp.asarray, cases.make_params(config))
  model = modules.from_params(config, params)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, config.hidden_size))
  layer0 = jax.tree_util.tree_map(lambda a: a[0], params["layers"])
  norm = modules.RMSNorm({"scale": layer0["input_layernorm"]["scale"]})
  assert np.array_equal(np.asarray(norm(x, config.rms_norm_eps)),
                        np.asarray(qwen2.rms_norm(x, layer0["input_layernorm"]["scale"], config.rms_norm_eps)))
  q = modules.Linear(layer0["self_attn"]["q_proj"])
  want = x @ layer0["self_attn"]["q_proj"]["kernel"] + layer0["self_attn"]["q_proj"]["bias"]
  np.testing.assert_allclose(np.asarray(q(x)), np.asarray(want), atol=1e-5)
  tokens, _ = _tokens(config)
  assert np.array_equal(np.asarray(model.embed_tokens(tokens)), np.asarray(params["embed_tokens"]["embedding"][tokens]))


def test_split_merge_round_trip():
  config = _config()
  params = cases.make_params(config)
  model = modules.from_params(config, params)
  graphdef, state = modules.functional_view(model)
  again = modules.merge(graphdef, state)
  assert isinstance(again, modules.QwenForCausalLM) and again.config == config
  assert _same(modules.to_params(again), params)
  assert _same(modules.to_params(state), params)
  # A functional update (e.g. the train step's) goes back into the state, and the module sees it.
  bumped = jax.tree_util.tree_map(lambda x: x + 1.0, modules.to_params(state))
  new_state = modules.replace_params(state, bumped)
  assert _same(modules.to_params(modules.merge(graphdef, new_state)), bumped)
  # The state is a pytree: it passes through jit and comes back with the same structure.
  out = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x * 2, s))(state)
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(state)
  # eval_shape: nothing allocated.
  abstract = modules.abstract_model(config)
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(nnx.state(abstract)))


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 1, 8)], ids=["2x2x2", "1x1x8"])
def test_sharding_annotations_equal_the_rules_table(shape):
  config = _config()
  params = cases.make_params(config)
  mesh = sharding.make_mesh(dict(zip(sharding.AXES, shape)))
  model = modules.from_params(config, params, mesh=mesh)
  state = nnx.state(model, nnx.Param)
  specs = nnx.get_partition_spec(state).to_pure_dict()
  want = sharding.param_specs(config, params, mesh)
  assert jax.tree_util.tree_structure(specs) == jax.tree_util.tree_structure(
      want, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for got_spec, want_spec in zip(jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(
      x, jax.sharding.PartitionSpec)), jax.tree_util.tree_leaves(want, is_leaf=lambda x: isinstance(
          x, jax.sharding.PartitionSpec))):
    assert tuple(got_spec) == tuple(want_spec)
  # The arrays are placed with those shardings, and the module's forward on them equals the unsharded one.
  want_sh = sharding.param_shardings(config, params, mesh)
  for leaf, sh in zip(jax.tree_util.tree_leaves(modules.to_params(model)), jax.tree_util.tree_leaves(
      want_sh, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))):
    assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)
  tokens, mask = _tokens(config)
  graphdef, state = modules.functional_view(model)
  got, _ = jax.jit(modules.apply, static_argnums=0)(graphdef, state, tokens, attention_mask=mask)
  want_logits, _ = qwen2.forward(jax.tree_util.tree_map(jnp.asarray, params), config, tokens, attention_mask=mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want_logits), atol=1e-5)
