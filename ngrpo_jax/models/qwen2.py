"""The Qwen2 / Qwen2.5 / Qwen2.5-Math and Qwen3 (dense) decoder as pure JAX functions over a params pytree.

Reading order: configuration, parameter initialisation, RMSNorm, rotary embedding, grouped-query attention,
SwiGLU MLP, decoder layer, model (``hidden_states``), LM head (``lm_logits``), ``forward``, KV cache, value head.

Architecture (Qwen2 technical report, https://arxiv.org/abs/2407.10671; transformers' ``modeling_qwen2.py``):

    h_0 = E[tokens]
    a_l = h_{l-1} + Attn_l(RMSNorm(h_{l-1}))        (RoPE on q/k, GQA, biases on q/k/v, none on o)
    h_l = a_l + W_down(silu(W_gate x) * W_up x),     x = RMSNorm(a_l)
    logits = RMSNorm(h_L) @ W_head                    (W_head = E^T when embeddings are tied)

Qwen3 (dense; Qwen3 technical report, https://arxiv.org/abs/2505.09388; transformers' ``modeling_qwen3.py``) is
the same network with three differences, selected by ``config.model_type == "qwen3"``:

    q_h = RMSNorm_q(W_q x)_h,  k_h = RMSNorm_k(W_k x)_h   per-head RMSNorm over head_dim, BEFORE RoPE
    no q/k/v biases (``attention_bias=False``; with ``attention_bias=True`` q/k/v AND o carry biases)
    head_dim is its own hyperparameter (Qwen3-4B: hidden 2560, 32 heads, head_dim 128 ≠ 2560 / 32)

Parameters are a nested dict. Decoder layers are stacked along a leading ``[num_layers]`` axis and run with
``jax.lax.scan`` (one compiled layer body, fast compiles). Dense kernels use the Flax ``[in, out]`` layout::

  {"embed_tokens": {"embedding": [V, D]},
   "layers": {"input_layernorm": {"scale": [L, D]},
              "self_attn": {"q_proj": {"kernel": [L, D, H*hd], "bias": [L, H*hd]},
                            "k_proj": {"kernel": [L, D, K*hd], "bias": [L, K*hd]},
                            "v_proj": {"kernel": [L, D, K*hd], "bias": [L, K*hd]},
                            "o_proj": {"kernel": [L, H*hd, D]}},
              "post_attention_layernorm": {"scale": [L, D]},
              "mlp": {"gate_proj": {"kernel": [L, D, F]}, "up_proj": {"kernel": [L, D, F]},
                      "down_proj": {"kernel": [L, F, D]}}},
   "norm": {"scale": [D]},
   "lm_head": {"kernel": [D, V]}}          # absent when tie_word_embeddings

Qwen3 has no q/k/v ``bias`` leaves (unless ``attention_bias``, which adds ``o_proj.bias [L, D]`` too) and two
more leaves under ``self_attn``, named as transformers names them: ``"q_norm": {"scale": [L, hd]}`` and
``"k_norm": {"scale": [L, hd]}``. Everything else (cache, scan / unrolled layers, remat, dtypes, sharding, the
log-prob VJP) is shared by both families.

``config.param_dtype`` is the storage dtype of the params; ``config.dtype`` the compute dtype (params are cast
to it at use; RMSNorm statistics, attention softmax and the returned logits are float32).
"""
import dataclasses
import math
from typing import Any, Optional

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

# HF config keys this port reads; everything else in a config.json is either checked below or irrelevant to
# the forward computation (e.g. use_cache, initializer_range, torch_dtype, transformers_version).
_REQUIRED_HF_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads")

# The model families of this one implementation: model_type → the transformers architecture name.
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# Mixture-of-experts keys (Qwen2-MoE / Qwen3-MoE config.json): a true value means a sparse MLP, which this
# dense implementation does not have.
_MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size",
             "decoder_sparse_step", "mlp_only_layers", "num_local_experts", "n_routed_experts")


def _canonical_dtype(value, name):
  try:
    return jnp.dtype(value)
  except TypeError as e:
    raise TypeError(f"{name} must be a dtype (e.g. jnp.float32 or 'bfloat16'), got {value!r}") from e


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Qwen2Config:
  """Qwen2 / Qwen3 hyperparameters with Hugging Face names, plus the JAX-side dtypes.

  One config class for both families (one implementation): ``model_type`` selects Qwen3's per-head q/k
  RMSNorm and its bias default.

  Attributes:
    vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads:
      sizes as in HF ``config.json``.
    head_dim: per-head size; ``hidden_size // num_attention_heads`` when None (Qwen3 checkpoints give it).
    model_type: ``"qwen2"`` (default; Qwen2 / Qwen2.5 / Qwen2.5-Math) or ``"qwen3"`` (Qwen3 dense).
    attention_bias: biases on the q/k/v projections (Qwen3 with True: on o too). None = the family's
      default: True for qwen2 (which has no other option), False for qwen3.
    rms_norm_eps: epsilon of RMSNorm (1e-6 for Qwen2.5).
    rope_theta: RoPE base (1e6 for Qwen2.5, 1e4 for Qwen2.5-Math-7B).
    max_position_embeddings: kept for the HF round trip (RoPE itself has no table).
    tie_word_embeddings: LM head shares the embedding matrix.
    bos_token_id, eos_token_id, pad_token_id: special ids (eos may be an int or a tuple of ints).
    initializer_range: std of the normal init of ``init_params``.
    dtype: compute dtype (default float32; bfloat16 for fast sampling).
    param_dtype: storage dtype of params (default float32).
    remat: rematerialise each decoder layer in the backward pass (``jax.checkpoint`` on the scan body).

  The config is hashable and registered as a static pytree (no leaves), so it can be passed to jitted
  functions either as a static argument or as an ordinary argument.
  """
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  num_key_value_heads: Optional[int] = None
  head_dim: Optional[int] = None
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  max_position_embeddings: int = 32768
  tie_word_embeddings: bool = False
  bos_token_id: Optional[int] = None
  eos_token_id: Any = None
  pad_token_id: Optional[int] = None
  initializer_range: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  model_type: str = "qwen2"
  attention_bias: Optional[bool] = None

  def __post_init__(self):
    if self.model_type not in ARCHITECTURES:
      raise ValueError(f"model_type must be one of {sorted(ARCHITECTURES)}, got {self.model_type!r}")
    if self.attention_bias is None:
      object.__setattr__(self, "attention_bias", self.model_type == "qwen2")
    if not isinstance(self.attention_bias, (bool, np.bool_)):
      raise ValueError(f"attention_bias must be a bool or None, got {self.attention_bias!r}")
    object.__setattr__(self, "attention_bias", bool(self.attention_bias))
    if self.model_type == "qwen2" and not self.attention_bias:
      raise ValueError("attention_bias=False is not supported for model_type='qwen2': Qwen2 has q/k/v biases "
                       "(use model_type='qwen3' for a bias-free attention)")
    for name in _REQUIRED_HF_KEYS:
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Qwen2Config.{name} must be a positive int, got {value!r}")
    if self.num_key_value_heads is None:
      object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
    if self.head_dim is None:
      if self.hidden_size % self.num_attention_heads:
        raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                         f"num_attention_heads={self.num_attention_heads}; give head_dim explicitly")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                       f"num_key_value_heads={self.num_key_value_heads}")
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    object.__setattr__(self, "dtype", _canonical_dtype(self.dtype, "dtype"))
    object.__setattr__(self, "param_dtype", _canonical_dtype(self.param_dtype, "param_dtype"))

  @property
  def qk_norm(self) -> bool:
    """Per-head RMSNorm on queries and keys before RoPE (Qwen3)."""
    return self.model_type == "qwen3"

  @property
  def o_bias(self) -> bool:
    """A bias on the output projection (Qwen3 with ``attention_bias``; never in Qwen2)."""
    return self.model_type == "qwen3" and self.attention_bias

  @property
  def eos_token_ids(self) -> tuple:
    """``eos_token_id`` as a (possibly empty) tuple of ints."""
    if self.eos_token_id is None:
      return ()
    if isinstance(self.eos_token_id, (tuple, list)):
      return tuple(int(t) for t in self.eos_token_id)
    return (int(self.eos_token_id),)

  @classmethod
  def from_hf_dict(cls, d: dict, *, dtype=jnp.float32, param_dtype=jnp.float32) -> "Qwen2Config":
    """Builds a config from a Hugging Face ``config.json`` dict of a Qwen2 or Qwen3 (dense) model.

    Accepts both the transformers 4.x layout (``rope_theta``, ``rope_scaling`` at top level) and the 5.x
    layout (``rope_parameters = {"rope_type": ..., "rope_theta": ...}``). The family comes from
    ``model_type`` (``"qwen2"`` / ``"qwen3"``) or, without it, from ``architectures``.

    Raises:
      ValueError: unknown architecture / model_type, a missing required key (named), or an option this
        port does not implement, naming the config key: sliding-window attention (``use_sliding_window``,
        ``layer_types``), non-default RoPE (``rope_scaling`` / ``rope_parameters``), mixture-of-experts keys
        (``num_experts``...), an activation other than silu (``hidden_act``), ``attention_dropout``,
        ``use_mrope``, ``attention_bias=false`` for Qwen2.
    """
    if not isinstance(d, dict):
      raise TypeError(f"config must be a dict, got {type(d).__name__}")
    model_type = d.get("model_type")
    architectures = d.get("architectures") or []
    by_arch = {arch: mt for mt, arch in ARCHITECTURES.items()}
    if model_type is None and architectures and architectures[0] in by_arch:
      model_type = by_arch[architectures[0]]
    if model_type not in ARCHITECTURES:
      raise ValueError(f"unknown architecture: model_type={model_type!r}, architectures={architectures!r}; "
                       f"supported: model_type {sorted(ARCHITECTURES)} ({', '.join(ARCHITECTURES.values())})")
    for arch in architectures:
      if arch != ARCHITECTURES[model_type]:
        raise ValueError(f"unsupported architecture {arch!r} in config 'architectures' for model_type "
                         f"{model_type!r}; expected {ARCHITECTURES[model_type]}")
    missing = [k for k in _REQUIRED_HF_KEYS if d.get(k) is None]
    if missing:
      raise ValueError(f"config.json is missing required key(s): {', '.join(missing)}")
    for key in _MOE_KEYS:
      if d.get(key):
        raise ValueError(f"unsupported config key {key}={d[key]!r}: mixture-of-experts layers are not "
                         "implemented (only dense Qwen2 / Qwen3)")
    act = d.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"unsupported hidden_act={act!r}: only 'silu' (SwiGLU) is implemented")
    if d.get("use_sliding_window", False):
      raise ValueError("use_sliding_window=true is not supported (sliding-window attention is not implemented)")
    layer_types = d.get("layer_types")
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
      raise ValueError(f"unsupported layer_types {sorted(set(layer_types))}: only 'full_attention' is implemented")
    if d.get("attention_dropout", 0.0):
      raise ValueError(f"attention_dropout={d['attention_dropout']} is not supported (must be 0)")
    if d.get("use_mrope", False):
      raise ValueError("use_mrope=true (multimodal RoPE) is not supported")
    attention_bias = d.get("attention_bias")
    if model_type == "qwen2" and attention_bias is False:
      raise ValueError("attention_bias=false is not supported: Qwen2 has q/k/v biases")
    rope_theta = d.get("rope_theta")
    for key in ("rope_scaling", "rope_parameters"):
      rope = d.get(key)
      if rope is None:
        continue
      if not isinstance(rope, dict):
        raise ValueError(f"config key {key!r} must be a dict or null, got {rope!r}")
      rope_type = rope.get("rope_type", rope.get("type", "default"))
      if rope_type != "default":
        raise ValueError(f"unsupported RoPE type {rope_type!r} in config key {key!r}: only default RoPE "
                         "is implemented")
      extra = set(rope) - {"rope_type", "type", "rope_theta"}
      if extra:
        raise ValueError(f"unsupported RoPE options {sorted(extra)} in config key {key!r}")
      if "rope_theta" in rope:
        if rope_theta is not None and float(rope_theta) != float(rope["rope_theta"]):
          raise ValueError(f"conflicting rope_theta: {rope_theta} vs {key}.rope_theta={rope['rope_theta']}")
        rope_theta = rope["rope_theta"]
    eos = d.get("eos_token_id")
    return cls(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        intermediate_size=int(d["intermediate_size"]),
        num_hidden_layers=int(d["num_hidden_layers"]),
        num_attention_heads=int(d["num_attention_heads"]),
        num_key_value_heads=(int(d["num_key_value_heads"]) if d.get("num_key_value_heads") is not None
                             else None),
        head_dim=int(d["head_dim"]) if d.get("head_dim") is not None else None,
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope_theta if rope_theta is not None else 10000.0),
        max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
        tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=d.get("pad_token_id"),
        initializer_range=float(d.get("initializer_range", 0.02)),
        dtype=dtype,
        param_dtype=param_dtype,
        model_type=model_type,
        attention_bias=None if attention_bias is None else bool(attention_bias),
    )

  def to_hf_dict(self, torch_dtype: Optional[str] = None) -> dict:
    """The Hugging Face ``config.json`` dict (transformers 4.x/5.x readable) of this family."""
    eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
    d = {
        "architectures": [ARCHITECTURES[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_hidden_layers,
        "num_attention_heads": self.num_attention_heads,
        "num_key_value_heads": self.num_key_value_heads,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "initializer_range": self.initializer_range,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": None,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": self.pad_token_id,
        "use_cache": True,
        "torch_dtype": torch_dtype or str(self.param_dtype),
    }
    if self.model_type == "qwen3":
      d.update(head_dim=self.head_dim, attention_bias=self.attention_bias, sliding_window=None,
               max_window_layers=self.num_hidden_layers)
    elif self.head_dim != self.hidden_size // self.num_attention_heads:
      d["head_dim"] = self.head_dim
    return d


# ----------------------------------------------------------------------------------------------------------
# Parameters.


def param_shapes(config: Qwen2Config) -> dict:
  """The params pytree as nested dicts of shape tuples (see the module docstring for the layout)."""
  L, D, F, V = config.num_hidden_layers, config.hidden_size, config.intermediate_size, config.vocab_size
  q_dim = config.num_attention_heads * config.head_dim
  kv_dim = config.num_key_value_heads * config.head_dim
  attn = {
      "q_proj": {"kernel": (L, D, q_dim)},
      "k_proj": {"kernel": (L, D, kv_dim)},
      "v_proj": {"kernel": (L, D, kv_dim)},
      "o_proj": {"kernel": (L, q_dim, D)},
  }
  if config.attention_bias:
    attn["q_proj"]["bias"] = (L, q_dim)
    attn["k_proj"]["bias"] = (L, kv_dim)
    attn["v_proj"]["bias"] = (L, kv_dim)
  if config.o_bias:
    attn["o_proj"]["bias"] = (L, D)
  if config.qk_norm:
    attn["q_norm"] = {"scale": (L, config.head_dim)}
    attn["k_norm"] = {"scale": (L, config.head_dim)}
  shapes = {
      "embed_tokens": {"embedding": (V, D)},
      "layers": {
          "input_layernorm": {"scale": (L, D)},
          "self_attn": attn,
          "post_attention_layernorm": {"scale": (L, D)},
          "mlp": {
              "gate_proj": {"kernel": (L, D, F)},
              "up_proj": {"kernel": (L, D, F)},
              "down_proj": {"kernel": (L, F, D)},
          },
      },
      "norm": {"scale": (D,)},
  }
  if not config.tie_word_embeddings:
    shapes["lm_head"] = {"kernel": (D, V)}
  return shapes


def init_params(config: Qwen2Config, key: chex.PRNGKey) -> dict:
  """Random params: kernels and embeddings ~ N(0, initializer_range²), biases 0, norm scales 1.

  Matches transformers' ``Qwen2PreTrainedModel`` / ``Qwen3PreTrainedModel`` initialisation scheme. Returns arrays of
  ``config.param_dtype``. Works under ``jax.eval_shape`` (no weights materialised).
  """
  shapes = param_shapes(config)
  paths_and_shapes = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0]
  keys = jax.random.split(key, len(paths_and_shapes))
  leaves = []
  for (path, shape), k in zip(paths_and_shapes, keys):
    name = path[-1].key
    if name == "scale":
      leaves.append(jnp.ones(shape, config.param_dtype))
    elif name == "bias":
      leaves.append(jnp.zeros(shape, config.param_dtype))
    else:
      leaves.append((config.initializer_range * jax.random.normal(k, shape, jnp.float32)).astype(
          config.param_dtype))
  treedef = jax.tree_util.tree_structure(shapes, is_leaf=lambda x: isinstance(x, tuple))
  return jax.tree_util.tree_unflatten(treedef, leaves)


# ----------------------------------------------------------------------------------------------------------
# Building blocks.


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """RMSNorm: y = scale * x / sqrt(mean(x², -1) + eps), statistics in float32, result in x.dtype.

  Zhang & Sennrich 2019 (https://arxiv.org/abs/1910.07467). x: [..., D]; scale: [D].
  """
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return scale.astype(x.dtype) * normed.astype(x.dtype)


def rotary_cos_sin(positions: jax.Array, head_dim: int, theta: float, dtype) -> tuple:
  """RoPE tables for integer positions [B, T]: cos, sin of shape [B, T, head_dim] in ``dtype``.

  ω_i = θ^(-2i/d) for i < d/2; angle = position · ω, duplicated over both halves (the "rotate_half" layout
  of transformers; Su et al. 2021, https://arxiv.org/abs/2104.09864). Computed in float32.
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x·cos + rotate_half(x)·sin with rotate_half([x1, x2]) = [-x2, x1]. x: [B, T, N, hd]; cos/sin: [B, T, hd]."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def _dense(x, p, dtype):
  # The matmul runs on [N, in] with the leading dims flattened: the weight gradient is then a plain 2-D
  # xᵀ·dy, whereas a 3-D [B, T, in] operand makes XLA:CPU materialise a slow 3-D transpose of the
  # activations in the backward pass (slower train steps; measured in docs/benchmarks.md).
  # An adapter (``models.lora.ScaledLoRA``, a Flax ``nnx.LoRA`` module, itself a pytree) under ``p["lora"]``
  # adds its low-rank term to the projection: y = x W + b + adapter(x).
  x2 = x.reshape(-1, x.shape[-1])
  y = x2 @ p["kernel"].astype(dtype)
  if "bias" in p:
    y = y + p["bias"].astype(dtype)
  if "lora" in p:
    y = y + p["lora"](x2).astype(y.dtype)
  return y.reshape(x.shape[:-1] + y.shape[-1:])


def _attention(p, config, x, cos, sin, allowed, kv=None, layer=None, write_at=None):
  """Grouped-query attention for one layer (Qwen3: per-head q/k RMSNorm before RoPE).

  x: [B, T, D]; allowed: bool[B, T, S] (query t may attend key slot s); kv: None (keys are this call's
  tokens, S = T) or the STACKED cache (k, v), each [L, B, K, S, hd]: this call's keys/values are written
  into layer ``layer`` at slots [write_at, write_at + T) with one ``dynamic_update_slice`` per array (in
  place when the cache is carried through the layer scan and donated) and that layer's S slots are attended.
  Returns (out [B, T, D], the updated stacked (k, v) or None).
  """
  dtype = config.dtype
  B, T, _ = x.shape
  H, K, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
  q = _dense(x, p["q_proj"], dtype).reshape(B, T, H, hd)
  k = _dense(x, p["k_proj"], dtype).reshape(B, T, K, hd)
  v = _dense(x, p["v_proj"], dtype).reshape(B, T, K, hd)
  if config.qk_norm:  # Qwen3: RMSNorm of each head's query / key over head_dim, before RoPE.
    q = rms_norm(q, p["q_norm"]["scale"], config.rms_norm_eps)
    k = rms_norm(k, p["k_norm"]["scale"], config.rms_norm_eps)
  q = apply_rotary(q, cos, sin)
  k = apply_rotary(k, cos, sin).transpose(0, 2, 1, 3)  # [B, K, T, hd]
  v = v.transpose(0, 2, 1, 3)
  if kv is not None and layer is None:
    # This layer's own buffers (a per-layer cache): keys transposed [B, K, hd, S], values [B, K, S, hd],
    # attended directly (no slicing); the transposed keys make q·kᵀ a plain [G·T, hd] x [hd, S] matmul,
    # which XLA:CPU runs faster than contracting both minor dims (docs/benchmarks.md).
    cache_k, cache_v = kv
    cache_k = jax.lax.dynamic_update_slice(cache_k, k.transpose(0, 1, 3, 2).astype(cache_k.dtype),
                                           (0, 0, 0, write_at))
    cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, write_at, 0))
    kv = (cache_k, cache_v)
    k_t, v = cache_k.astype(dtype), cache_v.astype(dtype)
  elif kv is not None:
    cache_k, cache_v = kv
    at = (layer, 0, 0, write_at, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, k[None].astype(cache_k.dtype), at)
    cache_v = jax.lax.dynamic_update_slice(cache_v, v[None].astype(cache_v.dtype), at)
    kv = (cache_k, cache_v)
    k = jax.lax.dynamic_index_in_dim(cache_k, layer, 0, keepdims=False).astype(dtype)  # [B, K, S, hd]
    v = jax.lax.dynamic_index_in_dim(cache_v, layer, 0, keepdims=False).astype(dtype)
  # Queries grouped per KV head as [B, K, G·T, hd]: both matmuls are then plain batched matmuls over (b, k)
  # whose outputs need no transpose (this matters for the one-token decode step over a long cache).
  G = H // K
  q = q.reshape(B, T, K, G, hd).transpose(0, 2, 3, 1, 4).reshape(B, K, G * T, hd)
  if kv is not None and layer is None:
    scores = jnp.einsum("bkqd,bkds->bkqs", q, k_t, preferred_element_type=jnp.float32) / math.sqrt(hd)
  else:
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k, preferred_element_type=jnp.float32) / math.sqrt(hd)
  scores = scores.reshape(B, K, G, T, -1)
  scores = jnp.where(allowed[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(dtype).reshape(B, K, G * T, -1)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, v).reshape(B, K, G, T, hd)
  out = out.transpose(0, 3, 1, 2, 4).reshape(B, T, H * hd)
  return _dense(out, p["o_proj"], dtype), kv


def _mlp(p, x, dtype):
  """SwiGLU: W_down(silu(W_gate x) ⊙ W_up x) (Shazeer 2020, https://arxiv.org/abs/2002.05202)."""
  return _dense(jax.nn.silu(_dense(x, p["gate_proj"], dtype)) * _dense(x, p["up_proj"], dtype), p["down_proj"],
                dtype)


def _decoder_layer(p, config, h, cos, sin, allowed, kv=None, layer=None, write_at=None):
  """One pre-norm decoder layer (module docstring); kv / layer / write_at as in ``_attention``."""
  attn, kv = _attention(p["self_attn"], config, rms_norm(h, p["input_layernorm"]["scale"], config.rms_norm_eps),
                        cos, sin, allowed, kv, layer, write_at)
  h = h + attn
  h = h + _mlp(p["mlp"], rms_norm(h, p["post_attention_layernorm"]["scale"], config.rms_norm_eps), config.dtype)
  return h, kv


# ----------------------------------------------------------------------------------------------------------
# KV cache.


@flax.struct.dataclass
class KVCache:
  """Preallocated key/value cache.

  Attributes:
    k, v: [num_layers, batch, num_kv_heads, max_len, head_dim] rotated keys / values per slot.
    mask: bool[batch, max_len], True where the slot holds a real (non-padding) token.
    end: int32[] number of slots written so far; the next forward writes slots [end, end + T).
  """
  k: jax.Array
  v: jax.Array
  mask: jax.Array
  end: jax.Array

  @property
  def max_len(self) -> int:
    return self.mask.shape[1]

  @property
  def per_layer(self) -> bool:
    """True when k / v are tuples of L per-layer arrays (``unstack_cache``; keys transposed)."""
    return isinstance(self.k, (tuple, list))


def unstack_cache(cache: KVCache) -> KVCache:
  """The same cache with k / v as tuples of L per-layer arrays: k[l] = keys of layer l TRANSPOSED to
  [B, K, hd, S] (for a plain q·kᵀ matmul), v[l] = values [B, K, S, hd].

  A decode loop that carries per-layer buffers attends each layer's keys in place, whereas the stacked
  [L, ...] layout makes XLA:CPU copy the layer's slice before every attention matmul. ``stack_cache`` undoes it.
  """
  if cache.per_layer:
    return cache
  return cache.replace(k=tuple(jnp.swapaxes(x, -1, -2) for x in cache.k), v=tuple(x for x in cache.v))


def stack_cache(cache: KVCache) -> KVCache:
  """Inverse of ``unstack_cache``: k / v as stacked [L, B, K, S, hd] arrays."""
  if not cache.per_layer:
    return cache
  return cache.replace(k=jnp.stack([jnp.swapaxes(x, -1, -2) for x in cache.k]), v=jnp.stack(cache.v))


def unstack_layers(params: dict) -> dict:
  """params with ``params["layers"]`` as a tuple of L per-layer dicts (unrolled layers: the decode step, or
  ``hidden_states(unroll_layers=True)``; slicing the stacked weights once outside a decode loop avoids a
  per-step copy of each layer's weights). One ``split`` per stacked weight: its transpose is a single
  concatenate of the per-layer gradients (static slices x[i] would transpose to L zero-padded full-size
  buffers summed together)."""
  layers = params["layers"]
  if isinstance(layers, (tuple, list)):
    return params
  num = jax.tree.leaves(layers)[0].shape[0]
  parts = jax.tree.map(lambda x: jnp.split(x, num, axis=0), layers)
  per_layer = tuple(jax.tree.map(lambda x, i=i: x[i][0], parts, is_leaf=lambda x: isinstance(x, list))
                    for i in range(num))
  return {**params, "layers": per_layer}


def init_cache(config: Qwen2Config, batch_size: int, max_len: int, dtype=None) -> KVCache:
  """An empty cache (zeros, mask all False, end 0); ``dtype`` defaults to ``config.dtype``."""
  if batch_size <= 0 or max_len <= 0:
    raise ValueError(f"batch_size and max_len must be positive, got {batch_size}, {max_len}")
  dtype = config.dtype if dtype is None else jnp.dtype(dtype)
  shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 mask=jnp.zeros((batch_size, max_len), bool), end=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------------------------------------
# Model.


def hidden_states(params: dict, config: Qwen2Config, tokens: jax.Array, *, attention_mask=None, positions=None,
                  cache: Optional[KVCache] = None, unroll_layers: bool = False):
  """Final-normed hidden states of the decoder.

  Args:
    params: the params pytree (see module docstring).
    config: a ``Qwen2Config`` (static under jit).
    tokens: int32[B, T] token ids.
    attention_mask: [B, T] 1/True for real tokens, 0/False for padding (default all real).
    positions: int32[B, T] RoPE positions. Default without a cache: max(cumsum(mask) - 1, 0) (left padding
      works); with a cache: (real tokens already in the cache) + max(cumsum(mask) - 1, 0).
    cache: optional ``KVCache``; this call's tokens are written to slots [end, end + T) and the query in
      slot s attends slot j iff mask[b, j] and j <= s. The caller must keep end + T <= max_len (XLA would
      clamp the write otherwise). The stacked cache is carried through the layer scan and only the new
      slots are written, so under ``jax.jit(..., donate_argnames="cache")`` it is updated in place (no copy
      of the cache per call; this is the sampler's decode step).
    unroll_layers: static; with a cache, run the layers as a Python loop (static layer index) instead of a
      ``lax.scan``. Same result; for small models XLA:CPU's per-iteration loop overhead and the per-layer
      dynamic slices of the stacked weights dominate a one-token decode step, and unrolling removes both
      (at the cost of compiling L layer bodies). Ignored without a cache (training keeps the scan).

  Returns:
    (hidden [B, T, D] in ``config.dtype``, the updated cache or None).
  """
  tokens = jnp.asarray(tokens)
  chex.assert_rank(tokens, 2)
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"tokens must be an integer array, got {tokens.dtype}")
  B, T = tokens.shape
  mask = jnp.ones((B, T), bool) if attention_mask is None else jnp.asarray(attention_mask).astype(bool)
  chex.assert_shape(mask, (B, T))
  if positions is None:
    positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    if cache is not None:
      positions = positions + jnp.sum(cache.mask, axis=1, dtype=jnp.int32)[:, None]
  positions = jnp.asarray(positions)
  chex.assert_shape(positions, (B, T))

  dtype = config.dtype
  h = params["embed_tokens"]["embedding"][tokens].astype(dtype)
  cos, sin = rotary_cos_sin(positions, config.head_dim, config.rope_theta, dtype)

  if cache is None:
    causal = jnp.tril(jnp.ones((T, T), bool))
    allowed = causal[None] & mask[:, None, :]
    write_at = None
  else:
    if cache.mask.shape[0] != B:
      raise ValueError(f"cache batch size {cache.mask.shape[0]} != tokens batch size {B}")
    if T > cache.max_len:
      raise ValueError(f"T={T} tokens do not fit a cache of max_len={cache.max_len}")
    write_at = cache.end
    new_mask = jax.lax.dynamic_update_slice(cache.mask, mask, (0, write_at))
    query_slot = write_at + jnp.arange(T)
    allowed = new_mask[:, None, :] & (jnp.arange(cache.max_len)[None, None, :] <= query_slot[None, :, None])

  if cache is None:
    def body(h, layer_params):
      return _decoder_layer(layer_params, config, h, cos, sin, allowed)
    carry = h
    xs = params["layers"]
  else:
    # The stacked cache is CARRIED through the scan and each layer writes only its new slots: under jit
    # with the cache donated XLA updates it in place (scanning it as xs -> ys would build a fresh [L, ...]
    # buffer and copy every layer's slice each call).
    def body(carry, xs):
      h, cache_k, cache_v = carry
      layer_params, layer = xs
      h, (cache_k, cache_v) = _decoder_layer(layer_params, config, h, cos, sin, allowed, (cache_k, cache_v),
                                             layer, write_at)
      return (h, cache_k, cache_v), None
    carry = (h, cache.k, cache.v)
    xs = (params["layers"], jnp.arange(config.num_hidden_layers))

  if config.remat:
    body = jax.checkpoint(body)
  per_layer_params = isinstance(params["layers"], (tuple, list))
  if cache is not None and (unroll_layers or per_layer_params or cache.per_layer):
    h, cache_k, cache_v = carry
    if cache.per_layer:
      cache_k, cache_v = list(cache_k), list(cache_v)
    for i in range(config.num_hidden_layers):
      lp = params["layers"][i] if per_layer_params else jax.tree.map(lambda x, i=i: x[i], params["layers"])
      if cache.per_layer:
        h, (cache_k[i], cache_v[i]) = _decoder_layer(lp, config, h, cos, sin, allowed, (cache_k[i], cache_v[i]),
                                                     None, write_at)
      else:
        h, (cache_k, cache_v) = _decoder_layer(lp, config, h, cos, sin, allowed, (cache_k, cache_v), i, write_at)
    carry = (h, tuple(cache_k) if cache.per_layer else cache_k, tuple(cache_v) if cache.per_layer else cache_v)
  elif per_layer_params:
    raise ValueError("per-layer params (unstack_layers) are only supported with a cache")
  elif unroll_layers:
    for layer_params in unstack_layers(params)["layers"]:
      carry, _ = body(carry, layer_params)
  else:
    carry, _ = jax.lax.scan(body, carry, xs)
  if cache is None:
    h = carry
  else:
    h, cache_k, cache_v = carry
    cache = KVCache(k=cache_k, v=cache_v, mask=new_mask, end=cache.end + T)
  h = rms_norm(h, params["norm"]["scale"], config.rms_norm_eps)
  return h, cache


def lm_logits(params: dict, config: Qwen2Config, hidden: jax.Array) -> jax.Array:
  """logits = hidden @ W_head (W_head = embeddingᵀ when tied), computed in ``config.dtype``, returned f32.

  hidden: [..., D] → logits f32[..., V].
  """
  dtype = config.dtype
  if config.tie_word_embeddings:
    logits = hidden.astype(dtype) @ params["embed_tokens"]["embedding"].astype(dtype).T
  else:
    logits = hidden.astype(dtype) @ params["lm_head"]["kernel"].astype(dtype)
  return logits.astype(jnp.float32)


def forward(params: dict, config: Qwen2Config, tokens: jax.Array, *, attention_mask=None, positions=None,
            cache: Optional[KVCache] = None, unroll_layers: bool = False):
  """Logits of the causal LM: (logits f32[B, T, V], cache). Arguments as in ``hidden_states``."""
  h, cache = hidden_states(params, config, tokens, attention_mask=attention_mask, positions=positions,
                           cache=cache, unroll_layers=unroll_layers)
  return lm_logits(params, config, h), cache


# ----------------------------------------------------------------------------------------------------------
# Value head (PPO critic).


def init_value_head(config: Qwen2Config, key: chex.PRNGKey) -> dict:
  """Scalar value head params: {"kernel": [D], "bias": []}, kernel ~ N(0, initializer_range²), bias 0."""
  kernel = config.initializer_range * jax.random.normal(key, (config.hidden_size,), jnp.float32)
  return {"kernel": kernel.astype(config.param_dtype), "bias": jnp.zeros((), config.param_dtype)}


def value(value_params: dict, hidden: jax.Array) -> jax.Array:
  """V(s_t) = hidden_t · w + b in float32. hidden: [B, T, D] → f32[B, T]."""
  chex.assert_rank(hidden, 3)
  return (hidden.astype(jnp.float32) @ value_params["kernel"].astype(jnp.float32)
          + value_params["bias"].astype(jnp.float32))
