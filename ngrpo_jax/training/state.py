"""Training state and optimiser: one explicit pytree, nothing hidden.

``TrainState`` holds everything a resumed run needs to continue bit-identically: the trainable params
(``{"policy": ..., "value": ...}``; ``"value"`` only with a critic), the optax state, the update counter,
the PRNG key (raw ``uint32[2]`` so it checkpoints as a plain array), the data position (prompts consumed)
and the frozen reference policy (``None`` when no KL term is used).

With LoRA (``lora_config`` set, ``models.lora``): ``params = {"lora": adapters, "value": ...}`` are the only
trained (and optimiser-held) params, and ``ref_params`` is the frozen base model — both the weights the
adapters sit on and the KL reference, one copy. :func:`policy_params` gives the policy's full weights either
way (base + s·A·B merged with LoRA), made once per policy update for the sampler, evaluation and export.
"""
import dataclasses
import functools
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from ngrpo_jax.models import lora as lora_lib


@flax.struct.dataclass
class TrainState:
  """The RL trainer state (a pytree).

  Attributes:
    step: int32[] number of completed ``train_step`` calls (rollout batches).
    params: ``{"policy": model params, "value": value-head params (critic only)}``, float32 masters; with
      LoRA ``{"lora": adapter params (``models.lora``), "value": ...}`` (the base model is ``ref_params``).
    opt_state: optax state of the optimiser over ``params``.
    rng: uint32[2] PRNG key; split once per step by the loop.
    data_position: int32[] number of prompts drawn from the prompt stream so far.
    ref_params: frozen reference policy params (``None`` without KL); with LoRA the frozen base model
      (always present: the adapters sit on it, and it is the KL reference).
    controllers: the adaptive coefficients an algorithm keeps across steps (``None`` when it has none), e.g.
      ``{"kl_coef": f32[]}`` (KL in the reward) and ``{"entropy_coef": f32[], "entropy_coef_applied": f32[]}``
      (adaptive entropy bonus); updated by the RL step (``training.step``), read by the train step.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  data_position: jax.Array
  ref_params: Any = None
  controllers: Any = None
  lora_config: Optional[lora_lib.LoRAConfig] = flax.struct.field(pytree_node=False, default=None)
    # static: the adapters' rank / scale / dropout / targets when training LoRA, else None.


def policy_params(state: TrainState):
  """The policy's full weights: ``params["policy"]``, or with LoRA the base with the adapters merged in
  (``lora.merge_params``: W + s·A·B; jitted). Make it once per policy update and pass it to the sampler, the
  scorer, evaluation and export."""
  if state.lora_config is None:
    return state.params["policy"]
  return _merge(state.ref_params, state.params["lora"], state.lora_config)


@functools.partial(jax.jit, static_argnums=2)
def _merge(base, adapters, lora_config):
  return lora_lib.merge_params(base, adapters, lora_config)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with warm-up / decay and global-norm clipping.

  Attributes:
    learning_rate: peak learning rate (``None``: the algorithm's own ``learning_rate``).
    warmup_steps: linear warm-up from 0 over this many optimiser steps.
    decay: ``"constant"`` (paper), ``"cosine"`` or ``"linear"`` to ``end_lr_ratio * peak`` at ``total_steps``.
    total_steps: optimiser steps for the decay (ignored by ``"constant"``).
    end_lr_ratio: final learning rate as a fraction of the peak.
    weight_decay: AdamW decoupled weight decay (paper 0.01).
    b1, b2, eps: Adam moments and epsilon.
    max_grad_norm: global-norm clip (paper 1.0; ``None`` disables).
  """
  learning_rate: Optional[float] = None
  warmup_steps: int = 0
  decay: str = "constant"
  total_steps: int = 1
  end_lr_ratio: float = 0.0
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: Optional[float] = 1.0

  def __post_init__(self):
    if self.decay not in ("constant", "cosine", "linear"):
      raise ValueError(f"decay must be 'constant', 'cosine' or 'linear', got {self.decay!r}")
    if self.warmup_steps < 0 or self.total_steps < 1:
      raise ValueError(f"warmup_steps must be >= 0 and total_steps >= 1, got {self.warmup_steps}, "
                       f"{self.total_steps}")
    if self.learning_rate is not None and self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.max_grad_norm is not None and self.max_grad_norm <= 0:
      raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


def learning_rate_schedule(cfg: OptimConfig, peak_lr: float) -> optax.Schedule:
  """lr(s) = peak · min(1, s / warmup) then constant / cosine / linear decay to ``end_lr_ratio · peak``."""
  end = peak_lr * cfg.end_lr_ratio
  decay_steps = max(cfg.total_steps - cfg.warmup_steps, 1)
  if cfg.decay == "constant":
    main = optax.constant_schedule(peak_lr)
  elif cfg.decay == "cosine":
    main = optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=cfg.end_lr_ratio)
  else:
    main = optax.linear_schedule(peak_lr, end, decay_steps)
  if cfg.warmup_steps == 0:
    return main
  warm = optax.linear_schedule(0.0, peak_lr, cfg.warmup_steps)
  return optax.join_schedules([warm, main], [cfg.warmup_steps])


def make_optimizer(cfg: OptimConfig, peak_lr: float) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``optax.chain(clip_by_global_norm, adamw(schedule))`` and the schedule (for logging the lr)."""
  schedule = learning_rate_schedule(cfg, peak_lr)
  parts = []
  if cfg.max_grad_norm is not None:
    parts.append(optax.clip_by_global_norm(cfg.max_grad_norm))
  parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  return optax.chain(*parts), schedule


def create_train_state(policy_params, optimizer: optax.GradientTransformation, rng, *,
                       value_params=None, keep_reference: bool = False, controllers=None,
                       lora_params=None, lora_config: Optional[lora_lib.LoRAConfig] = None) -> TrainState:
  """A fresh state: float32 master params, optimiser initialised, step and data position 0.

  Args:
    policy_params: the policy's params pytree (e.g. the warm-started model).
    optimizer: from :func:`make_optimizer`.
    rng: a ``jax.random.PRNGKey`` (raw uint32[2]) or an int seed.
    value_params: value-head params for a critic (PPO), else None.
    keep_reference: keep a frozen copy of ``policy_params`` as the KL reference.
    controllers: initial controller coefficients (``algorithms.Algorithm.initial_controllers()``) or None.
    lora_params, lora_config: train LoRA adapters (``lora.init_lora_params``) on the frozen ``policy_params``
      instead of the full model: ``params["lora"]`` holds the adapters (the optimiser state covers only them)
      and ``ref_params`` the base (kept whatever ``keep_reference`` says).

  The params are copied (``train_step`` donates its state), so the caller's arrays stay valid.
  """
  if isinstance(rng, int):
    rng = jax.random.PRNGKey(rng)
  # Copies: ``train_step`` donates the state, which must not delete the caller's arrays.
  if (lora_params is None) != (lora_config is None):
    raise ValueError("create_train_state needs both lora_params and lora_config (or neither)")
  if lora_config is not None:
    params = {"lora": jax.tree_util.tree_map(jnp.array, lora_params)}
  else:
    params = {"policy": jax.tree_util.tree_map(jnp.array, policy_params)}
  if value_params is not None:
    params["value"] = jax.tree_util.tree_map(jnp.array, value_params)
  keep_reference = keep_reference or lora_config is not None
  ref = jax.tree_util.tree_map(jnp.array, policy_params) if keep_reference else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                    rng=jnp.asarray(rng, jnp.uint32), data_position=jnp.zeros((), jnp.int32), ref_params=ref,
                    controllers=None if not controllers else {k: jnp.asarray(v, jnp.float32)
                                                              for k, v in sorted(controllers.items())},
                    lora_config=lora_config)
