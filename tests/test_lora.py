"""LoRA from Flax (nnx.LoRA) on the Qwen projections vs peft on transformers' Qwen2ForCausalLM and
Qwen3ForCausalLM: B = 0 is the base
exactly, forward parity with peft (random A and B), PEFT export → ``PeftModel.from_pretrained`` → same logits,
import round trip, merged weights = W + s·A·B, dropout, module view, config errors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx

from ngrpo_jax.models import hf_checkpoint
from ngrpo_jax.models import lora
from ngrpo_jax.models import modules
from ngrpo_jax.models import qwen2
from tests import tiny_checkpoints

TOL = 1e-4


def _batch(vocab_size):
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab_size, size=(3, 9)).astype(np.int32)
  mask = np.ones((3, 9), np.int32)
  mask[1, :3] = 0
  mask[2, :5] = 0
  tokens[mask == 0] = 0
  return tokens, mask


def _torch_logits(model, tokens, mask):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0), dtype=torch.long))
  return out.logits.float().numpy()


def _random_adapters(lora_params, seed=1, std=0.2):
  """A and B both nonzero (a trained adapter)."""
  leaves, treedef = jax.tree_util.tree_flatten(lora_params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(treedef, [std * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def base(tmp_path_factory, request):
  """(torch model, its directory, config, params) of a tiny random Qwen2 (untied, random biases) or Qwen3
  (head_dim ≠ hidden / heads, random q/k norms): every test here runs on both families."""
  path = tmp_path_factory.mktemp(f"base-{request.param}")
  model = tiny_checkpoints.make_tiny_model(0, model_type=request.param)
  model.save_pretrained(path)
  config, params = hf_checkpoint.load_pretrained(path)
  return model, str(path), config, params


def _peft_model(path):
  model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
  return model


def _jax_logits(params, config, tokens, mask, lora_params=None, lora_config=None):
  if lora_params is not None:
    params = lora.with_adapters(params, lora_params, lora_config)
  logits, _ = qwen2.forward(params, config, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  return np.asarray(logits)


def test_zero_b_is_the_base_model_exactly(base):
  _, _, config, params = base
  lc = lora.LoRAConfig(rank=4, alpha=16)
  lp = lora.init_lora_params(params, lc, jax.random.PRNGKey(0))
  assert all(np.any(np.asarray(ab["lora_a"]) != 0) for _, ab in lora._pairs(lp))   # pylint: disable=protected-access
  tokens, mask = _batch(config.vocab_size)
  assert np.array_equal(_jax_logits(params, config, tokens, mask, lp, lc), _jax_logits(params, config, tokens, mask))
  fwd = jax.jit(lambda p, l: qwen2.forward(lora.with_adapters(p, l, lc), config, tokens, attention_mask=mask)[0])
  base_fwd = jax.jit(lambda p: qwen2.forward(p, config, tokens, attention_mask=mask)[0])
  assert np.array_equal(np.asarray(fwd(params, lp)), np.asarray(base_fwd(params)))
  # and merging zero adapters changes no weight
  merged = lora.merge_params(params, lp, lc)
  assert all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(params)))


@pytest.mark.parametrize("targets", [lora.TARGETS, ("q_proj", "v_proj"), ("down_proj",)],
                         ids=["all", "qv", "down"])
def test_forward_equals_peft_on_the_same_model(base, targets):
  """peft's own adapters (random A and B) imported from its save_pretrained: same logits within 1e-4."""
  _, path, config, params = base
  torch.manual_seed(3)
  pm = peft.get_peft_model(_peft_model(path), peft.LoraConfig(r=4, lora_alpha=12, target_modules=list(targets),
                                                                lora_dropout=0.0))
  with torch.no_grad():
    for name, p in pm.named_parameters():
      if "lora_" in name:
        p.copy_(0.3 * torch.randn_like(p))
  pm.eval()
  tokens, mask = _batch(config.vocab_size)
  want = _torch_logits(pm, tokens, mask)
  adapter_dir = f"{path}-peft-{'-'.join(targets)}"
  pm.save_pretrained(adapter_dir)
  lp, lc = lora.load_peft_adapter(adapter_dir, params)
  assert lc.rank == 4 and lc.alpha == 12 and lc.scale == 3.0 and set(lc.targets) == set(targets)
  got = _jax_logits(params, config, tokens, mask, lp, lc)
  real = mask.astype(bool)
  err = np.max(np.abs(got[real] - want[real]))
  print(f"max|dlogit| LoRA vs peft ({','.join(targets)}): {err:.2e}")
  assert err <= TOL
  assert np.max(np.abs(want - _torch_logits(_peft_model(path), tokens, mask))[real]) > 1e-2   # adapters matter
  # Merged weights: W + s·A·B equals peft's merge_and_unload, tensor by tensor.
  merged = lora.merge_params(params, lp, lc)
  merged_torch = {k: v.numpy() for k, v in pm.merge_and_unload().state_dict().items()}
  for path_, ab in lora._pairs(lp):   # pylint: disable=protected-access
    kernel = merged
    for k in path_:
      kernel = kernel[k]
    for i in range(config.num_hidden_layers):
      hf_w = merged_torch[lora._peft_module(path_, i) + ".weight"]   # pylint: disable=protected-access
      np.testing.assert_allclose(np.asarray(kernel["kernel"][i]).T, hf_w, atol=1e-5)


def test_export_loads_in_peft_with_the_same_logits(base, tmp_path):
  _, path, config, params = base
  lc = lora.LoRAConfig(rank=3, alpha=6, targets=("q_proj", "k_proj", "o_proj", "up_proj", "down_proj"))
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  out = lora.save_peft_adapter(tmp_path / "adapter", lp, lc, base_model_name_or_path=path)
  cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
  assert cfg["peft_type"] == "LORA" and cfg["r"] == 3 and cfg["lora_alpha"] == 6.0
  names = set(hf_checkpoint._read_safetensors_header(   # pylint: disable=protected-access
      tmp_path / "adapter" / "adapter_model.safetensors")[0]) - {"__metadata__"}
  assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in names
  assert names == set(lora.peft_tensor_names(lp))
  pm = peft.PeftModel.from_pretrained(_peft_model(path), out).eval()
  tokens, mask = _batch(config.vocab_size)
  want = _torch_logits(pm, tokens, mask)
  got = _jax_logits(params, config, tokens, mask, lp, lc)
  real = mask.astype(bool)
  err = np.max(np.abs(got[real] - want[real]))
  print(f"max|dlogit| exported adapter in peft vs LoRA forward: {err:.2e}")
  assert err <= TOL
  # The merged weights run through the plain forward give the same logits too.
  merged = _jax_logits(lora.merge_params(params, lp, lc), config, tokens, mask)
  assert np.max(np.abs(merged[real] - want[real])) <= TOL


def test_import_round_trip(base, tmp_path):
  _, _, _, params = base
  lc = lora.LoRAConfig(rank=2, alpha=5, dropout=0.1, targets=("gate_proj", "v_proj"))
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  lora.save_peft_adapter(tmp_path, lp, lc)
  lp2, lc2 = lora.load_peft_adapter(tmp_path, params)
  assert lc2 == lc
  assert jax.tree_util.tree_structure(lp2) == jax.tree_util.tree_structure(lp)
  assert all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree_util.tree_leaves(lp), jax.tree_util.tree_leaves(lp2)))


def test_merged_weights_are_base_plus_scaled_product(base):
  _, _, _, params = base
  lc = lora.LoRAConfig(rank=4, alpha=2, targets=("q_proj", "down_proj"))
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  merged = lora.merge_params(params, lp, lc)
  for group, proj in (("self_attn", "q_proj"), ("mlp", "down_proj")):
    w = np.asarray(params["layers"][group][proj]["kernel"], np.float64)
    a = np.asarray(lp["layers"][group][proj]["lora"]["lora_a"], np.float64)
    b = np.asarray(lp["layers"][group][proj]["lora"]["lora_b"], np.float64)
    want = w + 0.5 * np.einsum("lir,lro->lio", a, b)        # torch layout: W_hf + s · B_hf A_hf
    np.testing.assert_allclose(np.asarray(merged["layers"][group][proj]["kernel"]), want, atol=1e-6)
  for group, proj in (("self_attn", "k_proj"), ("mlp", "up_proj")):
    assert np.array_equal(np.asarray(merged["layers"][group][proj]["kernel"]),
                          np.asarray(params["layers"][group][proj]["kernel"]))


def test_adapters_in_every_forward_path(base):
  """Scan, unrolled layers, cached prefill + decode, and the merged weights agree."""
  _, _, config, params = base
  lc = lora.LoRAConfig(rank=4, alpha=8)
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  tokens, mask = _batch(config.vocab_size)
  ad = lora.with_adapters(params, lp, lc)
  want = _jax_logits(lora.merge_params(params, lp, lc), config, tokens, mask)
  scan = np.asarray(qwen2.forward(ad, config, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))[0])
  unrolled = np.asarray(qwen2.forward(ad, config, jnp.asarray(tokens), attention_mask=jnp.asarray(mask),
                                      unroll_layers=True)[0])
  cache = qwen2.init_cache(config, 3, 12)
  pre, cache = qwen2.forward(ad, config, jnp.asarray(tokens[:, :6]), attention_mask=jnp.asarray(mask[:, :6]),
                             cache=cache)
  step, _ = qwen2.forward(qwen2.unstack_layers(ad), config, jnp.asarray(tokens[:, 6:]),
                          attention_mask=jnp.asarray(mask[:, 6:]), cache=qwen2.unstack_cache(cache))
  cached = np.concatenate([np.asarray(pre), np.asarray(step)], axis=1)
  real = mask.astype(bool)
  for got in (scan, unrolled, cached):
    assert np.max(np.abs(got - want)[real]) <= 1e-4


def test_dropout_only_with_a_key(base):
  _, _, config, params = base
  lc = lora.LoRAConfig(rank=4, alpha=8, dropout=0.5)
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  tokens, mask = _batch(config.vocab_size)

  def run(key):
    ad = lora.with_adapters(params, lp, lc, dropout_rng=key)
    return np.asarray(jax.jit(lambda p: qwen2.forward(p, config, jnp.asarray(tokens))[0])(ad))

  no_drop = _jax_logits(params, config, tokens, np.ones_like(mask), lp, lc)
  no_drop_cfg = _jax_logits(params, config, tokens, np.ones_like(mask), lp, lora.LoRAConfig(rank=4, alpha=8))
  np.testing.assert_allclose(no_drop, no_drop_cfg, atol=1e-6)
  a, a2, b = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
  assert np.array_equal(a, a2)
  assert np.max(np.abs(a - b)) > 1e-3 and np.max(np.abs(a - no_drop)) > 1e-3


def test_module_view(base):
  """attach → LoRAParam state == the LoRA pytree; module call == functional forward with adapters; a
  gradient with respect to the nnx.LoRAParam state only."""
  _, _, config, params = base
  lc = lora.LoRAConfig(rank=2, alpha=4, targets=("q_proj", "up_proj"))
  lp = _random_adapters(lora.init_lora_params(params, lc, jax.random.PRNGKey(0)))
  model = lora.attach(modules.from_params(config, params), lc, lora_params=lp)
  assert isinstance(model.layers.self_attn.q_proj.lora, lora.ScaledLoRA)
  assert isinstance(model.layers.self_attn.q_proj.lora, nnx.LoRA)
  assert not hasattr(model.layers.self_attn.k_proj, "lora")
  got_lp = lora.lora_params_of(model)
  assert jax.tree_util.tree_structure(got_lp) == jax.tree_util.tree_structure(lp)
  assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree_util.tree_leaves(got_lp),
                                                                          jax.tree_util.tree_leaves(lp)))
  assert jax.tree_util.tree_structure(modules.to_params(model)) == jax.tree_util.tree_structure(params)
  tokens, mask = _batch(config.vocab_size)
  got, _ = model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  assert np.array_equal(np.asarray(got), _jax_logits(params, config, tokens, mask, lp, lc))
  # Train only the adapters, Flax style: differentiate with respect to the LoRAParam state.
  graphdef, lora_state, rest = nnx.split(model, nnx.LoRAParam, ...)

  def loss(lora_state):
    return jnp.mean(nnx.merge(graphdef, lora_state, rest)(jnp.asarray(tokens))[0] ** 2)

  grads = jax.grad(loss)(lora_state)
  assert jax.tree_util.tree_structure(grads.to_pure_dict()) == jax.tree_util.tree_structure(lp)
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(grads))
  fresh = lora.attach(modules.from_params(config, params), lc, jax.random.PRNGKey(5))
  assert all(float(jnp.abs(x["lora_b"]).max()) == 0 for _, x in lora._pairs(lora.lora_params_of(fresh)))   # pylint: disable=protected-access


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), "rank must be an int >= 1"),
    (dict(rank=2, alpha=0), "alpha must be a number > 0"),
    (dict(rank=2, dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(rank=2, targets=("q_proj", "qkv_proj")), r"unknown LoRA target\(s\) \['qkv_proj'\]"),
    (dict(rank=2, targets=()), "at least one"),
])
def test_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    lora.LoRAConfig(**kwargs)


def test_config_defaults():
  lc = lora.LoRAConfig(rank=8)
  assert lc.alpha == 8.0 and lc.scale == 1.0 and lc.targets == lora.TARGETS
  assert lora.LoRAConfig(rank=4, targets=("v_proj", "q_proj")).targets == ("q_proj", "v_proj")


def test_load_errors(base, tmp_path):
  _, _, _, params = base
  lc = lora.LoRAConfig(rank=2, targets=("q_proj",))
  lp = lora.init_lora_params(params, lc, jax.random.PRNGKey(0))
  lora.save_peft_adapter(tmp_path, lp, lc)
  cfg_path = tmp_path / "adapter_config.json"
  cfg = json.loads(cfg_path.read_text())
  cfg_path.write_text(json.dumps({**cfg, "use_rslora": True}))
  with pytest.raises(ValueError, match="use_rslora"):
    lora.load_peft_adapter(tmp_path)
  cfg_path.write_text(json.dumps(cfg))
  small = {"layers": {"self_attn": {"q_proj": {"kernel": np.zeros((2, 8, 8))}}}}
  with pytest.raises(ValueError, match="do not fit|model's kernel"):
    lora.load_peft_adapter(tmp_path, small)
  with pytest.raises(ValueError, match="name no projection"):
    lora.init_lora_params({"layers": {"mlp": params["layers"]["mlp"]}}, lc, jax.random.PRNGKey(0))
