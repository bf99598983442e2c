"""Supervised warm-start: next-token cross-entropy on (prompt, completion) pairs before RL.

  L(θ) = − Σ_{b,t} m_{b,t} log π_θ(y_{b,t} | x_b, y_{b,<t}) / Σ_{b,t} m_{b,t}

with m the completion-token mask (prompt tokens are not trained), token-mean over the batch.  Used by
the default experiment so the tiny policy emits the scratchpad / ``\\boxed{}`` format before RL.
"""
import dataclasses
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ngrpo_jax import models
from ngrpo_jax.training import state as state_lib


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Warm-start options.

  Attributes:
    steps: optimiser steps (0: no warm-start, e.g. RL from a loaded checkpoint).  batch_size: sequences per step.
    learning_rate, warmup_steps, weight_decay: AdamW with linear warm-up then cosine decay to 10%.
    max_len: sequences (prompt + completion) are padded / must fit to this many tokens.
    logprob_chunk_size: time chunk of the log-prob computation (None: unchunked, logits kept).
    unroll_layers: decoder layers as a Python loop instead of a scan (see ``update.UpdateConfig``).
  """
  steps: int = 200
  batch_size: int = 32
  learning_rate: float = 3e-3
  warmup_steps: int = 20
  weight_decay: float = 0.0
  max_len: int = 96
  logprob_chunk_size: Optional[int] = 128
  unroll_layers: bool = False

  def __post_init__(self):
    if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
      raise ValueError(f"steps must be an int >= 0 (0: no warm-start), got {self.steps!r}")
    for f in ("batch_size", "max_len"):
      if getattr(self, f) < 1:
        raise ValueError(f"sft.{f} must be >= 1, got {getattr(self, f)}")


def pack_examples(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], max_len: int,
                  pad_id: int) -> dict:
  """(prompt, completion) token lists → ``tokens int32[N, max_len]``, ``attention_mask``, ``loss_mask``.

  Prompts are left-aligned here (no padding inside); the loss mask marks completion targets
  (aligned with ``tokens[:, 1:]``).  Too-long pairs raise a ValueError.
  """
  n = len(prompts)
  tokens = np.full((n, max_len), pad_id, np.int32)
  attn = np.zeros((n, max_len), bool)
  loss_mask = np.zeros((n, max_len - 1), np.float32)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    if len(p) + len(c) > max_len:
      raise ValueError(f"example {i} has {len(p) + len(c)} tokens > max_len={max_len}")
    seq = list(p) + list(c)
    tokens[i, :len(seq)] = seq
    attn[i, :len(seq)] = True
    loss_mask[i, len(p) - 1:len(seq) - 1] = 1.0
  return {"tokens": tokens, "attention_mask": attn, "loss_mask": loss_mask}


def make_sft_step(model_config, optimizer: optax.GradientTransformation, chunk_size: Optional[int] = 128,
                  unroll_layers: bool = False):
  """Jitted ``step(params, opt_state, batch) -> (params, opt_state, loss)`` (token-mean cross-entropy).

  chunk_size / unroll_layers: as ``SFTConfig.logprob_chunk_size`` / ``SFTConfig.unroll_layers``.
  """

  def loss_fn(params, batch):
    hidden, _ = models.hidden_states(params, model_config, batch["tokens"][:, :-1],
                                     attention_mask=batch["attention_mask"][:, :-1], unroll_layers=unroll_layers)
    logp = models.token_logprobs(params, model_config, hidden, batch["tokens"][:, 1:], chunk_size=chunk_size)
    m = batch["loss_mask"]
    return -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def train_sft(params, model_config, examples: dict, cfg: SFTConfig, seed: int = 0,
              log_fn: Optional[Callable[[int, dict], None]] = None, log_every: int = 50):
  """Runs the warm-start.  ``examples`` from :func:`pack_examples`; batches drawn with a seeded numpy rng.

  Returns:
    (params, summary dict with ``loss_first``, ``loss_last``, ``seconds``, ``tokens_per_sec``).
  """
  n = examples["tokens"].shape[0]
  if n < cfg.batch_size:
    raise ValueError(f"need at least batch_size={cfg.batch_size} examples, got {n}")
  ocfg = state_lib.OptimConfig(learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, decay="cosine",
                               total_steps=cfg.steps, end_lr_ratio=0.1, weight_decay=cfg.weight_decay)
  opt, _ = state_lib.make_optimizer(ocfg, cfg.learning_rate)
  params = jax.tree_util.tree_map(jnp.array, params)
  opt_state = opt.init(params)
  step = make_sft_step(model_config, opt, cfg.logprob_chunk_size, cfg.unroll_layers)
  rng = np.random.default_rng(seed)
  t0 = time.perf_counter()
  losses, tokens = [], 0
  for i in range(cfg.steps):
    idx = rng.choice(n, cfg.batch_size, replace=False)
    batch = {k: jnp.asarray(v[idx]) for k, v in examples.items()}
    params, opt_state, loss = step(params, opt_state, batch)
    tokens += int(examples["attention_mask"][idx].sum())
    if i == 0 or (i + 1) % log_every == 0 or i + 1 == cfg.steps:
      loss = float(loss)
      losses.append(loss)
      if log_fn is not None:
        log_fn(i + 1, {"sft/loss": loss, "sft/tokens_per_sec": tokens / (time.perf_counter() - t0)})
  seconds = time.perf_counter() - t0
  return params, {"loss_first": losses[0], "loss_last": losses[-1], "seconds": seconds,
                  "tokens_per_sec": tokens / seconds}
