"""Sharding over devices and hosts with ``jax.sharding``: a named mesh, partition rules, multi-host set-up.

Everything here is JAX's own machinery — a ``Mesh`` with named axes, ``NamedSharding`` / ``PartitionSpec`` per
array, ``jax.jit`` in/out shardings (GSPMD inserts the collectives), ``jax.distributed`` for several hosts.

Mesh axes (outermost first)::

  data    pure data parallelism: the batch is split, params are replicated along it.
  fsdp    fully sharded data parallelism (ZeRO-3): the batch is split AND every large param (and its grads
          and optimiser moments) is split along its hidden-size dimension; XLA all-gathers a layer's weights
          just before use and reduce-scatters its gradients.
  tensor  tensor (Megatron) parallelism: attention heads and the MLP intermediate dimension are split, so
          each device computes its heads / its slice of the SwiGLU, followed by one all-reduce per block.

Partition rules for Qwen2 and Qwen3 (stacked layers, leading ``[L]`` axis never split — the layer scan walks it)::

  embed_tokens.embedding [V, D]        P(tensor, fsdp)         vocab-parallel embedding
  lm_head.kernel         [D, V]        P(fsdp, tensor)         vocab-parallel logits
  q_proj.kernel  [L, D, H·hd]          P(None, fsdp, tensor)   column parallel (heads)
  q_proj.bias    [L, H·hd]             P(None, tensor)
  k/v_proj.kernel [L, D, K·hd]         P(None, fsdp, tensor)   if K % tensor == 0, else P(None, fsdp, None)
  k/v_proj.bias  [L, K·hd]             P(None, tensor)         if K % tensor == 0, else P(None, None)
  o_proj.kernel  [L, H·hd, D]          P(None, tensor, fsdp)   row parallel
  gate/up_proj.kernel [L, D, F]        P(None, fsdp, tensor)   column parallel (intermediate)
  down_proj.kernel    [L, F, D]        P(None, tensor, fsdp)   row parallel
  *layernorm.scale [L, D], norm.scale [D], value head            replicated (tiny)
  q_norm/k_norm.scale [L, hd], o_proj.bias [L, D]  (Qwen3)       replicated (tiny)
  <proj>.lora.lora_a [L, in, r], lora_b [L, r, out]               replicated (LoRA adapters, tiny)

GQA with fewer KV heads than the tensor axis (e.g. Qwen2.5-Math-7B: K = 4 on tensor = 8): the k/v
projections (and the KV cache) are REPLICATED along ``tensor`` — each tensor shard recomputes all K heads,
which costs 2·K·hd/D of the attention FLOPs (1/7 for 7B) but keeps RoPE and the per-head dot products local.
Splitting ``head_dim`` instead would cut through RoPE's rotate-half pairs and need an all-reduce inside
every attention score; replication is what Megatron-LM and vLLM do in this case.

A vocabulary size not divisible by ``tensor`` (or a hidden size not divisible by ``fsdp`` for the embedding
only) falls back to replication of that dimension; head counts, the hidden size and the intermediate size
must divide (``validate_mesh_for_config`` raises otherwise).

Activations: batch dims are split over ``(data, fsdp)`` (``batch_sharding``); the model itself carries no
sharding annotations — jit in/out shardings on params, batch and cache are enough for GSPMD to propagate
head / intermediate splits through the layer body (proven equal to the single-device result in the tests).
"""
import dataclasses
import os
import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# ----------------------------------------------------------------------------------------------------------
# Mesh.


def parse_mesh_spec(spec) -> dict:
  """Parses ``"data=2,fsdp=2,tensor=2"`` (or a mapping / 3-tuple) into ``{"data": 2, "fsdp": 2, "tensor": 2}``.

  Missing axes have size 1. A tuple / list is read as (data, fsdp, tensor). Sizes of -1 (at most one) are
  filled in by ``make_mesh`` from the device count.

  Raises:
    ValueError: malformed entries, unknown axis names, repeated axes, sizes that are not positive ints.
  """
  if isinstance(spec, str):
    sizes = {}
    text = spec.strip()
    if not text:
      raise ValueError("mesh spec is empty; expected e.g. 'data=2,fsdp=2,tensor=2'")
    for part in text.split(","):
      part = part.strip()
      m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(-?\d+)", part)
      if not m:
        raise ValueError(f"malformed mesh spec entry {part!r} in {spec!r}; expected 'axis=size' entries "
                         f"such as 'data=2,fsdp=2,tensor=2'")
      name, size = m.group(1), int(m.group(2))
      if name in sizes:
        raise ValueError(f"axis {name!r} given twice in mesh spec {spec!r}")
      sizes[name] = size
  elif isinstance(spec, Mapping):
    sizes = dict(spec)
  elif isinstance(spec, (tuple, list)):
    if len(spec) != len(AXES):
      raise ValueError(f"a mesh shape tuple must have {len(AXES)} entries {AXES}, got {spec!r}")
    sizes = dict(zip(AXES, spec))
  else:
    raise TypeError(f"mesh spec must be a string, mapping or tuple, got {type(spec).__name__}")
  unknown = sorted(set(sizes) - set(AXES))
  if unknown:
    raise ValueError(f"unknown mesh axis name(s) {unknown} in {spec!r}; valid axes are {AXES}")
  for name, size in sizes.items():
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
      raise ValueError(f"mesh axis {name!r} must have a positive int size (or -1), got {size!r}")
  if sum(1 for s in sizes.values() if s == -1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {spec!r}")
  return {name: int(sizes.get(name, 1)) for name in AXES}


def make_mesh(spec="data=-1", devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ``Mesh`` with axes ``(data, fsdp, tensor)`` over ``devices`` (default: all global devices).

  Args:
    spec: see ``parse_mesh_spec``; e.g. ``"fsdp=4,tensor=2"``; one size may be -1 (= the rest of the
      devices). The product of the sizes must equal the number of devices.
    devices: devices to use (default ``jax.devices()``, i.e. every process's devices after
      ``initialize_distributed``; pass ``jax.local_devices()`` for a per-host mesh).

  The axes are ``AxisType.Auto`` (GSPMD propagates shardings from jit in/out shardings), and the device order
  follows ``jax.make_mesh`` (topology aware; process-major on CPU, so a host owns a contiguous block of the
  outer ``data``/``fsdp`` axes and hence a contiguous slice of the batch).

  Raises:
    ValueError: a malformed spec, or sizes whose product does not equal the device count.
  """
  sizes = parse_mesh_spec(spec)
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if n == 0:
    raise ValueError("devices is empty")
  known = int(np.prod([s for s in sizes.values() if s != -1]))
  for name, s in sizes.items():
    if s == -1:
      if n % known:
        raise ValueError(f"cannot infer axis {name!r}: {n} devices are not divisible by the other axes' "
                         f"product {known} (spec {spec!r})")
      sizes[name] = n // known
  total = int(np.prod(list(sizes.values())))
  if total != n:
    raise ValueError(f"mesh {sizes} needs {total} devices but {n} are available; the axis sizes must "
                     f"multiply to the device count")
  shape = tuple(sizes[a] for a in AXES)
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def mesh_sizes(mesh: Mesh) -> dict:
  """``{"data": ..., "fsdp": ..., "tensor": ...}`` sizes of a mesh built by ``make_mesh``."""
  missing = [a for a in AXES if a not in mesh.shape]
  if missing:
    raise ValueError(f"mesh must have axes {AXES}, missing {missing} (axes: {tuple(mesh.shape)})")
  return {a: int(mesh.shape[a]) for a in AXES}


def batch_divisor(mesh: Mesh) -> int:
  """data × fsdp: the number of ways a batch is split (batch sizes must be multiples of it)."""
  s = mesh_sizes(mesh)
  return s["data"] * s["fsdp"]


def kv_heads_sharded(config, mesh: Mesh) -> bool:
  """Whether the KV heads (k/v projections and the KV cache) are split along ``tensor`` (K % tensor == 0)."""
  return config.num_key_value_heads % mesh_sizes(mesh)["tensor"] == 0


def validate_mesh_for_config(config, mesh: Mesh) -> None:
  """Checks that a Qwen2 config can be split on ``mesh``.

  Requires: tensor | num_attention_heads, tensor | intermediate_size, fsdp | hidden_size. The KV heads need
  not divide (they are replicated along ``tensor`` otherwise, see the module docstring).

  Raises:
    ValueError: naming the config field and the axis that do not fit.
  """
  s = mesh_sizes(mesh)
  t, f = s["tensor"], s["fsdp"]
  problems = []
  if config.num_attention_heads % t:
    problems.append(f"num_attention_heads={config.num_attention_heads} is not divisible by tensor={t}")
  if config.intermediate_size % t:
    problems.append(f"intermediate_size={config.intermediate_size} is not divisible by tensor={t}")
  if config.hidden_size % f:
    problems.append(f"hidden_size={config.hidden_size} is not divisible by fsdp={f}")
  if problems:
    raise ValueError(f"mesh {s} does not fit the model: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------------------
# Partition rules.

# (regex on the '/'-joined param path, rule name). The regex is searched, so prefixes such as 'policy/'
# (the train state's params) match too. Order matters: the first match wins.
_RULES = (
    (r"(^|/)embed_tokens/embedding$", "embedding"),
    (r"(^|/)lm_head/kernel$", "lm_head"),
    (r"(^|/)self_attn/q_proj/kernel$", "column"),
    (r"(^|/)self_attn/q_proj/bias$", "column_bias"),
    (r"(^|/)self_attn/[kv]_proj/kernel$", "kv_column"),
    (r"(^|/)self_attn/[kv]_proj/bias$", "kv_column_bias"),
    (r"(^|/)self_attn/o_proj/kernel$", "row"),
    (r"(^|/)self_attn/o_proj/bias$", "replicated"),
    (r"(^|/)self_attn/[qk]_norm/scale$", "replicated"),
    (r"(^|/)mlp/(gate|up)_proj/kernel$", "column"),
    (r"(^|/)mlp/down_proj/kernel$", "row"),
    (r"(^|/)(input_layernorm|post_attention_layernorm|norm)/scale$", "replicated"),
    (r"(^|/)value/(kernel|bias)$", "replicated"),
    (r"(^|/)lora/lora_[ab]$", "replicated"),           # LoRA adapters (models.lora): small, replicated
)


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_str(path) -> str:
  """'/'-joined names of a pytree key path, e.g. ``policy/layers/mlp/up_proj/kernel``."""
  return "/".join(_key_name(k) for k in path)


def _fits(dim: int, axis, sizes) -> bool:
  if axis is None:
    return True
  axes = axis if isinstance(axis, tuple) else (axis,)
  return dim % int(np.prod([sizes[a] for a in axes])) == 0


def param_partition_spec(name: str, shape: Sequence[int], config, mesh: Mesh) -> P:
  """The ``PartitionSpec`` of one Qwen2 param from its path name and shape (rules: module docstring).

  Raises:
    ValueError: a name no rule knows (so a new param cannot silently stay replicated), or a rank that
      does not fit its rule.
  """
  sizes = mesh_sizes(mesh)
  kv_split = kv_heads_sharded(config, mesh)
  rule = next((r for pattern, r in _RULES if re.search(pattern, name)), None)
  if rule is None:
    raise ValueError(f"no partition rule for param {name!r} (shape {tuple(shape)}); known patterns: "
                     f"{[p for p, _ in _RULES]}")
  stacked = len(shape) >= 1 and "layers/" in name
  lead = (None,) if stacked else ()
  if rule == "embedding":
    spec = ("tensor", "fsdp")
  elif rule == "lm_head":
    spec = ("fsdp", "tensor")
  elif rule == "column":
    spec = lead + ("fsdp", "tensor")
  elif rule == "column_bias":
    spec = lead + ("tensor",)
  elif rule == "kv_column":
    spec = lead + ("fsdp", "tensor" if kv_split else None)
  elif rule == "kv_column_bias":
    spec = lead + ("tensor" if kv_split else None,)
  elif rule == "row":
    spec = lead + ("tensor", "fsdp")
  else:
    spec = (None,) * len(shape)
  if len(spec) != len(shape):
    raise ValueError(f"param {name!r} has shape {tuple(shape)} but rule {rule!r} expects rank {len(spec)}")
  # Soft fallback (documented): a dimension the axis does not divide (e.g. an odd vocabulary) is replicated.
  spec = tuple(a if _fits(d, a, sizes) else None for d, a in zip(shape, spec))
  return P(*spec)


def _shape_of(x):
  if isinstance(x, tuple) and all(isinstance(d, (int, np.integer)) for d in x):
    return x
  return tuple(x.shape)


def _is_shape_leaf(x):
  return isinstance(x, tuple) and all(isinstance(d, (int, np.integer)) for d in x)


def param_specs(config, params_or_shapes, mesh: Mesh):
  """A pytree of ``PartitionSpec`` matching ``params_or_shapes`` (arrays, ShapeDtypeStructs or shape tuples).

  Validates the mesh against the config first (``validate_mesh_for_config``).
  """
  validate_mesh_for_config(config, mesh)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: param_partition_spec(path_str(path), _shape_of(x), config, mesh), params_or_shapes,
      is_leaf=_is_shape_leaf)


def param_shardings(config, params_or_shapes, mesh: Mesh):
  """A pytree of ``NamedSharding(mesh, spec)`` matching the params (see ``param_specs``).

  Use as jit in/out shardings, with ``jax.device_put(params, shardings)``, or as ``load_pretrained``'s
  ``shardings=`` to read a checkpoint straight into its shards.
  """
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), param_specs(config, params_or_shapes, mesh),
                                is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
  """The fully replicated sharding on ``mesh``."""
  return NamedSharding(mesh, P())


def follow_params_shardings(tree, params, params_shardings, mesh: Mesh):
  """Shardings for a pytree whose sub-trees mirror the params (optimiser state, gradients, EMA params...).

  A leaf whose key path ENDS with a param's key path and has that param's shape gets the param's sharding
  (optax keeps moments as params-shaped sub-trees, e.g. ``[1][0].mu['policy']['layers']...``); every other
  leaf (step counts, scalars) is replicated. Works for any optax chain, no optimiser object needed.

  Args:
    tree: the pytree (arrays or ``jax.ShapeDtypeStruct``, e.g. ``jax.eval_shape(optimizer.init, params)``).
    params: the params (arrays / ShapeDtypeStructs / shape tuples) the shardings belong to.
    params_shardings: pytree of ``NamedSharding`` matching ``params``.
    mesh: the mesh (for the replicated fallback).
  """
  table = {}
  shapes = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_shape_leaf)[0]
  shards = jax.tree_util.tree_leaves(params_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  if len(shapes) != len(shards):
    raise ValueError(f"params has {len(shapes)} leaves but params_shardings has {len(shards)}")
  for (path, x), sh in zip(shapes, shards):
    table[tuple(_key_name(k) for k in path)] = (_shape_of(x), sh)
  rep = replicated(mesh)

  def pick(path, leaf):
    names = tuple(_key_name(k) for k in path)
    for start in range(len(names)):
      hit = table.get(names[start:])
      if hit is not None and hit[0] == tuple(leaf.shape):
        return hit[1]
    return rep

  return jax.tree_util.tree_map_with_path(pick, tree)


def train_state_shardings(config, state, mesh: Mesh):
  """Shardings of a ``training.state.TrainState`` (or its ``jax.eval_shape``): params by the rules,
  optimiser state following the params, reference params like the policy, scalars / rng replicated."""
  params_sh = param_shardings(config, state.params, mesh)
  rep = replicated(mesh)
  ref = None if state.ref_params is None else param_shardings(config, state.ref_params, mesh)
  controllers = getattr(state, "controllers", None)
  return state.replace(
      step=rep, rng=rep, data_position=rep, params=params_sh,
      opt_state=follow_params_shardings(state.opt_state, state.params, params_sh, mesh), ref_params=ref,
      controllers=None if controllers is None else jax.tree_util.tree_map(lambda _: rep, controllers))


# ----------------------------------------------------------------------------------------------------------
# Batches and the KV cache.


def batch_spec(ndim: int) -> P:
  """``P(("data", "fsdp"), None, ...)``: the leading (batch) dimension split over data × fsdp."""
  if ndim < 1:
    return P()
  return P(BATCH_AXES, *([None] * (ndim - 1)))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """``NamedSharding`` splitting the leading dimension of an ``ndim``-array over data × fsdp."""
  return NamedSharding(mesh, batch_spec(ndim))


def batch_shardings(batch, mesh: Mesh):
  """Shardings for a dict/pytree of batch arrays (leading dim = rows; scalars replicated).

  Raises:
    ValueError: a leading dimension not divisible by data × fsdp (names the leaf).
  """
  div = batch_divisor(mesh)

  def one(path, x):
    shape = _shape_of(x)
    if len(shape) and shape[0] % div:
      raise ValueError(f"batch leaf {path_str(path)!r} has {shape[0]} rows, not divisible by "
                       f"data × fsdp = {div}")
    return batch_sharding(mesh, len(shape))

  return jax.tree_util.tree_map_with_path(one, batch, is_leaf=_is_shape_leaf)


def shard_batch(batch, mesh: Mesh):
  """Places a host batch (numpy / jax arrays, the same full batch on every process) on ``mesh``.

  Single process: ``jax.device_put`` with ``batch_shardings``. Several processes: each device's rows are
  taken from the (identical) global batch, via ``jax.make_array_from_callback``. When every process holds
  only its own rows, use ``host_local_to_global`` instead.
  """
  return device_put_global(batch, batch_shardings(batch, mesh))


def device_put_global(tree, shardings):
  """Places a pytree whose full value every process holds onto (possibly multi-process) ``shardings``.

  Single process: ``jax.device_put``. Several processes: each addressable shard is cut from the host value
  with ``jax.make_array_from_callback`` (no cross-host traffic).
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def put(x, sh):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

  return jax.tree_util.tree_map(put, tree, shardings)


def process_batch_slice(global_batch_size: int, process_index: Optional[int] = None,
                        process_count: Optional[int] = None) -> slice:
  """The rows ``[i·B/n, (i+1)·B/n)`` of a global batch that process i loads (per-process data loading).

  Raises:
    ValueError: when ``global_batch_size`` is not divisible by the process count.
  """
  i = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch_size % n:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the process count {n}")
  per = global_batch_size // n
  return slice(i * per, (i + 1) * per)


def host_local_to_global(local_batch, mesh: Mesh):
  """Assembles global arrays from each process's own rows (``process_batch_slice`` of the global batch).

  Uses ``jax.make_array_from_process_local_data``: the global batch has ``process_count ×`` the local rows,
  split over data × fsdp; the mesh must give each process a contiguous block of rows (``make_mesh`` does).
  """
  n = jax.process_count()

  def one(x):
    x = np.asarray(x)
    sh = batch_sharding(mesh, x.ndim)
    global_shape = (x.shape[0] * n,) + x.shape[1:] if x.ndim else ()
    return jax.make_array_from_process_local_data(sh, x, global_shape)

  return jax.tree_util.tree_map(one, local_batch)


def kv_cache_specs(config, mesh: Mesh):
  """``KVCache`` of PartitionSpecs: k/v [L, B, K, S, hd] → P(None, (data, fsdp), tensor | None, None, None),
  mask [B, S] → P((data, fsdp), None), end → P(). KV heads are split along ``tensor`` only when K % tensor
  == 0 (otherwise replicated, like the k/v projections)."""
  from ngrpo_jax.models import qwen2  # pylint: disable=g-import-not-at-top
  kv = P(None, BATCH_AXES, "tensor" if kv_heads_sharded(config, mesh) else None, None, None)
  return qwen2.KVCache(k=kv, v=kv, mask=P(BATCH_AXES, None), end=P())


def kv_cache_shardings(config, mesh: Mesh, batch_size: Optional[int] = None):
  """``KVCache`` of NamedShardings (see ``kv_cache_specs``); checks ``batch_size`` against data × fsdp."""
  if batch_size is not None and batch_size % batch_divisor(mesh):
    raise ValueError(f"KV cache batch_size={batch_size} is not divisible by data × fsdp = {batch_divisor(mesh)}")
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), kv_cache_specs(config, mesh),
                                is_leaf=lambda x: isinstance(x, P))


def shard_activations(x: jax.Array, mesh: Mesh, *dims) -> jax.Array:
  """``with_sharding_constraint`` on an activation: ``x`` [B, ...] with batch over (data, fsdp) and the
  remaining dims named by ``dims`` (e.g. ``shard_activations(h, mesh, None, None)`` for [B, T, D]).

  For use inside jitted code that wants to pin an intermediate's layout; the Qwen2 forward works without it.
  """
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(BATCH_AXES, *dims)))


# ----------------------------------------------------------------------------------------------------------
# Multi-host.


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Where this process sits in a multi-host run (resolved from arguments or environment)."""
  coordinator_address: Optional[str]
  num_processes: int
  process_id: int


_ENV = {"coordinator_address": ("NGRPO_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS"),
        "num_processes": ("NGRPO_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
        "process_id": ("NGRPO_PROCESS_ID", "JAX_PROCESS_ID")}


def _from_env(name, environ):
  for var in _ENV[name]:
    if environ.get(var):
      return environ[var]
  return None


def resolve_distributed_config(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                               process_id: Optional[int] = None,
                               environ: Optional[Mapping[str, str]] = None) -> DistributedConfig:
  """Arguments (e.g. absl flags) win; missing ones come from ``NGRPO_COORDINATOR_ADDRESS`` /
  ``NGRPO_NUM_PROCESSES`` / ``NGRPO_PROCESS_ID`` (or the ``JAX_*`` equivalents).

  Raises:
    ValueError: several processes without a coordinator address or process id, a process id out of range,
      or non-integer counts.
  """
  environ = os.environ if environ is None else environ
  coordinator_address = coordinator_address or _from_env("coordinator_address", environ)
  num_processes = num_processes if num_processes is not None else _from_env("num_processes", environ)
  process_id = process_id if process_id is not None else _from_env("process_id", environ)
  try:
    num_processes = 1 if num_processes is None else int(num_processes)
    process_id = None if process_id is None else int(process_id)
  except ValueError as e:
    raise ValueError(f"num_processes and process_id must be integers: {e}") from e
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if num_processes > 1:
    if not coordinator_address:
      raise ValueError(f"num_processes={num_processes} needs a coordinator_address (host:port), e.g. from "
                       "--coordinator_address or NGRPO_COORDINATOR_ADDRESS")
    if process_id is None:
      raise ValueError("num_processes > 1 needs process_id (flag or NGRPO_PROCESS_ID)")
  process_id = 0 if process_id is None else process_id
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
  return DistributedConfig(coordinator_address, num_processes, process_id)


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, *, initialization_timeout: int = 300,
                           local_device_ids: Optional[Sequence[int]] = None) -> DistributedConfig:
  """Calls ``jax.distributed.initialize`` for a multi-process run (no-op for a single process).

  Must run before any other JAX computation. On CPU the cross-process collectives are gloo (JAX's default
  ``jax_cpu_collectives_implementation``). Returns the resolved ``DistributedConfig``.
  """
  cfg = resolve_distributed_config(coordinator_address, num_processes, process_id)
  if cfg.num_processes > 1:
    kwargs = {}
    if local_device_ids is not None:
      kwargs["local_device_ids"] = list(local_device_ids)
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address, num_processes=cfg.num_processes,
                               process_id=cfg.process_id, initialization_timeout=initialization_timeout,
                               **kwargs)
  return cfg


# Messages of the errors a process sees when another process of a jax.distributed run has died: the gloo CPU
# collectives lose their TCP peer, the coordination service misses its heartbeats.
_PEER_FAILURE_MARKERS = ("Gloo", "Connection closed by peer", "heartbeat timeout", "tasks are unhealthy",
                         "Connection reset by peer")


def is_peer_failure(error: BaseException) -> bool:
  """Whether ``error`` is a multi-process run's report that another process died (a failed collective or
  coordination-service error while ``jax.process_count() > 1``), as opposed to a failure of this process."""
  return jax.process_count() > 1 and isinstance(error, (jax.errors.JaxRuntimeError, RuntimeError)) and any(
      m in str(error) for m in _PEER_FAILURE_MARKERS)


def is_main_process() -> bool:
  """True on process 0 — the only one that logs, writes metrics and exports files."""
  return jax.process_index() == 0


def gather_to_host(tree):
  """Full numpy copies of (possibly multi-process sharded) arrays on every process (for checks / export)."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree_util.tree_map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), tree)


def abstract_with_shardings(tree, shardings):
  """``jax.ShapeDtypeStruct`` leaves carrying ``shardings`` — a restore target for orbax or an input for
  ``jax.eval_shape`` / ``jit(...).lower``, with no allocation."""
  return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def per_device_bytes(tree, shardings) -> int:
  """Bytes one device holds for ``tree`` (arrays or ShapeDtypeStructs) split by ``shardings`` (the largest
  shard when a dimension does not split evenly)."""
  total = 0
  for x, s in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(
      shardings, is_leaf=lambda v: isinstance(v, jax.sharding.Sharding))):
    shard = s.shard_shape(tuple(x.shape))
    total += int(np.prod(shard, dtype=np.int64)) * jnp.dtype(x.dtype).itemsize
  return total


def load_pretrained_sharded(path, mesh: Mesh, *, dtype=None, compute_dtype=None):
  """Loads a Hugging Face Qwen2 checkpoint straight into its shards on ``mesh``: (config, params).

  Reads config.json, derives ``param_shardings`` from the config's param shapes, and hands them to
  ``models.load_pretrained(shardings=...)``, which assembles every param with ``jax.make_array_from_callback``
  — each device reads only its slice of the safetensors file, so no full host copy of a param is placed
  on one device.
  """
  from ngrpo_jax.models import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.models import qwen2  # pylint: disable=g-import-not-at-top
  param_dtype = jnp.float32 if dtype is None else dtype
  config = hf_checkpoint.load_config(path, dtype=compute_dtype or param_dtype, param_dtype=param_dtype)
  shardings = param_shardings(config, qwen2.param_shapes(config), mesh)
  return hf_checkpoint.load_pretrained(path, dtype=dtype, compute_dtype=compute_dtype, shardings=shardings)
