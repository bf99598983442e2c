"""The memory planner: exact per-device bytes of params / grads / optimiser state against the shards really
allocated on a mesh; the activation estimate against XLA's own memory analysis of the compiled backward."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import plan_memory
from ngrpo_jax import sharding
from ngrpo_jax.models import logprobs
from ngrpo_jax.models import qwen2
from tests import sharding_worker as cases

CFG = cases.tiny_config()


def _allocated(tree):
  """Bytes held by device 0 (every device holds the same amount for evenly split arrays)."""
  dev = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree_util.tree_leaves(tree) for s in x.addressable_shards if s.device == dev)


@pytest.mark.parametrize("spec", ["data=8", "fsdp=8", "data=2,fsdp=2,tensor=2", "fsdp=4,tensor=2", "tensor=8"])
def test_params_grads_opt_bytes_equal_allocated(spec):
  planned = plan_memory.plan(CFG, spec, num_devices=8, micro_batch=8, prompt_len=4, response_len=4,
                             rollout_rows=8, chunk=4)
  mesh = sharding.make_mesh(spec)
  params = qwen2.init_params(CFG, jax.random.PRNGKey(0))
  step, opt = cases.make_step(CFG)
  state = cases.make_state(params, opt)
  sh = sharding.train_state_shardings(CFG, state, mesh)
  state = jax.device_put(state, sh)
  assert planned["params"] == _allocated(state.params["policy"])
  assert planned["grads"] == _allocated(state.params["policy"])  # float32 grads, same layout
  assert planned["opt"] == _allocated(state.opt_state)
  cache = jax.device_put(qwen2.init_cache(CFG, 8, 8), sharding.kv_cache_shardings(CFG, mesh, batch_size=8))
  assert planned["kv_cache"] == _allocated(cache)


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("heads,kv_heads,rows,seq,chunk", [(8, 4, 4, 128, 32), (4, 2, 4, 256, 32)])
def test_activation_estimate_against_xla_memory_analysis(remat, heads, kv_heads, rows, seq, chunk):
  config = dataclasses.replace(cases.tiny_config(hidden_size=64, intermediate_size=256, vocab_size=512,
                                                 num_hidden_layers=4, num_attention_heads=heads,
                                                 num_key_value_heads=kv_heads), remat=remat)
  planned = plan_memory.activation_bytes(config, rows, seq, remat=remat, chunk=chunk)
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))

  def loss(p, tokens, adv):
    hidden, _ = qwen2.hidden_states(p, config, tokens[:, :-1])
    return -jnp.sum(adv * logprobs.token_logprobs(p, config, hidden, tokens[:, 1:], chunk_size=chunk))

  compiled = jax.jit(jax.grad(loss)).lower(params, jax.ShapeDtypeStruct((rows, seq + 1), jnp.int32),
                                           jax.ShapeDtypeStruct((rows, seq), jnp.float32)).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  ratio = planned / temp
  print(f"remat={remat} H={heads} K={kv_heads} B={rows} T={seq}: planned activations {planned} B, "
        f"XLA temp buffers {temp} B, ratio {ratio:.3f}")
  assert 0.9 <= ratio <= 1.1


def test_remat_keeps_less_than_no_remat():
  config = cases.tiny_config(hidden_size=64, intermediate_size=256, vocab_size=512, num_hidden_layers=4)
  full = plan_memory.residual_bytes(config, 2, 64, remat=False, chunk=32)
  saved = plan_memory.residual_bytes(config, 2, 64, remat=True, chunk=32)
  assert saved < full // config.num_hidden_layers
  assert (plan_memory.activation_bytes(config, 2, 64, remat=True, chunk=32)
          < plan_memory.activation_bytes(config, 2, 64, remat=False, chunk=32))


def test_planner_table_for_known_configs():
  config = plan_memory.load_config("qwen2.5-math-7b")
  assert (config.num_attention_heads, config.num_key_value_heads, config.hidden_size) == (28, 4, 3584)
  r = plan_memory.plan(config, "fsdp=8", micro_batch=8, prompt_len=1024, response_len=3072)
  n_params = 7_615_616_512  # Qwen2.5-Math-7B (untied head)
  assert abs(r["params"] * 8 / 4 - n_params) / n_params < 1e-3
  assert r["opt"] == pytest.approx(2 * r["params"], rel=1e-6)
  assert r["act_remat"] < r["act"]
  with pytest.raises(ValueError, match="num_attention_heads=28 is not divisible by tensor=8"):
    plan_memory.plan(config, "tensor=8")
  table = plan_memory.format_table("qwen2.5-math-7b", {"fsdp=8": r, "tensor=8": "x"},
                                   dict(num_devices=8, micro_batch=8, prompt_len=1024, response_len=3072,
                                        rollout_rows=64, param_dtype="float32", compute_dtype="bfloat16"))
  assert "fsdp=8" in table and "does not fit" in table


@pytest.mark.parametrize("spec, num_devices", [("data=1", 1), ("fsdp=8", 8)])
def test_lora_plan_keeps_grads_and_optimizer_state_for_the_adapters_only(spec, num_devices):
  """Qwen2.5-Math-7B with rank-64 adapters on all seven projections, on one and on eight devices."""
  from ngrpo_jax.models import lora  # pylint: disable=g-import-not-at-top
  config = plan_memory.load_config("qwen2.5-math-7b")
  lc = lora.LoRAConfig(rank=64)
  r = plan_memory.plan_lora(config, spec, lc, num_devices=num_devices, micro_batch=8, prompt_len=1024,
                            response_len=3072)
  full, low = r["full"], r["lora"]
  L, D, F, K = 28, 3584, 18944, 4 * 128
  n_adapter = L * 64 * ((D + D) * 2 + (D + K) * 2 + (D + F) * 3)     # q, o; k, v; gate, up, down
  assert low["adapter_params"] == n_adapter
  adapter_bytes = 4 * n_adapter                                      # float32, replicated
  assert low["grads"] == adapter_bytes and low["params"] == full["params"] + adapter_bytes
  assert low["opt"] == pytest.approx(2 * adapter_bytes, abs=64)     # Adam moments (+ step counts)
  assert full["grads"] == full["params"] and full["opt"] == pytest.approx(2 * full["params"], rel=1e-6)
  assert full["ref"] == full["params"] and low["ref"] == 0          # LoRA's KL reference is the frozen base
  assert low["act"] == full["act"]
  assert r["saved"] == full["total"] - low["total"]
  # saved = grads + opt + ref of the full model (P + 2P + P) minus the adapters and their grads and moments
  assert r["saved"] == pytest.approx(4 * full["params"] - 4 * adapter_bytes, rel=1e-6)
  table = plan_memory.format_lora_table("qwen2.5-math-7b", lc, {spec: r, "tensor=3": "x"},
                                        dict(num_devices=num_devices, remat=True))
  assert "saved" in table and "lora" in table and "does not fit" in table


def test_planner_qwen3_4b():
  """Qwen3-4B (head_dim 128 ≠ 2560 / 32, tied embeddings, q/k norms): the planned params are its exact count."""
  config = plan_memory.load_config("qwen3-4b")
  assert (config.model_type, config.head_dim, config.num_key_value_heads) == ("qwen3", 128, 8)
  assert config.qk_norm and not config.attention_bias and config.tie_word_embeddings
  n_params = 4_022_468_096  # tests/test_qwen3.py: equal to transformers' Qwen3ForCausalLM count
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)) == n_params
  r = plan_memory.plan(config, "fsdp=8", micro_batch=8, prompt_len=1024, response_len=3072)
  assert abs(r["params"] * 8 / 4 - n_params) / n_params < 1e-3
  assert r["opt"] == pytest.approx(2 * r["params"], rel=1e-6)
  assert r["act_remat"] < r["act"]
  # KV cache: 36 layers × 2 (k, v) × 8 KV heads × 128 × (64 rows × 4096 slots) bf16, split over fsdp=8 rows.
  assert r["kv_cache"] == pytest.approx(36 * 2 * 8 * 128 * 64 * 4096 * 2 / 8, rel=1e-3)


@pytest.mark.parametrize("name", ["qwen3-4b", "qwen2.5-math-7b"])
def test_planner_binary_runs(name):
  """``python -m experiments.plan_memory --config=<name>`` prints a table row per mesh."""
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-m", "experiments.plan_memory", f"--config={name}", "--meshes=fsdp=8",
                        "--meshes=fsdp=4,tensor=2"], capture_output=True, text=True, timeout=300,
                       cwd=str(pathlib.Path(__file__).resolve().parents[1]))
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0].startswith(f"{name}: per-device bytes on 8 devices")
  assert lines[2].startswith("fsdp=8") and lines[3].startswith("fsdp=4,tensor=2") and "GiB" in lines[3]
