"""The pure, jitted RL update: ``train_step(state, batch) -> (state, metrics)``.

One call consumes one rollout batch: ``ppo_epochs`` passes, each over ``num_minibatches`` shuffled
minibatches (one optimiser step each), each minibatch optionally split into ``num_microbatches`` for
gradient accumulation. Per minibatch the loss is the algorithm's objective, a weighted sum of terms
(``training.objective``), e.g.

  L(θ) = L_pg(θ) − c_H · H(π_θ) + β · KL(π_θ || π_ref) + c_V · L_V(φ)

Gradient accumulation is exact for every aggregation: every micro-batch's loss is normalised by the
whole minibatch's ``losses.batch_normalizer`` (tokens for a token mean, sequences for a sequence mean), so
the summed micro-batch gradients equal the full-minibatch gradient (tested).

The batch is ``training.batch.train_inputs`` of a scored batch (``training.batch`` documents the layout):
``tokens``, ``attention_mask``, ``loss_mask``, ``old_logp``, ``advantages`` and the entries the objective's
terms need (``ref_logp``; ``old_values`` and ``returns``); ``group_kind`` is read by diagnostics only.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from ngrpo_jax import losses
from ngrpo_jax import sharding
from ngrpo_jax.models import logprobs as logprobs_lib
from ngrpo_jax.models import lora as lora_lib
from ngrpo_jax.models import qwen2
from ngrpo_jax.training import algorithms as algorithms_lib
from ngrpo_jax.training import objective as objective_lib
from ngrpo_jax.training import state as state_lib

GROUP_KINDS = ("mixed", "all_correct", "all_wrong")


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """How one rollout batch is turned into optimiser steps.

  Attributes:
    ppo_epochs: passes over the rollout batch (paper: 1).
    num_minibatches: optimiser steps per epoch (paper: 4 = 1024 prompts / 256).
    num_microbatches: gradient-accumulation splits of each minibatch (exact, see module docstring).
    compute_dtype: ``"float32"`` or ``"bfloat16"``; with bfloat16 the float32 master params are cast for
      the forward / backward pass and gradients are applied to the float32 masters.
    remat: rematerialise each decoder layer in the backward pass (long responses).
    logprob_chunk_size: time chunk of the log-prob computation (no [B, T, V] float32 buffer; logits
      recomputed in the backward), or None: one chunk whose logits are kept (fastest when [B, T, V] float32
      fits in memory; see ``models.token_logprobs``).
    const_len: the constant length of Dr. GRPO's ``seq_mean_token_sum_norm`` (default: L - 1).
    unroll_layers: run the decoder layers as a Python loop instead of a ``lax.scan`` (``qwen2.hidden_states``):
      no stacked per-layer residual buffers to zero-fill and copy (faster train steps on XLA:CPU for small
      models, see docs/benchmarks.md); costs compile time for deep models.
  """
  ppo_epochs: int = 1
  num_minibatches: int = 1
  num_microbatches: int = 1
  compute_dtype: str = "float32"
  remat: bool = False
  logprob_chunk_size: Optional[int] = 128
  const_len: Optional[int] = None
  unroll_layers: bool = False

  def __post_init__(self):
    for f in ("ppo_epochs", "num_minibatches", "num_microbatches", "logprob_chunk_size"):
      if f == "logprob_chunk_size" and self.logprob_chunk_size is None:
        continue
      if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
        raise ValueError(f"{f} must be an int >= 1, got {getattr(self, f)!r}")
    if self.compute_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")


def _cast_floating(tree, dtype):
  return jax.tree_util.tree_map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def model_config_for(model_config, cfg: UpdateConfig):
  """The model config with the update's compute dtype and remat option applied (fields the config has)."""
  updates = {}
  names = {f.name for f in dataclasses.fields(model_config)}
  if "dtype" in names:
    updates["dtype"] = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  if cfg.remat:
    for name in ("remat", "gradient_checkpointing", "use_remat"):
      if name in names:
        updates[name] = True
        break
  return dataclasses.replace(model_config, **updates) if updates else model_config


def score_tokens(params, model_config, tokens, attention_mask, *, chunk_size: Optional[int] = 128,
                 value_params=None, with_entropy: bool = True, unroll_layers: bool = False):
  """Log-probs (and entropy, values) of ``tokens[:, 1:]`` given the prefix, at temperature 1.

  Args:
    params: policy params.  model_config: the model config.
    tokens: int32[B, L]; attention_mask: bool[B, L].
    chunk_size: time chunk for ``token_logprobs`` (None: unchunked).
    value_params: value-head params (optional) → values f32[B, L-1] of each prefix's last token.
    with_entropy: also return the policy entropy per target position.
    unroll_layers: see ``UpdateConfig.unroll_layers``.

  Returns:
    dict with ``logp`` f32[B, L-1], ``entropy`` f32[B, L-1] (if requested), ``values`` f32[B, L-1] (if a
    value head is given).
  """
  hidden, _ = qwen2.hidden_states(params, model_config, tokens[:, :-1],
                                  attention_mask=attention_mask[:, :-1], unroll_layers=unroll_layers)
  out = {}
  res = logprobs_lib.token_logprobs(params, model_config, hidden, tokens[:, 1:], chunk_size=chunk_size,
                                    return_entropy=with_entropy)
  if with_entropy:
    out["logp"], out["entropy"] = res
  else:
    out["logp"] = res
  if value_params is not None:
    out["values"] = qwen2.value(value_params, hidden.astype(jnp.float32))
  return out


def policy_for_loss(params, frozen=None, lora_config=None, dropout_rng=None):
  """The policy weights a loss differentiates: ``params["policy"]``, or with LoRA the frozen base ``frozen``
  with the adapters ``params["lora"]`` attached (``lora.with_adapters``; gradients reach only the adapters;
  input dropout when ``dropout_rng`` is given)."""
  if lora_config is None:
    return params["policy"]
  if frozen is None:
    raise ValueError("a LoRA loss needs the frozen base params (the train state's ref_params)")
  return lora_lib.with_adapters(frozen, params["lora"], lora_config, dropout_rng=dropout_rng)


def make_loss_fn(model_config, algo: algorithms_lib.Algorithm, cfg: UpdateConfig, seq_len: int,
                 lora_config: Optional[lora_lib.LoRAConfig] = None):
  """``loss_fn(params, micro_batch, normalizer, frozen=None) -> (loss, aux)``: the algorithm's objective on one
  micro-batch.

  The forward pass computes the model outputs the objective's terms need (``logp`` always, ``entropy`` and
  the value head's ``values`` when a term reads them). ``normalizer`` is ``losses.batch_normalizer`` of the
  whole minibatch, so micro-batch losses (and their gradients) sum exactly to the minibatch loss.
  With ``lora_config``, ``params["lora"]`` are adapters on the frozen base ``frozen`` (already in the compute
  dtype); their input dropout draws from the micro-batch's ``rng``.
  """
  objective = objective_lib.make_objective(algo.objective, algo.aggregation, cfg.const_len or (seq_len - 1))
  wants = objective_lib.needs(algo.objective)
  compute_dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  mcfg = model_config_for(model_config, cfg)

  def loss_fn(params, mb, normalizer, frozen=None):
    p = params if compute_dtype == jnp.float32 else _cast_floating(params, compute_dtype)
    dropout_rng = jax.random.fold_in(mb["rng"], 0x10A) if lora_config is not None and "rng" in mb else None
    policy = policy_for_loss(p, frozen, lora_config, dropout_rng)
    out = score_tokens(policy, mcfg, mb["tokens"], mb["attention_mask"], chunk_size=cfg.logprob_chunk_size,
                       value_params=p.get("value") if "values" in wants else None,
                       with_entropy="entropy" in wants, unroll_layers=cfg.unroll_layers)
    out = {k: v.astype(jnp.float32) for k, v in out.items()}
    return objective(out, mb, normalizer)

  return loss_fn


def _split(tree, n):
  return jax.tree_util.tree_map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), tree)


def _additive(name: str) -> bool:
  """Objective values add up over micro-batches (the minibatch normaliser); diagnostics are averaged."""
  return name == "loss" or name.startswith("loss/")


def make_train_step(model_config, algo: algorithms_lib.Algorithm, cfg: UpdateConfig,
                    optimizer: optax.GradientTransformation, schedule: Optional[optax.Schedule] = None, *,
                    jit: bool = True, mesh=None, state_shardings=None) -> Callable[[state_lib.TrainState, dict], tuple]:
  """Builds ``train_step(state, batch) -> (state, metrics)`` (pure; jitted unless ``jit=False``).

  Sharded (``mesh`` given): jitted with explicit ``in_shardings = (state_shardings, rows over data × fsdp)``
  and ``out_shardings = (state_shardings, replicated metrics)``, the state donated; ``state_shardings`` is
  ``sharding.train_state_shardings(model_config, state, mesh)`` and the batch should be placed with
  ``sharding.shard_batch``. GSPMD inserts the collectives; the result equals the single-device step.

  The batch's row count must be divisible by ``num_minibatches * num_microbatches``.  The minibatch
  shuffle uses a key folded from ``state.rng`` (the loop advances ``state.rng`` every step), so a step is a
  deterministic function of (state, batch).

  Each micro-batch the terms see also carries ``rng`` (a PRNG key of its own, from ``state.rng``) and the
  controllers' coefficients (``state.controllers``, e.g. ``entropy_coef_applied``); entries a term computes
  from the whole minibatch (``registry.objective_term(prepare=...)``) are added before the micro-batch split.

  Metrics (scalars, means over all optimiser steps of the call): ``loss``, ``loss/<term>`` for every term of
  the objective, the terms' diagnostics (``pg/clip_frac_pos`` ..., ``entropy``, ``kl_ref_mean``,
  ``value/...``), grad_norm (before clipping; also its max), learning_rate (at the first optimiser step).
  """

  def train_step(state: state_lib.TrainState, batch: dict):
    batch = {k: v for k, v in batch.items() if k != "group_kind"}
    provided = set(batch) | {"rng"} | set(state.controllers or {})
    missing = (objective_lib.needs(algo.objective) - set(objective_lib.MODEL_OUTPUTS)) - provided
    if missing:
      raise ValueError(f"the objective's terms need batch entries {sorted(missing)}, which the batch lacks "
                       f"(it has {sorted(batch)})")
    n_rows, seq_len = batch["tokens"].shape
    m, u = cfg.num_minibatches, cfg.num_microbatches
    if n_rows % (m * u):
      raise ValueError(f"batch rows ({n_rows}) must be divisible by num_minibatches * num_microbatches "
                       f"({m} * {u})")
    loss_fn = make_loss_fn(model_config, algo, cfg, seq_len, state.lora_config)
    if state.lora_config is not None:
      # LoRA: only the adapters (and a value head) are differentiated; the frozen base is cast once.
      frozen = state.ref_params if cfg.compute_dtype == "float32" else _cast_floating(state.ref_params, jnp.bfloat16)
      grad_fn = jax.value_and_grad(lambda p, mb, n: loss_fn(p, mb, n, frozen), has_aux=True)
    else:
      grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    shuffle_key = jax.random.fold_in(jnp.asarray(state.rng, jnp.uint32), 0x5EED)
    perms = [jax.random.permutation(jax.random.fold_in(shuffle_key, e), n_rows) for e in range(cfg.ppo_epochs)]
    order = jnp.concatenate(perms).reshape(cfg.ppo_epochs * m, n_rows // m)

    prepare = objective_lib.make_objective(algo.objective, algo.aggregation, cfg.const_len or (seq_len - 1)).prepare
    scalars = dict(state.controllers or {})
    minibatch_step = _minibatch_step(batch, grad_fn, optimizer, algo.aggregation, u, prepare, scalars)
    keys = jax.random.split(jax.random.fold_in(shuffle_key, 0x7E53), order.shape[0])
    (params, opt_state), aux = jax.lax.scan(minibatch_step, (state.params, state.opt_state), (order, keys))
    metrics = {k: jnp.mean(v) for k, v in aux.items()}
    metrics["grad_norm_max"] = jnp.max(aux["grad_norm"])
    for k in ("pg/clip_frac_pos", "pg/clip_frac_neg", "pg/clip_frac"):
      if k in aux:
        metrics[k + "_last"] = aux[k][-1]
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step * cfg.ppo_epochs * m)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return _jit(train_step, mesh, state_shardings) if jit else train_step


def _minibatch_step(batch, grad_fn, optimizer, aggregation: str, u: int, prepare, scalars: dict):
  """``step((params, opt_state), (row_indices, key)) -> ((params, opt_state), aux)``: one optimiser step on the
  minibatch ``batch[row_indices]``, its gradient accumulated over ``u`` micro-batches (exactly: every
  micro-batch loss uses the whole minibatch's normaliser, and entries the terms compute from the minibatch
  (``prepare``) are computed before the split). Each micro-batch also sees the scalars ``rng`` (a key of its
  own) and ``scalars`` (the controllers' coefficients)."""

  def minibatch_step(carry, xs):
    params, opt_state = carry
    idx, key = xs
    mb = jax.tree_util.tree_map(lambda x: x[idx], batch)
    mb = {**mb, **prepare(mb, key)}
    normalizer = losses.batch_normalizer(mb["loss_mask"] > 0, aggregation)
    micro = _split(mb, u)
    micro_keys = jax.random.split(jax.random.fold_in(key, 1), u)

    def with_scalars(mcb, k):
      return {**mcb, "rng": k, **scalars}

    def micro_step(acc, xs):
      mcb, k = xs
      (_, aux), g = grad_fn(params, with_scalars(mcb, k), normalizer)
      acc_g, acc_aux = acc
      acc_g = jax.tree_util.tree_map(jnp.add, acc_g, g)
      acc_aux = {k: acc_aux[k] + (v if _additive(k) else v / u) for k, v in aux.items()}
      return (acc_g, acc_aux), None

    zeros_g = jax.tree_util.tree_map(jnp.zeros_like, params)
    first = with_scalars(jax.tree_util.tree_map(lambda x: x[0], micro), micro_keys[0])
    aux_shape = jax.eval_shape(lambda: grad_fn(params, first, normalizer)[0][1])
    zeros_aux = {k: jnp.zeros(s.shape, s.dtype) for k, s in aux_shape.items()}
    (grads, aux), _ = jax.lax.scan(micro_step, (zeros_g, zeros_aux), (micro, micro_keys))
    gnorm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), {**aux, "grad_norm": gnorm}

  return minibatch_step


def _jit(train_step, mesh, state_shardings):
  """``train_step`` jitted with the state donated; with a mesh, explicit in / out shardings."""
  if mesh is None:
    return jax.jit(train_step, donate_argnums=(0,))
  if state_shardings is None:
    raise ValueError("make_train_step(mesh=...) needs state_shardings (sharding.train_state_shardings)")
  rows = jax.sharding.NamedSharding(mesh, sharding.batch_spec(1))   # a prefix: leading dim of every leaf
  rep = sharding.replicated(mesh)
  return jax.jit(train_step, in_shardings=(state_shardings, rows), out_shardings=(state_shardings, rep),
                 donate_argnums=(0,))


def make_group_grad_norms(model_config, algo: algorithms_lib.Algorithm, cfg: UpdateConfig, *,
                          jit: bool = True, lora_config: Optional[lora_lib.LoRAConfig] = None):
  """``fn(params, batch, frozen=None) -> {grad_norm/<kind>, grad_share/<kind>}`` for kinds mixed / all_correct
  / all_wrong (with ``lora_config``: gradients of the adapters ``params["lora"]`` on the frozen base ``frozen``).

  g_k = ∇_θ L_pg(θ; A · 1[kind = k]) on the rollout batch at θ = θ_old (L_pg: the objective's first term
  that reads only log-probs and advantages) (ratio 1, where the surrogate is
  linear in A, so Σ_k g_k = ∇L_pg).  Reported: ‖g_k‖ and the share ‖g_k‖ / Σ_j ‖g_j‖ — how much of the
  policy-gradient signal each kind of group contributes (e.g. NGRPO's all-wrong groups).
  """
  mcfg = model_config_for(model_config, cfg)
  pg_terms = [t for t in algo.objective if set(t.needs) <= {"logp", "old_logp", "advantages", "old_entropy"}]
  if not pg_terms:
    raise ValueError(f"algorithm {algo.name!r} has no policy-gradient term (one that reads only logp, old_logp, "
                     "advantages and old_entropy) to measure per-kind gradient norms of")

  def fn(params, batch, frozen=None):
    policy_objective = objective_lib.make_objective(pg_terms[:1], algo.aggregation,
                                                    cfg.const_len or (batch["tokens"].shape[1] - 1))

    def pg_loss(trained, adv):
      policy = trained if lora_config is None else policy_for_loss({"lora": trained}, frozen, lora_config)
      out = score_tokens(policy, mcfg, batch["tokens"], batch["attention_mask"],
                         chunk_size=cfg.logprob_chunk_size, with_entropy=False,
                         unroll_layers=cfg.unroll_layers)
      mb = {**batch, "advantages": adv}
      mb = {**mb, **policy_objective.prepare(mb, jax.random.PRNGKey(0))}
      return policy_objective({"logp": out["logp"].astype(jnp.float32)}, mb, None)[0]

    kinds = jnp.arange(len(GROUP_KINDS))[:, None, None]
    adv_by_kind = batch["advantages"][None] * (batch["group_kind"][None, :, None] == kinds)
    # One traced backward pass mapped over the kinds (one compile, sequential in memory).
    trained = params["policy"] if lora_config is None else params["lora"]
    norm_list = jax.lax.map(lambda adv: optax.global_norm(jax.grad(pg_loss)(trained, adv)), adv_by_kind)
    norms = {kind: norm_list[i] for i, kind in enumerate(GROUP_KINDS)}
    total = sum(norms.values())
    out = {}
    for kind, n in norms.items():
      out[f"grad_norm/{kind}"] = n
      out[f"grad_share/{kind}"] = jnp.where(total > 0, n / jnp.maximum(total, 1e-30), 0.0)
    return out

  return jax.jit(fn) if jit else fn


def make_scorer(model_config, cfg: UpdateConfig, *, jit: bool = True):
  """``fn(policy_params, tokens, attention_mask, value_params=None) -> dict`` (see :func:`score_tokens`)."""
  mcfg = model_config_for(model_config, cfg)

  def fn(policy_params, tokens, attention_mask, value_params=None):
    return score_tokens(policy_params, mcfg, tokens, attention_mask, chunk_size=cfg.logprob_chunk_size,
                        value_params=value_params, with_entropy=True, unroll_layers=cfg.unroll_layers)

  return jax.jit(fn) if jit else fn
