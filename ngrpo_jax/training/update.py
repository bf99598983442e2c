"""The pure, jitted RL update: ``train_step(state, batch) -> (state, metrics)``.

One call consumes one rollout batch: ``ppo_epochs`` passes, each over ``num_minibatches`` shuffled
minibatches (one optimiser step each), each minibatch optionally split into ``num_microbatches`` for
gradient accumulation.  Per minibatch the loss is

  L(θ) = L_pg(θ) + β · KL(π_θ || π_ref) − c_H · H(π_θ) + c_V · L_V(φ)

with L_pg the clipped surrogate of ``ngrpo_jax.losses.policy_loss`` (eps_pos / eps_neg, the algorithm's
aggregation), KL / entropy aggregated the same way, and L_V PPO's clipped value loss (critic only).

Gradient accumulation is exact for every aggregation: every micro-batch's loss is normalised by the
whole minibatch's ``losses.batch_normalizer`` (tokens for a token mean, sequences for a sequence mean), so
the summed micro-batch gradients equal the full-minibatch gradient (tested).

Batch layout (a dict of arrays, fixed shapes; ``B`` rows = responses, ``L`` = prompt + response length;
per-target arrays have length ``L - 1`` and are aligned with ``tokens[:, 1:]``):
  tokens: int32[B, L]           left-padded prompt followed by the right-padded response
  attention_mask: bool[B, L]    real tokens
  loss_mask: f32[B, L-1]        1 on response targets that enter the loss (0: prompt, padding, truncated)
  old_logp: f32[B, L-1]         log π_old of each target (behaviour policy)
  advantages: f32[B, L-1]       per-token advantages (sequence advantages broadcast; GAE per token)
  ref_logp: f32[B, L-1]         log π_ref (only read when kl_coef > 0)
  old_values, returns: f32[B, L-1]  (critic only)
  group_kind: int32[B]          0 mixed, 1 all-correct, 2 all-wrong, -1 padding (diagnostics only)
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from ngrpo_jax import losses
from ngrpo_jax.training import algorithms as algorithms_lib
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
      no stacked per-layer residual buffers to zero-fill and copy, 15-20% faster train steps on XLA:CPU for
      small models (``benchmarks/train_step_benchmark.py``); costs compile time for deep models.
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


def _models():
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  return models


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
  models = _models()
  hidden, _ = models.hidden_states(params, model_config, tokens[:, :-1],
                                   attention_mask=attention_mask[:, :-1], unroll_layers=unroll_layers)
  out = {}
  res = models.token_logprobs(params, model_config, hidden, tokens[:, 1:], chunk_size=chunk_size,
                              return_entropy=with_entropy)
  if with_entropy:
    out["logp"], out["entropy"] = res
  else:
    out["logp"] = res
  if value_params is not None:
    from ngrpo_jax.models import qwen2  # pylint: disable=g-import-not-at-top
    out["values"] = qwen2.value(value_params, hidden.astype(jnp.float32))
  return out


def _policy_term(algo: algorithms_lib.Algorithm, logp, old_logp, advantages, mask, normalizer, max_length):
  """Calls ``losses.policy_loss`` (or the algorithm's own ``loss_fn``) → (loss, diagnostics dict)."""
  fn = algo.loss_fn or losses.policy_loss
  kwargs = dict(eps_pos=algo.eps_pos, eps_neg=algo.eps_neg, aggregation=algo.aggregation,
                normalizer=normalizer, max_length=max_length)
  if algo.dual_clip is not None:
    kwargs["dual_clip"] = algo.dual_clip
  loss, diag = fn(logp, old_logp, advantages, mask, **kwargs)
  return loss, dict(diag)


def make_loss_fn(model_config, algo: algorithms_lib.Algorithm, cfg: UpdateConfig, seq_len: int):
  """``loss_fn(params, micro_batch, normalizer) -> (loss, aux)`` for one (micro-)batch.

  ``normalizer`` is ``losses.batch_normalizer`` of the whole minibatch, so micro-batch losses (and their
  gradients) sum exactly to the minibatch loss.
  """
  max_length = cfg.const_len or (seq_len - 1)
  compute_dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
  mcfg = model_config_for(model_config, cfg)
  agg = dict(aggregation=algo.aggregation, max_length=max_length)

  def loss_fn(params, mb, normalizer):
    p = params if compute_dtype == jnp.float32 else _cast_floating(params, compute_dtype)
    out = score_tokens(p["policy"], mcfg, mb["tokens"], mb["attention_mask"],
                       chunk_size=cfg.logprob_chunk_size, value_params=p.get("value"),
                       with_entropy=True, unroll_layers=cfg.unroll_layers)
    mask = mb["loss_mask"] > 0
    logp = out["logp"].astype(jnp.float32)
    pg, diag = _policy_term(algo, logp, mb["old_logp"], mb["advantages"], mask, normalizer, max_length)
    ent = losses.aggregate(out["entropy"].astype(jnp.float32), mask, normalizer=normalizer, **agg)
    total = pg - algo.entropy_coef * ent
    aux = {"pg_loss": pg, "entropy": ent}
    if algo.kl_coef > 0:
      kl, kdiag = losses.kl_penalty(logp, mb["ref_logp"], mask, estimator=algo.kl_estimator,
                                    normalizer=normalizer, **agg)
      total = total + algo.kl_coef * kl
      aux["kl_ref"] = kl
      aux["kl_ref_max"] = kdiag["kl_max"]
    if algo.use_critic:
      vl, vdiag = losses.value_loss(out["values"].astype(jnp.float32), mb["old_values"], mb["returns"],
                                    mask, clip_eps=algo.value_clip, normalizer=normalizer, **agg)
      total = total + algo.value_coef * vl
      aux["value_loss"] = vl
      aux.update({f"value/{k}": v for k, v in dict(vdiag).items()})
    for k, v in diag.items():
      if jnp.ndim(v) == 0:
        aux[f"pg/{k}"] = jnp.asarray(v, jnp.float32)
    aux["loss"] = total
    return total, aux

  return loss_fn


def _split(tree, n):
  return jax.tree_util.tree_map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), tree)


# Loss terms that are sums over micro-batches (the normaliser is the minibatch's); the policy_loss
# diagnostics are per-micro-batch statistics and are averaged instead.
_ADDITIVE = ("loss", "pg_loss", "entropy", "kl_ref", "value_loss")


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

  Metrics (scalars, means over all optimiser steps of the call): loss, pg_loss, entropy, kl_ref,
  value_loss, pg/<policy_loss diagnostics> (clip fractions by advantage sign, ratio stats, approx KL),
  grad_norm (before clipping; also its max), learning_rate (at the first optimiser step of the call).
  """

  def train_step(state: state_lib.TrainState, batch: dict):
    batch = {k: v for k, v in batch.items() if k != "group_kind"}
    if algo.kl_coef > 0 and "ref_logp" not in batch:
      raise ValueError("algorithm has kl_coef > 0 but the batch has no 'ref_logp'")
    n_rows, seq_len = batch["tokens"].shape
    m, u = cfg.num_minibatches, cfg.num_microbatches
    if n_rows % (m * u):
      raise ValueError(f"batch rows ({n_rows}) must be divisible by num_minibatches * num_microbatches "
                       f"({m} * {u})")
    loss_fn = make_loss_fn(model_config, algo, cfg, seq_len)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    shuffle_key = jax.random.fold_in(jnp.asarray(state.rng, jnp.uint32), 0x5EED)
    perms = [jax.random.permutation(jax.random.fold_in(shuffle_key, e), n_rows) for e in range(cfg.ppo_epochs)]
    order = jnp.concatenate(perms).reshape(cfg.ppo_epochs * m, n_rows // m)

    def minibatch_step(carry, idx):
      params, opt_state = carry
      mb = jax.tree_util.tree_map(lambda x: x[idx], batch)
      normalizer = losses.batch_normalizer(mb["loss_mask"] > 0, algo.aggregation)
      micro = _split(mb, u)

      def micro_step(acc, mcb):
        (_, aux), g = grad_fn(params, mcb, normalizer)
        acc_g, acc_aux = acc
        acc_g = jax.tree_util.tree_map(jnp.add, acc_g, g)
        acc_aux = {k: acc_aux[k] + (v if k in _ADDITIVE else v / u) for k, v in aux.items()}
        return (acc_g, acc_aux), None

      zeros_g = jax.tree_util.tree_map(jnp.zeros_like, params)
      first = jax.tree_util.tree_map(lambda x: x[0], micro)
      aux_shape = jax.eval_shape(lambda: grad_fn(params, first, normalizer)[0][1])
      zeros_aux = {k: jnp.zeros(s.shape, s.dtype) for k, s in aux_shape.items()}
      (grads, aux), _ = jax.lax.scan(micro_step, (zeros_g, zeros_aux), micro)
      gnorm = optax.global_norm(grads)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      aux = dict(aux)
      aux["grad_norm"] = gnorm
      return (params, opt_state), aux

    (params, opt_state), aux = jax.lax.scan(minibatch_step, (state.params, state.opt_state), order)
    metrics = {k: jnp.mean(v) for k, v in aux.items()}
    metrics["grad_norm_max"] = jnp.max(aux["grad_norm"])
    for k in ("pg/clip_frac_pos", "pg/clip_frac_neg", "pg/clip_frac"):
      if k in aux:
        metrics[k + "_last"] = aux[k][-1]
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step * cfg.ppo_epochs * m)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  if not jit:
    return train_step
  if mesh is None:
    return jax.jit(train_step, donate_argnums=(0,))
  if state_shardings is None:
    raise ValueError("make_train_step(mesh=...) needs state_shardings (sharding.train_state_shardings)")
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  rows = jax.sharding.NamedSharding(mesh, sharding.batch_spec(1))   # a prefix: leading dim of every leaf
  rep = sharding.replicated(mesh)
  return jax.jit(train_step, in_shardings=(state_shardings, rows), out_shardings=(state_shardings, rep),
                 donate_argnums=(0,))


def make_group_grad_norms(model_config, algo: algorithms_lib.Algorithm, cfg: UpdateConfig, *,
                          jit: bool = True):
  """``fn(params, batch) -> {grad_norm/<kind>, grad_share/<kind>}`` for kinds mixed / all_correct / all_wrong.

  g_k = ∇_θ L_pg(θ; A · 1[kind = k]) on the rollout batch at θ = θ_old (ratio 1, where the surrogate is
  linear in A, so Σ_k g_k = ∇L_pg).  Reported: ‖g_k‖ and the share ‖g_k‖ / Σ_j ‖g_j‖ — how much of the
  policy-gradient signal each kind of group contributes (e.g. NGRPO's all-wrong groups).
  """
  mcfg = model_config_for(model_config, cfg)

  def fn(params, batch):
    seq_len = batch["tokens"].shape[1]
    max_length = cfg.const_len or (seq_len - 1)

    def pg_loss(policy, adv):
      out = score_tokens(policy, mcfg, batch["tokens"], batch["attention_mask"],
                         chunk_size=cfg.logprob_chunk_size, with_entropy=False,
                         unroll_layers=cfg.unroll_layers)
      loss, _ = _policy_term(algo, out["logp"].astype(jnp.float32), batch["old_logp"], adv,
                             batch["loss_mask"] > 0, None, max_length)
      return loss

    kinds = jnp.arange(len(GROUP_KINDS))[:, None, None]
    adv_by_kind = batch["advantages"][None] * (batch["group_kind"][None, :, None] == kinds)
    # One traced backward pass mapped over the kinds (one compile, sequential in memory).
    norm_list = jax.lax.map(lambda adv: optax.global_norm(jax.grad(pg_loss)(params["policy"], adv)), adv_by_kind)
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
