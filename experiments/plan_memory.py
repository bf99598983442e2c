r"""Per-device memory plan of an RL run on a (data, fsdp, tensor) mesh, from shapes only (no allocation).

Usage:
  python -m experiments.plan_memory --config=qwen2.5-math-7b \
      --meshes="fsdp=8" --meshes="fsdp=4,tensor=2" --meshes="data=2,fsdp=2,tensor=2" \
      --micro_batch=8 --prompt_len=1024 --response_len=3072 --rollout_rows=64

``--config`` is ``qwen2.5-0.5b``, ``qwen2.5-math-7b``, ``qwen3-4b`` or a path to a Hugging Face ``config.json``
(Qwen2 or Qwen3). For each mesh
the table gives, per device (MiB or GiB):

  params     master params in ``--param_dtype``, split by ``ngrpo_jax.sharding`` partition rules
  grads      one gradient pytree, same layout as the params (float32 accumulation)
  opt        AdamW state: two float32 moments (+ scalars), following the params' shardings
  act        activations of the backward pass of one micro-batch (``--micro_batch`` rows of prompt +
             response tokens) without rematerialisation: saved residuals + the largest live cotangents
  act_remat  the same with each decoder layer rematerialised: the saved layer inputs plus one layer's
             recomputed residuals and its MLP cotangents during its backward
  kv_cache   the sampler's KV cache for ``--rollout_rows`` rows of prompt + response slots
  total      params + grads + opt + max(act | act_remat, per --remat) (training; the KV cache is live only
             while sampling, so it is reported separately)

LoRA (``--lora_rank=R``, ``--lora_targets=q_proj,...``; ``models.lora``): a second table compares full
fine-tuning with LoRA per device: the frozen base params stay (in ``--param_dtype``), but gradients and AdamW
moments exist only for the adapters (float32), and the KL reference is the frozen base itself instead of a
second copy of the weights (``ref``: full fine-tuning with a KL term keeps one). Activations are the same
estimate in both (the adapters add [N, R] per targeted projection, negligible). Example (one and eight 80 GB GPUs):

  python -m experiments.plan_memory --config=qwen2.5-math-7b --num_devices=1 --meshes=data=1 --lora_rank=64
  python -m experiments.plan_memory --config=qwen2.5-math-7b --meshes=fsdp=8 --lora_rank=64

How: every number comes from ``jax.eval_shape``. Params / grads / optimiser state are global shapes divided by
their ``PartitionSpec`` (``NamedSharding.shard_shape``). Activations are the residuals of ``jax.vjp`` of the
training loss (hidden states → chunked token log-probs → policy loss) evaluated for the per-device slice of the
problem: rows / (data × fsdp), heads, KV heads (when split), intermediate size and vocabulary / tensor —
GSPMD splits activations the same way. Residuals that are (casts of) params are not activations and are not
counted. The backward's transient cotangents (softmax, SwiGLU, one logits chunk) are added analytically
(``activation_bytes``); on tiny configs the result is within 10% of XLA's ``memory_analysis().temp_size_in_bytes``
of the compiled gradient (tests/test_sharding_plan_memory.py). XLA's fusion decisions differ per shape, so
treat activations as an estimate (±~20% on shapes unlike the tested ones, e.g. K = H).
"""
import dataclasses
import json
import math
import pathlib

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import sharding
from ngrpo_jax.models import qwen2

_CONFIG = flags.DEFINE_string("config", "qwen2.5-math-7b",
                              "qwen2.5-0.5b, qwen2.5-math-7b, qwen3-4b or a config.json path.")
_MESHES = flags.DEFINE_multi_string(
    "meshes", ["data=8", "fsdp=8", "fsdp=4,tensor=2", "data=2,fsdp=2,tensor=2", "fsdp=2,tensor=4", "tensor=8"],
    "Mesh specs (repeatable); each must multiply to --num_devices.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 8, "Devices the meshes are planned for.")
_MICRO_BATCH = flags.DEFINE_integer("micro_batch", 8, "Rows per (global) training micro-batch.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 1024, "Prompt tokens (paper: 1024).")
_RESPONSE_LEN = flags.DEFINE_integer("response_len", 3072, "Response tokens (paper: 3072).")
_ROLLOUT_ROWS = flags.DEFINE_integer("rollout_rows", 64, "Rows decoded at once by the sampler (KV cache).")
_PARAM_DTYPE = flags.DEFINE_string("param_dtype", "float32", "Master params dtype.")
_COMPUTE_DTYPE = flags.DEFINE_string("compute_dtype", "bfloat16", "Forward / backward / KV cache dtype.")
_CHUNK = flags.DEFINE_integer("logprob_chunk", 128, "Time chunk of the token log-prob computation.")
_REMAT = flags.DEFINE_bool("remat", True, "Whether the total uses the rematerialised activations.")
_LORA_RANK = flags.DEFINE_integer("lora_rank", 0, "LoRA rank: also print the full fine-tuning vs LoRA table (0: off).")
_LORA_TARGETS = flags.DEFINE_list("lora_targets", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"], "Projections with adapters (with --lora_rank).")
_DEVICE_GIB = flags.DEFINE_float("device_gib", 80.0, "Device memory (GiB) the LoRA table checks the totals against.")

# Hugging Face config.json values of the models the paper family uses (Qwen3-4B: the negative-reinforcement
# paper's second model, https://huggingface.co/Qwen/Qwen3-4B/blob/main/config.json).
KNOWN_CONFIGS = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1000000.0, tie_word_embeddings=True),
    "qwen2.5-math-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=4096,
                            rope_theta=10000.0, tie_word_embeddings=False),
    "qwen3-4b": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                     max_position_embeddings=40960, rope_theta=1000000.0, tie_word_embeddings=True),
}


def load_config(name_or_path: str, *, param_dtype="float32", compute_dtype="bfloat16") -> qwen2.Qwen2Config:
  """A ``Qwen2Config`` (Qwen2 or Qwen3) from a known name (``KNOWN_CONFIGS``) or a config.json path."""
  if name_or_path.lower() in KNOWN_CONFIGS:
    return qwen2.Qwen2Config(**KNOWN_CONFIGS[name_or_path.lower()], dtype=compute_dtype, param_dtype=param_dtype)
  path = pathlib.Path(name_or_path)
  if path.is_dir():
    path = path / "config.json"
  if not path.is_file():
    raise ValueError(f"--config {name_or_path!r} is neither a known name {sorted(KNOWN_CONFIGS)} nor a "
                     "config.json file")
  return qwen2.Qwen2Config.from_hf_dict(json.loads(path.read_text()), dtype=compute_dtype,
                                        param_dtype=param_dtype)


def abstract_mesh(spec, num_devices: int):
  """An ``AbstractMesh`` (no devices needed) with the (data, fsdp, tensor) sizes of ``spec``."""
  sizes = sharding.parse_mesh_spec(spec)
  known = math.prod(s for s in sizes.values() if s != -1)
  sizes = {a: (num_devices // known if s == -1 else s) for a, s in sizes.items()}
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh {spec!r} = {sizes} does not use exactly {num_devices} devices")
  return jax.sharding.AbstractMesh(tuple(sizes[a] for a in sharding.AXES), sharding.AXES)


def _bytes(tree) -> int:
  return sum(int(np.prod(x.shape, dtype=np.int64)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree_util.tree_leaves(tree))


def _local_config(config, sizes) -> qwen2.Qwen2Config:
  """The per-device slice of the model's activations: heads, KV heads (when split), MLP width and vocab / tensor."""
  t = sizes["tensor"]
  kv = config.num_key_value_heads
  return dataclasses.replace(
      config, num_attention_heads=config.num_attention_heads // t,
      # Replicated KV heads (K % tensor != 0): a device computes all K, but a config needs H_local % K == 0;
      # gcd(H_local, K) slightly under-counts the k/v activations in that case.
      num_key_value_heads=kv // t if kv % t == 0 else math.gcd(config.num_attention_heads // t, kv), intermediate_size=config.intermediate_size // t,
      vocab_size=-(-config.vocab_size // t), head_dim=config.head_dim)


def residual_bytes(config, rows: int, seq_len: int, *, remat: bool, chunk: int) -> int:
  """Bytes of the residuals ``jax.vjp`` keeps for the backward pass of the RL loss (no allocation).

  Loss: hidden states of ``rows × seq_len`` tokens → chunked token log-probs → -Σ A·logp (the policy-loss
  shape; clipping adds only [rows, seq_len] terms). Residuals shaped like a param (the compute-dtype weight
  copies) are excluded. With ``remat`` only the per-layer scan inputs (and the LM-head chunk inputs) remain.
  """
  from ngrpo_jax.models import logprobs  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(config, remat=remat)
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))
  param_shapes = {tuple(x.shape) for x in jax.tree_util.tree_leaves(params)}
  tokens = jax.ShapeDtypeStruct((rows, seq_len + 1), jnp.int32)
  adv = jax.ShapeDtypeStruct((rows, seq_len), jnp.float32)

  def loss(p, tokens, adv):
    cast = jax.tree_util.tree_map(lambda x: x.astype(config.dtype), p)
    hidden, _ = qwen2.hidden_states(cast, config, tokens[:, :-1])
    logp = logprobs.token_logprobs(cast, config, hidden, tokens[:, 1:], chunk_size=min(chunk, seq_len))
    return -jnp.sum(adv * logp)

  residuals = jax.eval_shape(lambda p, t, a: jax.vjp(lambda q: loss(q, t, a), p)[1], params, tokens, adv)
  return sum(_bytes(x) for x in jax.tree_util.tree_leaves(residuals) if tuple(x.shape) not in param_shapes)


def backward_transient_bytes(config, rows: int, seq_len: int, *, chunk: int) -> dict:
  """Bytes of the largest cotangent buffers live at once while one layer / one logits chunk is differentiated.

  Returns a dict with (per device, B = rows, T = S = seq_len, H heads, F MLP width, V vocabulary, C chunk):
    scores:  2 · B·H·T·S · 4   the softmax backward's f32 d(probs) and d(scores) [B, K, G, T, S]
    mlp:     2 · B·T·F · itemsize(dtype)   d(gate) and d(up) of SwiGLU
    logits:  3 · B·C·V · 4     one chunk's f32 logits, softmax and d(logits) (the chunk body is rematerialised)
  """
  c = min(chunk, seq_len)
  return {"scores": 2 * rows * config.num_attention_heads * seq_len * seq_len * 4,
          "mlp": 2 * rows * seq_len * config.intermediate_size * jnp.dtype(config.dtype).itemsize,
          "logits": 3 * rows * c * config.vocab_size * 4}


def activation_bytes(config, rows: int, seq_len: int, *, remat: bool, chunk: int) -> int:
  """Activation memory of one backward pass of the RL loss: what XLA keeps live beyond params and grads.

  Without remat:  R + T_scores + T_mlp + T_logits
  With remat:     R_remat + R / L + T_mlp

  R = ``residual_bytes`` (all L layers' saved residuals: per layer the f32 masked scores and the probs
  [B, K, G, T, S], q / k / v, the SwiGLU gate / up / product [N, F], RMSNorm inputs and f32 statistics,
  plus the LM-head chunk inputs); R_remat = the same with ``jax.checkpoint`` on the layer (scan carries
  only); R / L = one layer's residuals, recomputed during that layer's backward; T_* =
  ``backward_transient_bytes``. In the rematerialised case XLA schedules the layer's softmax backward after
  its MLP backward and reuses the freed recomputed buffers, so only the MLP cotangents add. Checked against
  ``compiled.memory_analysis().temp_size_in_bytes`` of ``jax.jit(jax.grad(loss))`` on tiny configs (±10%).
  """
  full = residual_bytes(config, rows, seq_len, remat=False, chunk=chunk)
  t = backward_transient_bytes(config, rows, seq_len, chunk=chunk)
  if not remat:
    return full + t["scores"] + t["mlp"] + t["logits"]
  saved = residual_bytes(config, rows, seq_len, remat=True, chunk=chunk)
  return saved + full // config.num_hidden_layers + t["mlp"]


def plan(config, spec, *, num_devices=8, micro_batch=8, prompt_len=1024, response_len=3072, rollout_rows=64,
         chunk=128, remat=True) -> dict:
  """Per-device bytes for one mesh spec (see the module docstring). Raises ValueError if the mesh does not fit."""
  from ngrpo_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  mesh = abstract_mesh(spec, num_devices)
  sizes = sharding.mesh_sizes(mesh)
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))
  p_sh = sharding.param_shardings(config, params, mesh)
  out = {"params": sharding.per_device_bytes(params, p_sh)}
  grads = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params)
  out["grads"] = sharding.per_device_bytes(grads, p_sh)
  opt, _ = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=1e-6), 1e-6)  # the trainer's AdamW
  f32 = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), params)
  opt_state = jax.eval_shape(opt.init, f32)
  out["opt"] = sharding.per_device_bytes(opt_state, sharding.follow_params_shardings(opt_state, f32, p_sh, mesh))
  div = sizes["data"] * sizes["fsdp"]
  seq = prompt_len + response_len
  local = _local_config(config, sizes)
  rows = -(-micro_batch // div)
  out["act"] = activation_bytes(local, rows, seq, remat=False, chunk=chunk)
  out["act_remat"] = activation_bytes(local, rows, seq, remat=True, chunk=chunk)
  cache = jax.eval_shape(lambda: qwen2.init_cache(config, rollout_rows, seq))
  c_sh = sharding.kv_cache_shardings(config, mesh)
  out["kv_cache"] = sharding.per_device_bytes(cache, c_sh)
  out["total"] = out["params"] + out["grads"] + out["opt"] + (out["act_remat"] if remat else out["act"])
  return out


def plan_lora(config, spec, lora_config, *, num_devices=8, micro_batch=8, prompt_len=1024, response_len=3072,
              rollout_rows=64, chunk=128, remat=True) -> dict:
  """Per-device bytes of full fine-tuning vs LoRA (``lora.LoRAConfig``) on one mesh spec.

  Returns ``{"full": {...}, "lora": {...}, "saved": bytes}``; each plan has ``params`` (LoRA: frozen base +
  adapters), ``grads``, ``opt`` (LoRA: adapters only, float32), ``ref`` (the KL reference's extra copy: the
  params for full fine-tuning, 0 for LoRA, whose reference is the frozen base), ``act`` (as in :func:`plan`,
  remat per ``remat``), ``kv_cache`` and ``total`` = params + grads + opt + ref + act.
  """
  from ngrpo_jax.models import lora as lora_lib  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  base = plan(config, spec, num_devices=num_devices, micro_batch=micro_batch, prompt_len=prompt_len,
              response_len=response_len, rollout_rows=rollout_rows, chunk=chunk, remat=remat)
  act = base["act_remat"] if remat else base["act"]
  full = {"params": base["params"], "grads": base["grads"], "opt": base["opt"], "ref": base["params"], "act": act,
          "kv_cache": base["kv_cache"]}
  mesh = abstract_mesh(spec, num_devices)
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.PRNGKey(0)))
  adapters = lora_lib.abstract_lora_params(params, lora_config)
  a_sh = sharding.param_shardings(config, adapters, mesh)          # replicated (tiny)
  adapter_bytes = sharding.per_device_bytes(adapters, a_sh)
  opt, _ = state_lib.make_optimizer(state_lib.OptimConfig(learning_rate=1e-6), 1e-6)
  opt_state = jax.eval_shape(opt.init, adapters)
  lora_plan = {"params": base["params"] + adapter_bytes, "grads": adapter_bytes,
               "opt": sharding.per_device_bytes(opt_state, sharding.follow_params_shardings(opt_state, adapters, a_sh,
                                                                                            mesh)),
               "ref": 0, "act": act, "kv_cache": base["kv_cache"],
               "adapter_params": lora_lib.num_lora_params(adapters)}
  for p in (full, lora_plan):
    p["total"] = p["params"] + p["grads"] + p["opt"] + p["ref"] + p["act"]
  return {"full": full, "lora": lora_plan, "saved": full["total"] - lora_plan["total"]}


def format_lora_table(config_name, lora_config, results: dict, args: dict, device_gib: float = 80.0) -> str:
  """The full fine-tuning vs LoRA table of :func:`plan_lora` results (one row pair per mesh)."""
  cols = ("params", "grads", "opt", "ref", "act", "total")
  some = next((r for r in results.values() if not isinstance(r, str)), None)
  n_adapter = some["lora"]["adapter_params"] if some else 0
  lines = [f"{config_name}: full fine-tuning vs LoRA r={lora_config.rank} on {', '.join(lora_config.targets)} "
           f"({n_adapter / 1e6:.1f}M adapter params); per device on {args['num_devices']} device(s); 'ref' = the KL "
           f"reference's copy; total = params + grads + opt + ref + act{' (remat)' if args['remat'] else ''}; "
           f"fits = total + kv_cache <= {device_gib:g} GiB",
           f"{'mesh':<26}{'':<6}" + "".join(f"{c:>14}" for c in cols) + f"{'saved':>14}{'fits':>6}"]
  for spec, r in results.items():
    if isinstance(r, str):
      lines.append(f"{spec:<26}  does not fit: {r}")
      continue
    for kind in ("full", "lora"):
      p = r[kind]
      fits = "yes" if p["total"] + p["kv_cache"] <= device_gib * 2**30 else "no"
      saved = _fmt(r["saved"]) if kind == "lora" else ""
      lines.append(f"{spec if kind == 'full' else '':<26}{kind:<6}" + "".join(f"{_fmt(p[c]):>14}" for c in cols)
                   + f"{saved:>14}{fits:>6}")
  return "\n".join(lines)


def _fmt(n: int) -> str:
  return f"{n / 2**30:8.2f} GiB" if n >= 2**30 else f"{n / 2**20:8.1f} MiB"


def format_table(config_name, results: dict, args: dict) -> str:
  cols = ("params", "grads", "opt", "act", "act_remat", "kv_cache", "total")
  lines = [f"{config_name}: per-device bytes on {args['num_devices']} devices; micro-batch {args['micro_batch']} rows × "
           f"({args['prompt_len']} + {args['response_len']}) tokens; KV cache {args['rollout_rows']} rows; "
           f"compute {args['compute_dtype']}, params {args['param_dtype']}",
           f"{'mesh':<26}" + "".join(f"{c:>14}" for c in cols)]
  for spec, r in results.items():
    if isinstance(r, str):
      lines.append(f"{spec:<26}  does not fit: {r}")
    else:
      lines.append(f"{spec:<26}" + "".join(f"{_fmt(r[c]):>14}" for c in cols))
  return "\n".join(lines)


def main(argv):
  del argv
  config = load_config(_CONFIG.value, param_dtype=_PARAM_DTYPE.value, compute_dtype=_COMPUTE_DTYPE.value)
  args = dict(num_devices=_NUM_DEVICES.value, micro_batch=_MICRO_BATCH.value, prompt_len=_PROMPT_LEN.value,
              response_len=_RESPONSE_LEN.value, rollout_rows=_ROLLOUT_ROWS.value, chunk=_CHUNK.value,
              remat=_REMAT.value)
  results = {}
  for spec in _MESHES.value:
    try:
      results[spec] = plan(config, spec, **args)
    except ValueError as e:
      results[spec] = str(e)
  print(format_table(_CONFIG.value, results, dict(args, param_dtype=_PARAM_DTYPE.value,
                                                  compute_dtype=_COMPUTE_DTYPE.value)))
  if _LORA_RANK.value > 0:
    from ngrpo_jax.models import lora as lora_lib  # pylint: disable=g-import-not-at-top
    lora_config = lora_lib.LoRAConfig(rank=_LORA_RANK.value, targets=tuple(_LORA_TARGETS.value))
    lora_results = {}
    for spec in _MESHES.value:
      try:
        lora_results[spec] = plan_lora(config, spec, lora_config, **args)
      except ValueError as e:
        lora_results[spec] = str(e)
    print()
    print(format_lora_table(_CONFIG.value, lora_config, lora_results, args, _DEVICE_GIB.value))


if __name__ == "__main__":
  app.run(main)
