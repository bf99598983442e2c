"""LoRA adapters from Flax (``nnx.LoRA`` / ``nnx.LoRAParam``) on the Qwen projections, merged weights, and the
PEFT adapter format in and out.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) on a projection y = x W + b (Flax layout W [in, out])::

  y = x W + b + s · dropout(x) A B,      A [in, r], B [r, out], s = alpha / r        (peft's scaling)

The low-rank term is Flax's ``nnx.LoRA`` (``x @ lora_a @ lora_b``; ``lora_a`` initialised he-uniform, ``lora_b``
zeros, so a fresh adapter leaves the model unchanged) wrapped by :class:`ScaledLoRA`, which adds peft's
``alpha / r`` scaling and input dropout (``nnx.Dropout``). Adapters are stacked over the layers like the base
params ([L, in, r], [L, r, out], made with ``nnx.vmap``) and walked by the same layer scan: the functional
``qwen2._dense`` calls the adapter module it finds under ``"lora"`` next to a kernel.

Three views of the same adapters:

* module: :func:`attach` adds a ``lora`` child to every targeted ``modules.Linear`` of a
  ``modules.QwenForCausalLM`` (train with ``nnx.LoRAParam`` as the filter, e.g. ``nnx.Optimizer(model, tx,
  wrt=nnx.LoRAParam)``);
* pytree: ``lora_params`` = ``{"layers": {"self_attn": {"q_proj": {"lora": {"lora_a": [L, D, r], "lora_b":
  [L, r, H·hd]}}, ...}}}`` — exactly ``nnx.state(model, nnx.LoRAParam).to_pure_dict()``; the trainer's
  trainable params. :func:`with_adapters` hands them to the functional forward, :func:`merge_params` folds them
  into the base weights (W + s·A B, once per policy update, for the sampler and the export);
* files: :func:`save_peft_adapter` / :func:`load_peft_adapter` (``adapter_config.json`` +
  ``adapter_model.safetensors`` with peft's names ``base_model.model.model.layers.N.self_attn.q_proj.lora_A
  .weight`` [r, in] and ``lora_B.weight`` [out, r]), loadable with ``peft.PeftModel.from_pretrained`` onto the
  transformers model (tested: same logits).
"""
import dataclasses
import functools
import json
import os
import pathlib
import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ngrpo_jax.models import hf_checkpoint

# The projections an adapter can target (transformers' module names; peft's ``target_modules``).
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """Which projections get an adapter, and its size.

  Attributes:
    rank: r, the adapter's rank (>= 1).
    alpha: the scaling numerator; the adapter's output is multiplied by ``alpha / rank`` (peft's
      ``lora_alpha``; default: ``rank``, i.e. scale 1).
    dropout: dropout rate on the adapter's input during training (peft's ``lora_dropout``; default 0).
    targets: names of the projections to adapt, a subset of ``TARGETS`` (default: all seven).
  """
  rank: int
  alpha: Optional[float] = None
  dropout: float = 0.0
  targets: Sequence[str] = TARGETS

  def __post_init__(self):
    if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
      raise ValueError(f"LoRA rank must be an int >= 1, got {self.rank!r}")
    alpha = float(self.rank) if self.alpha is None else self.alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or alpha <= 0:
      raise ValueError(f"LoRA alpha must be a number > 0, got {self.alpha!r}")
    object.__setattr__(self, "alpha", float(alpha))
    if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
    targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
    if not targets:
      raise ValueError(f"LoRA targets must name at least one of {TARGETS}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
      raise ValueError(f"unknown LoRA target(s) {unknown}; valid targets are {TARGETS}")
    object.__setattr__(self, "targets", tuple(t for t in TARGETS if t in targets))   # canonical order

  @property
  def scale(self) -> float:
    """s = alpha / rank."""
    return self.alpha / self.rank


class LoRADropoutKey(nnx.Variable):
  """Per-layer PRNG keys (uint32[L, 2]) of an adapter's dropout for one forward pass (never trained)."""


class ScaledLoRA(nnx.LoRA):
  """Flax's ``nnx.LoRA`` with peft's scaling and input dropout: ``adapter(x) = scale · dropout(x) A B``.

  Args:
    in_features, rank, out_features: A is [in, rank], B is [rank, out].
    scale: the output scale (``alpha / rank``).
    dropout: input dropout rate; applied only when ``dropout_key`` is set (a :class:`LoRADropoutKey`),
      i.e. in training forward passes (:func:`with_adapters` with ``dropout_rng``).
    param_dtype: dtype of A and B (float32 masters).
    rngs: ``nnx.Rngs`` for A's initialisation (he-uniform; B is zero).
  """

  def __init__(self, in_features: int, rank: int, out_features: int, *, scale: float, dropout: float = 0.0,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(in_features, rank, out_features, param_dtype=param_dtype, rngs=rngs)
    self.scale = float(scale)
    self.dropout = nnx.Dropout(float(dropout))
    self.dropout_key = nnx.data(None)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., in] → scale · dropout(x) A B  [..., out]."""
    if self.dropout_key is not None and self.dropout.rate > 0:
      x = self.dropout(x, deterministic=False, rngs=self.dropout_key[...])
    return super().__call__(x) * self.scale


# ----------------------------------------------------------------------------------------------------------
# Targets and creation.


def target_paths(params: Mapping, lora_config: LoRAConfig) -> list:
  """Key paths (tuples) of the targeted projections in a params pytree: every dict under ``params["layers"]``
  named like a target that holds a stacked ``kernel`` [L, in, out], in pytree order.

  Raises:
    ValueError: a target names no projection of the model.
  """
  found = []

  def walk(tree, path):
    for name, value in tree.items():
      if isinstance(value, Mapping):
        if name in lora_config.targets and "kernel" in value:
          found.append(path + (name,))
        else:
          walk(value, path + (name,))

  if "layers" not in params:
    raise ValueError("params have no 'layers' to put LoRA adapters on")
  walk(params["layers"], ("layers",))
  missing = sorted(set(lora_config.targets) - {p[-1] for p in found})
  if missing:
    raise ValueError(f"LoRA target(s) {missing} name no projection of this model")
  return found


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _stacked(num_layers: int, in_features: int, out_features: int, lora_config: LoRAConfig, rngs: nnx.Rngs,
             param_dtype=jnp.float32) -> ScaledLoRA:
  """A ScaledLoRA whose params are stacked [L, ...] (one independent initialisation per layer)."""

  @nnx.split_rngs(splits=num_layers)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def make(rngs):
    return ScaledLoRA(in_features, lora_config.rank, out_features, scale=lora_config.scale,
                      dropout=lora_config.dropout, param_dtype=param_dtype, rngs=rngs)

  return make(rngs)


def _kernel_dims(kernel) -> tuple:
  if len(kernel.shape) != 3:
    raise ValueError(f"LoRA needs stacked kernels [L, in, out], got shape {tuple(kernel.shape)}")
  return tuple(int(d) for d in kernel.shape)


def init_lora_params(params: Mapping, lora_config: LoRAConfig, key: jax.Array, *,
                     param_dtype=jnp.float32) -> dict:
  """Fresh adapters for the targeted projections of ``params``: A he-uniform, B = 0 (the model is unchanged).

  Returns the LoRA pytree (module docstring): ``{"layers": {..., "<proj>": {"lora": {"lora_a": [L, in, r],
  "lora_b": [L, r, out]}}}}``, ``param_dtype`` (default float32). Works under ``jax.eval_shape``.
  """
  out = {}
  for i, path in enumerate(target_paths(params, lora_config)):
    L, d_in, d_out = _kernel_dims(_get(params, path)["kernel"])
    module = _stacked(L, d_in, d_out, lora_config, nnx.Rngs(params=jax.random.fold_in(key, i)), param_dtype)
    _set(out, path + ("lora",), nnx.state(module, nnx.LoRAParam).to_pure_dict())
  return out


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


@functools.lru_cache(maxsize=None)
def _template(num_layers, in_features, out_features, lora_config: LoRAConfig):
  """The pytree structure of a stacked ScaledLoRA (abstract; no arrays made)."""
  abstract = nnx.eval_shape(lambda: _stacked(num_layers, in_features, out_features, lora_config, nnx.Rngs(0)))
  return jax.tree_util.tree_structure(abstract)


def _adapter(lora_a, lora_b, lora_config: LoRAConfig) -> ScaledLoRA:
  """The stacked ScaledLoRA module holding the arrays ``lora_a`` [L, in, r], ``lora_b`` [L, r, out]."""
  L, d_in, r = lora_a.shape
  if r != lora_config.rank or lora_b.shape[:2] != (L, r):
    raise ValueError(f"LoRA arrays of shapes {tuple(lora_a.shape)}, {tuple(lora_b.shape)} do not fit rank "
                     f"{lora_config.rank}")
  return jax.tree_util.tree_unflatten(_template(L, d_in, lora_b.shape[2], lora_config), [lora_a, lora_b])


def _pairs(lora_params: Mapping) -> list:
  """[(projection path, {"lora_a", "lora_b"})] of a LoRA pytree, in pytree order."""
  out = []

  def walk(tree, path):
    for name, value in tree.items():
      if name == "lora" and isinstance(value, Mapping) and "lora_a" in value:
        out.append((path, value))
      elif isinstance(value, Mapping):
        walk(value, path + (name,))

  walk(lora_params, ())
  return out


def with_adapters(params: Mapping, lora_params: Mapping, lora_config: LoRAConfig, *,
                  dropout_rng: Optional[jax.Array] = None) -> dict:
  """The functional params with each adapter attached: ``proj["lora"]`` = the stacked :class:`ScaledLoRA`
  module (a pytree), which ``qwen2._dense`` adds to the projection. Pure; use inside jit.

  Args:
    params: base params pytree.  lora_params: the LoRA pytree.  lora_config: scale, dropout.
    dropout_rng: a PRNG key: apply the adapters' input dropout (training); None: no dropout (scoring,
      evaluation, like peft's eval mode).
  """
  out = _copy_dicts(params)
  for i, (path, ab) in enumerate(_pairs(lora_params)):
    proj = _get(out, path)
    adapter = _adapter(ab["lora_a"], ab["lora_b"], lora_config)
    if dropout_rng is not None and lora_config.dropout > 0:
      L = ab["lora_a"].shape[0]
      adapter.dropout_key = LoRADropoutKey(jax.random.split(jax.random.fold_in(dropout_rng, i), L))
    proj["lora"] = adapter
  return out


def _copy_dicts(tree):
  return {k: _copy_dicts(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def merge_params(params: Mapping, lora_params: Mapping, lora_config: LoRAConfig) -> dict:
  """Base params with the adapters folded in: W' = W + s · A B per targeted kernel (computed in float32,
  stored in W's dtype). The sampler, evaluation and HF export read these (made once per policy update)."""
  out = _copy_dicts(params)
  for path, ab in _pairs(lora_params):
    proj = _get(out, path)
    delta = jnp.einsum("lir,lro->lio", ab["lora_a"].astype(jnp.float32), ab["lora_b"].astype(jnp.float32))
    proj["kernel"] = (proj["kernel"].astype(jnp.float32) + lora_config.scale * delta).astype(proj["kernel"].dtype)
  return out


# ----------------------------------------------------------------------------------------------------------
# The module view.


def attach(model: nnx.Module, lora_config: LoRAConfig, key: Optional[jax.Array] = None, *,
           lora_params: Optional[Mapping] = None) -> nnx.Module:
  """Adds a stacked :class:`ScaledLoRA` child ``lora`` to every targeted ``Linear`` of ``model`` (in place;
  returns the model). Fresh adapters from ``key`` (B = 0), or the given ``lora_params``."""
  from ngrpo_jax.models import modules  # pylint: disable=g-import-not-at-top  (modules does not import lora)
  base = modules.to_params(model)
  if lora_params is None:
    if key is None:
      raise ValueError("attach needs a key (fresh adapters) or lora_params")
    lora_params = init_lora_params(base, lora_config, key)
  for path, ab in _pairs(lora_params):
    target = model
    for k in path:
      target = getattr(target, k)
    adapter = _adapter(jnp.asarray(ab["lora_a"]), jnp.asarray(ab["lora_b"]), lora_config)
    target.lora = adapter
  return model


def lora_params_of(model: nnx.Module) -> dict:
  """The LoRA pytree of a module with adapters: ``nnx.state(model, nnx.LoRAParam).to_pure_dict()``."""
  return nnx.state(model, nnx.LoRAParam).to_pure_dict()


# ----------------------------------------------------------------------------------------------------------
# PEFT format.


def _peft_module(path: tuple, layer: int) -> str:
  """``("layers", "self_attn", "q_proj")``, 3 → ``model.layers.3.self_attn.q_proj`` (transformers' module)."""
  if path[0] != "layers":
    raise ValueError(f"adapter path {path} is not under 'layers'")
  return ".".join(("model", "layers", str(layer)) + tuple(path[1:]))


def peft_tensor_names(lora_params: Mapping) -> list:
  """The tensor names of the PEFT ``adapter_model.safetensors`` of a LoRA pytree, in writing order."""
  names = []
  for path, ab in _pairs(lora_params):
    for i in range(ab["lora_a"].shape[0]):
      module = _peft_module(path, i)
      names += [f"base_model.model.{module}.lora_A.weight", f"base_model.model.{module}.lora_B.weight"]
  return names


def save_peft_adapter(path, lora_params: Mapping, lora_config: LoRAConfig, *,
                      base_model_name_or_path: Optional[str] = None, dtype=np.float32) -> str:
  """Writes a PEFT LoRA adapter directory that ``peft.PeftModel.from_pretrained(hf_model, path)`` loads.

  Files: ``adapter_config.json`` (``peft_type`` LORA, ``task_type`` CAUSAL_LM, ``r``, ``lora_alpha``,
  ``lora_dropout``, ``target_modules``) and ``adapter_model.safetensors``: per layer N and projection,
  ``base_model.model.model.layers.N.<self_attn|mlp>.<proj>.lora_A.weight`` = A[N]ᵀ [r, in] and ``lora_B.weight``
  = B[N]ᵀ [out, r] (torch's [out, in] layout), in ``dtype`` (default float32). Returns the directory.
  """
  out_dir = pathlib.Path(path)
  out_dir.mkdir(parents=True, exist_ok=True)
  dtype = np.dtype(dtype)
  host = jax.device_get(lora_params)
  tensors = []
  for proj_path, ab in _pairs(host):
    a, b = np.asarray(ab["lora_a"]), np.asarray(ab["lora_b"])
    for i in range(a.shape[0]):
      module = _peft_module(proj_path, i)
      tensors.append((f"base_model.model.{module}.lora_A.weight", (a.shape[2], a.shape[1]), dtype,
                      lambda a=a, i=i: a[i].T.astype(dtype)))
      tensors.append((f"base_model.model.{module}.lora_B.weight", (b.shape[2], b.shape[1]), dtype,
                      lambda b=b, i=i: b[i].T.astype(dtype)))
  hf_checkpoint._write_safetensors(out_dir / ADAPTER_WEIGHTS, tensors)  # pylint: disable=protected-access
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora_config.rank, "lora_alpha": lora_config.alpha,
      "lora_dropout": lora_config.dropout, "target_modules": list(lora_config.targets), "bias": "none",
      "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
      "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
      "inference_mode": True, "base_model_name_or_path": base_model_name_or_path,
  }
  (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  return os.fspath(out_dir)


_PEFT_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$")


def load_peft_adapter(path, params: Optional[Mapping] = None) -> tuple:
  """Reads a PEFT LoRA adapter directory → ``(lora_params, LoRAConfig)`` (float32 arrays).

  Args:
    path: directory with ``adapter_config.json`` and ``adapter_model.safetensors``.
    params: optional base params; the adapters' shapes are then checked against their kernels.

  Raises:
    ValueError: not a LoRA adapter, an option this port does not implement (rsLoRA, DoRA, per-module
      rank / alpha patterns, bias training, ``modules_to_save``, ``fan_in_fan_out``, a subset of layers), a
      tensor of an unknown module, a missing layer, or shapes that do not fit ``params``.
  """
  in_dir = pathlib.Path(path)
  cfg = json.loads((in_dir / ADAPTER_CONFIG).read_text())
  if cfg.get("peft_type", "LORA") != "LORA":
    raise ValueError(f"{in_dir}: peft_type {cfg.get('peft_type')!r} is not LORA")
  for key, ok in (("use_rslora", lambda v: not v), ("use_dora", lambda v: not v),
                  ("rank_pattern", lambda v: not v), ("alpha_pattern", lambda v: not v),
                  ("bias", lambda v: v in (None, "none")), ("modules_to_save", lambda v: not v),
                  ("fan_in_fan_out", lambda v: not v), ("layers_to_transform", lambda v: v is None),
                  ("lora_bias", lambda v: not v)):
    if key in cfg and not ok(cfg[key]):
      raise ValueError(f"{in_dir}/{ADAPTER_CONFIG}: {key}={cfg[key]!r} is not supported")
  reader = hf_checkpoint._SafetensorsFile(in_dir / ADAPTER_WEIGHTS)  # pylint: disable=protected-access
  found = {}
  for name in reader.header:
    m = _PEFT_KEY.match(name)
    if m is None:
      raise ValueError(f"{in_dir}/{ADAPTER_WEIGHTS}: tensor {name!r} is not a LoRA A/B weight of a decoder "
                       "layer projection")
    layer, module, which = int(m.group(1)), m.group(2), m.group(3)
    proj = module.split(".")[-1]
    if proj not in TARGETS:
      raise ValueError(f"{in_dir}: adapter on module {module!r} (tensor {name!r}); supported targets: {TARGETS}")
    found.setdefault(("layers",) + tuple(module.split(".")), {}).setdefault(which, {})[layer] = name
  if not found:
    raise ValueError(f"{in_dir}/{ADAPTER_WEIGHTS} holds no LoRA tensors")
  rank = int(cfg["r"])
  lora_config = LoRAConfig(rank=rank, alpha=float(cfg.get("lora_alpha", 8)),
                           dropout=float(cfg.get("lora_dropout") or 0.0),
                           targets=tuple(sorted({p[-1] for p in found})))
  lora_params = {}
  for proj_path, ab in found.items():
    layers = sorted(ab.get("A", {}))
    if layers != list(range(len(layers))) or sorted(ab.get("B", {})) != layers:
      raise ValueError(f"{in_dir}: {'.'.join(proj_path)} has lora_A for layers {layers} and lora_B for "
                       f"{sorted(ab.get('B', {}))}; every layer 0..L-1 needs both")
    a = np.stack([np.asarray(reader.get(ab["A"][i]), np.float32).T for i in layers])     # [L, in, r]
    b = np.stack([np.asarray(reader.get(ab["B"][i]), np.float32).T for i in layers])     # [L, r, out]
    if a.shape[2] != rank or b.shape[1] != rank:
      raise ValueError(f"{in_dir}: {'.'.join(proj_path)} has rank {a.shape[2]}, the config says r={rank}")
    if params is not None:
      kernel = _get(params, proj_path)["kernel"]
      want = (kernel.shape[0], kernel.shape[1], kernel.shape[2])
      if (a.shape[0], a.shape[1], b.shape[2]) != want:
        raise ValueError(f"{in_dir}: {'.'.join(proj_path)} adapters are [L, in, out] = "
                         f"{(a.shape[0], a.shape[1], b.shape[2])} but the model's kernel is {want}")
    _set(lora_params, proj_path + ("lora",), {"lora_a": jnp.asarray(a), "lora_b": jnp.asarray(b)})
  return lora_params, lora_config


def num_lora_params(lora_params: Mapping) -> int:
  """Number of adapter parameters."""
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(lora_params))


def abstract_lora_params(params: Mapping, lora_config: LoRAConfig) -> Any:
  """The LoRA pytree as ``jax.ShapeDtypeStruct`` leaves (no arrays; for planning and checkpoint templates)."""
  return jax.eval_shape(lambda: init_lora_params(params, lora_config, jax.random.PRNGKey(0)))
