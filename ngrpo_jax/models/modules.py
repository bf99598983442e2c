"""The Qwen decoder as Flax NNX modules whose state IS the params pytree, with a pure functional view.

Reading order (transformers' names, Flax's parameter names)::

  QwenForCausalLM
    embed_tokens: Embed                      embedding [V, D]
    layers: DecoderLayers                    every leaf stacked on a leading [L] axis (the layer scan walks it)
      input_layernorm: RMSNorm               scale [L, D]
      self_attn: Attention
        q_proj, k_proj, v_proj, o_proj: Linear   kernel [L, in, out] (+ bias [L, out])
      post_attention_layernorm: RMSNorm      scale [L, D]
      mlp: MLP
        gate_proj, up_proj, down_proj: Linear
    norm: RMSNorm                            scale [D]
    lm_head: Linear                          kernel [D, V] (untied only)

The modules are built from a params pytree (``qwen2.init_params`` / ``hf_checkpoint.load_pretrained``) by
walking it: every array becomes an ``nnx.Param`` under its own name, every sub-dict a submodule (the class
named by ``MODULE_CLASSES``, a plain :class:`ParamGroup` for a name it does not know), so leaves a model
family adds (e.g. Qwen3's ``q_norm`` / ``k_norm``) are picked up without code here. Hence::

  nnx.state(model, nnx.Param).to_pure_dict() == params          (exactly; tested)

and ``model(tokens)`` runs the functional ``qwen2.forward`` on that state, so the module and the functional
path give bitwise-equal results. Everything above the model stays a pure function of a pytree:

  graphdef, state = functional_view(model)          # nnx.split, once
  logits, _ = jax.jit(apply)(graphdef, state, tokens)  # == qwen2.forward(to_params(state), config, tokens)

The sampler, the log-probs and the train step keep taking the params pytree (``to_params(state)``);
``from_params`` goes back. A LoRA adapter (``models.lora.attach``) is a child ``lora`` of a ``Linear`` (a
``models.lora.ScaledLoRA``, i.e. Flax's ``nnx.LoRA``); its params are ``nnx.LoRAParam`` and
``functional_params`` hands the adapter module to the functional ``_dense`` (which adds ``lora(x)``).

Sharding: ``from_params(..., mesh=mesh)`` annotates every param with the ``out_sharding`` the rules table
(``sharding.param_partition_spec``) gives it and places it there, so ``nnx.get_partition_spec`` /
``nnx.get_named_sharding`` of the state agree with ``sharding.param_shardings`` of the params (tested).
"""
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from ngrpo_jax import sharding as sharding_lib
from ngrpo_jax.models import qwen2


class ParamGroup(nnx.Module):
  """A group of parameters named as in the params pytree: arrays become ``nnx.Param`` attributes, sub-dicts
  submodules (the class ``MODULE_CLASSES`` names, else ``ParamGroup``), in the pytree's order.

  Args:
    tree: the sub-dict of the params pytree this module holds.
    path: its key path in the pytree (for sharding annotations and error messages).
    annotate: optional ``(path, array) -> dict`` of ``nnx.Param`` metadata (e.g. ``out_sharding``).
  """

  def __init__(self, tree: Mapping, *, path: tuple = (), annotate=None):
    if not isinstance(tree, Mapping):
      raise TypeError(f"params at {'/'.join(path) or '<root>'} must be a dict, got {type(tree).__name__}")
    for name, value in tree.items():
      if isinstance(value, Mapping):
        cls = MODULE_CLASSES.get(name, ParamGroup)
        setattr(self, name, cls(value, path=path + (name,), annotate=annotate))
      elif hasattr(value, "shape") and hasattr(value, "dtype"):
        meta = annotate(path + (name,), value) if annotate is not None else {}
        setattr(self, name, nnx.Param(value, **meta))
      else:
        raise TypeError(f"params leaf {'/'.join(path + (name,))} must be an array, got {type(value).__name__}")

  def functional_params(self) -> dict:
    """This module's params as the nested dict the functional code reads: arrays under their names; a LoRA
    adapter (``models.lora.ScaledLoRA``) as the module itself under ``"lora"`` (``qwen2._dense`` calls it)."""
    out = {}
    for name, value in vars(self).items():
      if isinstance(value, nnx.Param) and not isinstance(value, nnx.LoRAParam):
        out[name] = value[...]
      elif isinstance(value, ParamGroup):
        out[name] = value.functional_params()
      elif isinstance(value, nnx.Module):      # an adapter: the functional path calls it
        out[name] = value
    return out


class Embed(ParamGroup):
  """Token embedding: ``embedding`` [V, D]; ``embed(tokens int[...]) -> [..., D]``."""

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return self.embedding[...][tokens]


class RMSNorm(ParamGroup):
  """RMSNorm with ``scale`` [D] (stacked: [L, D]); ``norm(x [..., D], eps) -> [..., D]`` (``qwen2.rms_norm``)
  for an unstacked (per-layer) scale."""

  def __call__(self, x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return qwen2.rms_norm(x, self.scale[...], eps)


class Linear(ParamGroup):
  """A dense projection: ``kernel`` [in, out] (Flax layout; stacked [L, in, out]), optional ``bias``, optional
  LoRA adapter ``lora``. ``linear(x [..., in], dtype) -> [..., out]`` runs ``qwen2._dense`` for unstacked
  weights."""

  def __call__(self, x: jax.Array, dtype=jnp.float32) -> jax.Array:
    return qwen2._dense(x, self.functional_params(), dtype)  # pylint: disable=protected-access


class Attention(ParamGroup):
  """Grouped-query self-attention: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` (and whatever else the
  family adds, e.g. Qwen3's ``q_norm`` / ``k_norm``)."""


class MLP(ParamGroup):
  """SwiGLU MLP: ``gate_proj``, ``up_proj``, ``down_proj``."""


class DecoderLayers(ParamGroup):
  """The L decoder layers, every param stacked on a leading [L] axis (``input_layernorm``, ``self_attn``,
  ``post_attention_layernorm``, ``mlp``); run by the functional layer scan."""


# Submodule class of a params sub-dict by its name (a name not listed becomes a plain ParamGroup).
MODULE_CLASSES = {
    "embed_tokens": Embed, "layers": DecoderLayers, "self_attn": Attention, "mlp": MLP,
    "input_layernorm": RMSNorm, "post_attention_layernorm": RMSNorm, "norm": RMSNorm,
    "q_norm": RMSNorm, "k_norm": RMSNorm,
    "q_proj": Linear, "k_proj": Linear, "v_proj": Linear, "o_proj": Linear,
    "gate_proj": Linear, "up_proj": Linear, "down_proj": Linear, "lm_head": Linear,
}


class QwenForCausalLM(ParamGroup):
  """The causal LM as an NNX module whose ``nnx.Param`` state is exactly the params pytree.

  Build it with :func:`from_params` (or :meth:`init`); call it like ``qwen2.forward``::

    model = modules.QwenForCausalLM.init(config, jax.random.PRNGKey(0))
    logits, cache = model(tokens, attention_mask=mask)        # f32[B, T, V]

  Attributes:
    config: the model config (static; ``qwen2.Qwen2Config`` or a family's config with the same fields).
  """

  def __init__(self, config, params: Mapping, *, mesh=None):
    annotate = None
    if mesh is not None:
      sharding_lib.validate_mesh_for_config(config, mesh)

      def annotate(path, value):
        spec = sharding_lib.param_partition_spec("/".join(path), value.shape, config, mesh)
        return {"out_sharding": tuple(spec), "mesh": mesh}
    super().__init__(params, annotate=annotate)
    self.config = config

  @classmethod
  def init(cls, config, key: jax.Array, *, mesh=None) -> "QwenForCausalLM":
    """A randomly initialised model (``qwen2.init_params``)."""
    return cls(config, qwen2.init_params(config, key), mesh=mesh)

  def hidden_states(self, tokens: jax.Array, **kwargs):
    """``qwen2.hidden_states`` on this module's params: (hidden [B, T, D], cache)."""
    return qwen2.hidden_states(self.functional_params(), self.config, tokens, **kwargs)

  def lm_logits(self, hidden: jax.Array) -> jax.Array:
    """``qwen2.lm_logits``: hidden [..., D] → logits f32[..., V]."""
    return qwen2.lm_logits(self.functional_params(), self.config, hidden)

  def __call__(self, tokens: jax.Array, *, attention_mask=None, positions=None, cache=None,
               unroll_layers: bool = False):
    """``qwen2.forward`` on this module's params: (logits f32[B, T, V], cache). Arguments as there."""
    return qwen2.forward(self.functional_params(), self.config, tokens, attention_mask=attention_mask,
                         positions=positions, cache=cache, unroll_layers=unroll_layers)


# ----------------------------------------------------------------------------------------------------------
# The functional view.


def from_params(config, params: Mapping, *, mesh=None) -> QwenForCausalLM:
  """The module holding ``params`` (the arrays are wrapped, not copied). With ``mesh``, every param carries
  the rules table's ``out_sharding`` and is placed with it (``sharding.param_partition_spec``)."""
  return QwenForCausalLM(config, params, mesh=mesh)


def functional_view(model: nnx.Module) -> tuple:
  """``(graphdef, state) = nnx.split(model)``: the static graph and the state pytree (``nnx.State``; leaves
  ``nnx.Param`` / ``nnx.LoRAParam`` holding arrays). Split once; pass ``state`` through jitted functions."""
  return nnx.split(model)


def to_params(model_or_state) -> dict:
  """The params pytree (nested dict of arrays) of a module or of its ``nnx.State`` (base params only; LoRA
  params are ``lora.lora_params``)."""
  state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
  return nnx.State(state).filter(_base_param).to_pure_dict()


def _base_param(path, value) -> bool:
  del path
  return isinstance(value, nnx.Param) and not isinstance(value, nnx.LoRAParam)


def merge(graphdef, state) -> nnx.Module:
  """``nnx.merge``: the module back from its functional view."""
  return nnx.merge(graphdef, state)


def apply(graphdef, state, tokens: jax.Array, **kwargs):
  """Pure: the module's forward from its functional view, ``merge(graphdef, state)(tokens, **kwargs)``
  (jit it with ``graphdef`` static or closed over). Returns (logits f32[B, T, V], cache)."""
  return nnx.merge(graphdef, state)(tokens, **kwargs)


def replace_params(state, params: Mapping) -> Any:
  """A state with the base params replaced by the pytree ``params`` (same structure), e.g. after an update
  made by the functional train step."""
  new = nnx.State(state)
  nnx.replace_by_pure_dict(new, _merge_dicts(new.to_pure_dict(), params))
  return new


def _merge_dicts(into: dict, update: Mapping) -> dict:
  out = dict(into)
  for k, v in update.items():
    out[k] = _merge_dicts(into[k], v) if isinstance(v, Mapping) and isinstance(into.get(k), dict) else v
  return out


def param_count(model_or_params, filter_=None) -> int:
  """Number of parameters of a module (optionally only those an ``nnx`` filter selects) or params pytree."""
  if isinstance(model_or_params, nnx.Module):
    state = nnx.state(model_or_params, filter_) if filter_ is not None else nnx.state(model_or_params)
    leaves = jax.tree_util.tree_leaves(state)
  else:
    leaves = jax.tree_util.tree_leaves(model_or_params)
  return sum(int(jnp.size(x)) for x in leaves)


def abstract_model(config, *, mesh: Optional[Any] = None) -> QwenForCausalLM:
  """The model with ``jax.ShapeDtypeStruct`` leaves (no weights allocated; ``nnx.eval_shape``)."""
  return nnx.eval_shape(lambda: QwenForCausalLM.init(config, jax.random.PRNGKey(0), mesh=mesh))
