"""Sharding on 8 virtual CPU devices: mesh parsing/validation, partition rules, and sharded == single device.

Every sharded computation (logits, KV-cache prefill, sampled tokens, gradients, a full RL train step) is
compared with the same function run unsharded on one device (tolerance 1e-5, float32).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ngrpo_jax import losses
from ngrpo_jax import sharding
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import objective
from ngrpo_jax.training import update

from tests import sharding_worker as cases

TOL = 1e-5
FAST_MESHES = [(2, 2, 2), (1, 1, 8)]           # (1, 1, 8): 4 KV heads < tensor 8 → replicated k/v
SLOW_MESHES = [(8, 1, 1), (1, 8, 1), (1, 4, 2)]


def _params_for(fast, slow):
  return [pytest.param(m, id="x".join(map(str, m))) for m in fast] + [
      pytest.param(m, id="x".join(map(str, m)), marks=pytest.mark.slow) for m in slow]


ALL_MESHES = _params_for(FAST_MESHES, SLOW_MESHES)
# The train-step comparison compiles a whole RL update per mesh (~15 s each here): (2, 2, 2) stays fast.
STEP_MESHES = _params_for(FAST_MESHES[:1], FAST_MESHES[1:] + SLOW_MESHES)

CFG = cases.tiny_config()


def _mesh(shape):
  return sharding.make_mesh(dict(zip(sharding.AXES, shape)))


@pytest.fixture(scope="module")
def params():
  return cases.make_params(CFG)


@pytest.fixture(scope="module")
def batch(params):
  return cases.make_batch(CFG, params)


def _max_diff(a, b):
  diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) -
                                                                  np.asarray(y, np.float64)))), a, b)
  return max(jax.tree_util.tree_leaves(diffs))


# ----------------------------------------------------------------------------------------------------------
# Mesh specs and validation.


def test_parse_mesh_spec():
  assert sharding.parse_mesh_spec("data=2,fsdp=2,tensor=2") == {"data": 2, "fsdp": 2, "tensor": 2}
  assert sharding.parse_mesh_spec(" tensor = 4 ") == {"data": 1, "fsdp": 1, "tensor": 4}
  assert sharding.parse_mesh_spec((1, 4, 2)) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert sharding.parse_mesh_spec({"fsdp": 8}) == {"data": 1, "fsdp": 8, "tensor": 1}


@pytest.mark.parametrize("spec, match", [
    ("data=2,model=4", "unknown mesh axis"),
    ("data=2;fsdp=4", "malformed"),
    ("data2", "malformed"),
    ("", "empty"),
    ("data=0", "positive"),
    ("data=2,data=4", "twice"),
    ("data=-1,fsdp=-1", "at most one"),
    ((2, 2), "3 entries"),
])
def test_parse_mesh_spec_errors(spec, match):
  with pytest.raises(ValueError, match=match):
    sharding.parse_mesh_spec(spec)


def test_make_mesh():
  mesh = sharding.make_mesh("data=2,fsdp=2,tensor=2")
  assert mesh.axis_names == sharding.AXES and dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
  assert dict(sharding.make_mesh("fsdp=-1,tensor=2").shape) == {"data": 1, "fsdp": 4, "tensor": 2}
  assert dict(sharding.make_mesh("tensor=2", devices=jax.devices()[:2]).shape)["tensor"] == 2
  with pytest.raises(ValueError, match="needs 4 devices but 8"):
    sharding.make_mesh("data=2,tensor=2")
  with pytest.raises(ValueError, match="cannot infer"):
    sharding.make_mesh("data=-1,tensor=3")


@pytest.mark.parametrize("overrides, spec, match", [
    (dict(num_attention_heads=4, num_key_value_heads=4), "tensor=8", "num_attention_heads=4 is not divisible by tensor=8"),
    (dict(intermediate_size=60), "tensor=8", "intermediate_size=60 is not divisible by tensor=8"),
    (dict(hidden_size=36, num_attention_heads=6, num_key_value_heads=6, head_dim=6), "fsdp=8",
     "hidden_size=36 is not divisible by fsdp=8"),
])
def test_validate_mesh_for_config(overrides, spec, match):
  config = cases.tiny_config(**overrides)
  with pytest.raises(ValueError, match=match):
    sharding.param_shardings(config, qwen2.param_shapes(config), sharding.make_mesh(spec))


def test_unknown_param_name_is_an_error():
  mesh = _mesh((2, 2, 2))
  with pytest.raises(ValueError, match="no partition rule for param 'layers/extra/kernel'"):
    sharding.param_specs(CFG, {"layers": {"extra": {"kernel": (2, 32, 32)}}}, mesh)


def test_kv_heads_replicated_when_fewer_than_tensor():
  specs = sharding.param_specs(CFG, qwen2.param_shapes(CFG), _mesh((1, 1, 8)))  # K = 4 < 8
  assert specs["layers"]["self_attn"]["k_proj"]["kernel"] == P(None, "fsdp", None)
  assert specs["layers"]["self_attn"]["v_proj"]["bias"] == P(None, None)
  assert specs["layers"]["self_attn"]["q_proj"]["kernel"] == P(None, "fsdp", "tensor")
  specs = sharding.param_specs(CFG, qwen2.param_shapes(CFG), _mesh((1, 2, 4)))  # K = 4 = tensor
  assert specs["layers"]["self_attn"]["k_proj"]["kernel"] == P(None, "fsdp", "tensor")
  assert sharding.kv_cache_specs(CFG, _mesh((1, 1, 8))).k == P(None, ("data", "fsdp"), None, None, None)
  assert sharding.kv_cache_specs(CFG, _mesh((1, 2, 4))).k == P(None, ("data", "fsdp"), "tensor", None, None)


def test_odd_vocab_falls_back_to_replication():
  config = cases.tiny_config(vocab_size=63)
  specs = sharding.param_specs(config, qwen2.param_shapes(config), _mesh((2, 2, 2)))
  assert specs["embed_tokens"]["embedding"] == P(None, "fsdp")
  assert specs["lm_head"]["kernel"] == P("fsdp", None)


def test_batch_shardings_reject_indivisible_rows():
  with pytest.raises(ValueError, match="'tokens' has 6 rows, not divisible by data × fsdp = 4"):
    sharding.batch_shardings({"tokens": np.zeros((6, 3))}, _mesh((2, 2, 2)))
  with pytest.raises(ValueError, match="not divisible by data × fsdp"):
    sharding.kv_cache_shardings(CFG, _mesh((2, 2, 2)), batch_size=6)


# ----------------------------------------------------------------------------------------------------------
# The params are really split.


def _expected_shard_shape(shape, spec, mesh):
  """Independent reading of a PartitionSpec: dim d is divided by the product of its mesh axes' sizes."""
  out = []
  for i, d in enumerate(shape):
    axes = spec[i] if i < len(spec) else None
    axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    k = int(np.prod([mesh.shape[a] for a in axes]))
    assert d % k == 0
    out.append(d // k)
  return tuple(out)


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 1, 8), (8, 1, 1), (1, 8, 1), (1, 4, 2)])
def test_addressable_shards_follow_partition_specs(params, shape):
  mesh = _mesh(shape)
  shardings = sharding.param_shardings(CFG, params, mesh)
  placed = jax.device_put(params, shardings)
  flat = jax.tree_util.tree_flatten_with_path(placed)[0]
  for path, x in flat:
    spec = x.sharding.spec
    expected = _expected_shard_shape(x.shape, spec, mesh)
    shards = x.addressable_shards
    assert len(shards) == 8
    assert {s.data.shape for s in shards} == {expected}, (sharding.path_str(path), spec)
    # The shards tile the array: reassembling the pieces gives the original values.
    full = np.zeros(x.shape, x.dtype)
    for s in shards:
      full[s.index] = np.asarray(s.data)
    np.testing.assert_array_equal(full, _leaf(params, path))
  q = placed["layers"]["self_attn"]["q_proj"]["kernel"]
  t, f = mesh.shape["tensor"], mesh.shape["fsdp"]
  assert q.addressable_shards[0].data.shape == (2, 32 // f, 32 // t)
  per_device = sharding.per_device_bytes(params, shardings)
  actual = sum(x.addressable_shards[0].data.nbytes for _, x in flat)
  assert per_device == actual


def _leaf(tree, path):
  for k in path:
    tree = tree[k.key]
  return tree


def test_optimizer_state_follows_params(params):
  mesh = _mesh((2, 2, 2))
  step, opt = cases.make_step(CFG)
  state = cases.make_state(params, opt)
  sh = sharding.train_state_shardings(CFG, state, mesh)
  adam = [s for s in jax.tree_util.tree_leaves(sh.opt_state, is_leaf=lambda x: isinstance(x, NamedSharding))]
  mu = sh.opt_state[1][0].mu["policy"]
  nu = sh.opt_state[1][0].nu["policy"]
  psh = sh.params["policy"]
  for tree in (mu, nu):
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: a.spec == b.spec, tree, psh, is_leaf=lambda x: isinstance(x, NamedSharding)))
  assert sh.opt_state[1][0].count.spec == P()
  assert any(s.spec != P() for s in adam)


# ----------------------------------------------------------------------------------------------------------
# Sharded == single device.


def _single(fn, *args):
  with jax.default_device(jax.devices()[0]):
    return jax.device_get(jax.jit(fn)(*args))


@pytest.mark.parametrize("shape", ALL_MESHES)
def test_logits_and_cache_match_single_device(params, batch, shape):
  mesh = _mesh(shape)
  tokens, mask = batch["tokens"], batch["attention_mask"]

  def prefill(p, tokens, mask):
    cache = qwen2.init_cache(CFG, tokens.shape[0], tokens.shape[1] + 4)
    return qwen2.forward(p, CFG, tokens, attention_mask=mask, cache=cache)

  ref_logits, ref_cache = _single(prefill, params, tokens, mask)
  p_sh = sharding.param_shardings(CFG, params, mesh)
  b_sh = sharding.batch_sharding(mesh, 2)
  c_sh = sharding.kv_cache_shardings(CFG, mesh, batch_size=tokens.shape[0])
  logits_sh = NamedSharding(mesh, P(sharding.BATCH_AXES, None, "tensor"))
  fn = jax.jit(prefill, in_shardings=(p_sh, b_sh, b_sh), out_shardings=(logits_sh, c_sh))
  logits, cache = fn(jax.device_put(params, p_sh), tokens, mask)
  assert cache.k.sharding.spec == sharding.kv_cache_specs(CFG, mesh).k
  expected_k = _expected_shard_shape(cache.k.shape, cache.k.sharding.spec, mesh)
  assert {s.data.shape for s in cache.k.addressable_shards} == {expected_k}
  diff = max(_max_diff(logits, ref_logits), _max_diff(cache.k, ref_cache.k), _max_diff(cache.v, ref_cache.v))
  print(f"mesh {shape}: logits/cache max |diff| = {diff:.2e}")
  assert diff <= TOL


def _grads(params, batch):
  algo = algorithms.with_term(algorithms.get_algorithm("ngrpo"), objective.entropy_term(0.001))
  loss_fn = update.make_loss_fn(CFG, algo, update.UpdateConfig(**cases.UPDATE_KW), batch["tokens"].shape[1])

  def f(p, b):
    normalizer = losses.batch_normalizer(b["loss_mask"] > 0, algo.aggregation)
    (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)({"policy": p}, b, normalizer)
    return loss, g["policy"]

  return f


@pytest.fixture(scope="module")
def single_device_step(params, batch):
  """Reference loss / grads and train step, computed once on device 0."""
  ref_loss, ref_g = _single(_grads(params, batch), params, batch)
  step, opt = cases.make_step(CFG)
  ref_state, ref_metrics = _single(step, cases.make_state(params, opt), batch)
  return ref_loss, ref_g, ref_state, ref_metrics


@pytest.mark.parametrize("shape", STEP_MESHES)
def test_loss_grads_and_train_step_match_single_device(params, batch, single_device_step, shape):
  mesh = _mesh(shape)
  # Loss and gradients of the RL objective.
  ref_loss, ref_g, ref_state, ref_metrics = single_device_step
  grad_fn = _grads(params, batch)
  p_sh = sharding.param_shardings(CFG, params, mesh)
  b_sh = sharding.batch_shardings(batch, mesh)
  loss, g = jax.jit(grad_fn, in_shardings=(p_sh, b_sh), out_shardings=(sharding.replicated(mesh), p_sh))(
      jax.device_put(params, p_sh), sharding.shard_batch(batch, mesh))
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, s: x.sharding.spec == s.spec, g, p_sh))
  grad_diff = max(_max_diff(loss, ref_loss), _max_diff(g, ref_g))

  # One full train step (2 minibatches × 2 micro-batches, AdamW, clipping).
  step, opt = cases.make_step(CFG)
  state = cases.make_state(params, opt)
  s_sh = sharding.train_state_shardings(CFG, state, mesh)
  fn = jax.jit(step, in_shardings=(s_sh, b_sh), out_shardings=(s_sh, sharding.replicated(mesh)),
               donate_argnums=(0,))
  new_state, metrics = fn(jax.device_put(state, s_sh), sharding.shard_batch(batch, mesh))
  mu = new_state.opt_state[1][0].mu["policy"]["layers"]["mlp"]["up_proj"]["kernel"]
  assert mu.sharding.spec == p_sh["layers"]["mlp"]["up_proj"]["kernel"].spec
  new_state, metrics = jax.device_get((new_state, metrics))
  step_diff = max(_max_diff(new_state.params, ref_state.params), _max_diff(new_state.opt_state, ref_state.opt_state),
                  _max_diff(metrics["loss"], ref_metrics["loss"]),
                  _max_diff(metrics["grad_norm"], ref_metrics["grad_norm"]))
  moved = _max_diff(new_state.params["policy"], params)
  print(f"mesh {shape}: loss/grads max |diff| = {grad_diff:.2e}; train step max |diff| = {step_diff:.2e} "
        f"(params moved by up to {moved:.2e})")
  assert moved > 1e-3  # the step really updated the params (2 AdamW steps of lr 1e-3)
  assert grad_diff <= TOL and step_diff <= TOL


@pytest.mark.parametrize("shape", STEP_MESHES)
def test_sampled_tokens_match_single_device(params, shape):
  sampling = pytest.importorskip("ngrpo_jax.sampling")
  mesh = _mesh(shape)
  rng = np.random.default_rng(3)
  prompts = rng.integers(3, CFG.vocab_size, (4, 5)).astype(np.int32)
  mask = np.ones_like(prompts, bool)
  mask[1, :2] = False
  kwargs = dict(max_new_tokens=6, num_samples=2, temperature=1.0, top_p=0.9, stop_token_ids=())
  key = jax.random.PRNGKey(7)
  with jax.default_device(jax.devices()[0]):
    ref = jax.device_get(sampling.generate(params, CFG, prompts, mask, key, **kwargs))
    ref_greedy = jax.device_get(sampling.generate(params, CFG, prompts, mask, key, greedy=True,
                                                  max_new_tokens=6, num_samples=2, stop_token_ids=()))
  placed = jax.device_put(params, sharding.param_shardings(CFG, params, mesh))
  out = jax.device_get(sampling.generate(placed, CFG, prompts, mask, key, **kwargs))
  greedy = jax.device_get(sampling.generate(placed, CFG, prompts, mask, key, greedy=True, max_new_tokens=6,
                                            num_samples=2, stop_token_ids=()))
  np.testing.assert_array_equal(out.tokens, ref.tokens)
  np.testing.assert_array_equal(greedy.tokens, ref_greedy.tokens)
  diff = max(_max_diff(out.logprobs, ref.logprobs), _max_diff(greedy.logprobs, ref_greedy.logprobs))
  print(f"mesh {shape}: sampled tokens equal; logprob max |diff| = {diff:.2e}")
  assert diff <= TOL


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: HF safetensors straight into shards; orbax save / restore of sharded arrays.


def test_load_pretrained_into_shardings(tmp_path):
  from ngrpo_jax.models import hf_checkpoint
  from tests import tiny_checkpoints
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path, with_tokenizer=False, num_attention_heads=8,
                                               num_key_value_heads=4, vocab_size=64)
  mesh = _mesh((1, 4, 2))
  config, sharded = sharding.load_pretrained_sharded(path, mesh)
  _, plain = hf_checkpoint.load_pretrained(path)
  specs = sharding.param_specs(config, qwen2.param_shapes(config), mesh)
  for (path_, x), spec in zip(jax.tree_util.tree_flatten_with_path(sharded)[0],
                              jax.tree_util.tree_leaves(specs, is_leaf=lambda s: isinstance(s, P))):
    assert x.sharding.spec == spec, sharding.path_str(path_)
    assert {s.data.shape for s in x.addressable_shards} == {_expected_shard_shape(x.shape, spec, mesh)}
  assert _max_diff(sharded, plain) == 0.0


def test_orbax_save_restore_sharded_params(params, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  mesh = _mesh((2, 2, 2))
  shardings = sharding.param_shardings(CFG, params, mesh)
  placed = jax.device_put(params, shardings)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "params", placed)
  ckpt.wait_until_finished()
  # Restore onto a different mesh layout: orbax reads each target shard directly.
  mesh2 = _mesh((1, 4, 2))
  target = sharding.abstract_with_shardings(params, sharding.param_shardings(CFG, params, mesh2))
  restored = ckpt.restore(tmp_path / "params", target)
  for x, t in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
    assert x.sharding.spec == t.sharding.spec and x.sharding.mesh.shape == mesh2.shape
  assert _max_diff(restored, params) == 0.0
