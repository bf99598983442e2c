"""Token log-probabilities and entropies under the LM head, with a hand-written backward pass.

Every RL loss needs log π(y_t | y_<t) of the sampled tokens; with Qwen's vocabulary (151,936) a full
float32 log-softmax over [B, T, V] would dominate memory. ``token_logprobs`` runs the LM head through a
``jax.custom_vjp`` whose residuals are the hidden states, the targets and two floats per token (logsumexp and
entropy), never the [B, T, V] logits: the backward pass recomputes each time chunk's logits once and forms
the logit cotangent in closed form,

    ∂ log π(y) / ∂z = onehot(y) − π,          ∂H / ∂z = −π ⊙ (log π + H),

so per chunk it costs one matmul forward and three backward (logits, d hidden, d W_head). With
``chunk_size=None`` the whole [B, T, V] block is one chunk and its logits are kept for the backward (three
matmuls, the fastest path when memory allows; what torch/transformers does). Autodiff of a checkpointed
log-softmax instead recomputes the logits AND differentiates through max / exp / sum / gather, which costs
more on XLA:CPU (measured in docs/benchmarks.md, "Measurements cited from code").
"""
import functools
import math

import chex
import jax
import jax.numpy as jnp

from ngrpo_jax.models import qwen2


def _logits(h, w, tied, dtype, temperature):
  """z = (h W_head) / τ in float32: h [N, D]; w = W_head [D, V] (or the embedding [V, D] when tied), already
  in the compute dtype (cast once per call by the caller, not once per chunk)."""
  h = h.astype(dtype)
  z = h @ w.T if tied else h @ w
  return z.astype(jnp.float32) / temperature


def _chunk_forward(h, y, w, temperature, tied, dtype, with_entropy):
  """One chunk: (logits f32[N, V], logp f32[N], lse f32[N], entropy f32[N] or None)."""
  z = _logits(h, w, tied, dtype, temperature)
  lse = jax.nn.logsumexp(z, axis=-1)
  logp = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0] - lse
  entropy = None
  if with_entropy:
    entropy = lse - jnp.sum(jnp.exp(z - lse[:, None]) * z, axis=-1)
  return z, logp, lse, entropy


def _logit_cotangent(z, y, lse, entropy, g_logp, g_entropy, temperature):
  """dL/dz (with z = h W / τ folded in, i.e. dL/d(h W)) for one chunk, f32[N, V]."""
  logp_all = z - lse[:, None]
  probs = jnp.exp(logp_all)
  coef = g_logp[:, None]
  if entropy is not None:
    coef = coef + g_entropy[:, None] * (logp_all + entropy[:, None])
  onehot = jnp.arange(z.shape[-1], dtype=y.dtype)[None, :] == y[:, None]
  return (jnp.where(onehot, g_logp[:, None], 0.0) - probs * coef) / temperature


def _split(x, num_chunks):
  """[B, T, ...] → [num_chunks, B·T/num_chunks, ...] chunks of whole time blocks (batch rows stay together)."""
  B, T = x.shape[:2]
  c = T // num_chunks
  x = x.reshape((B, num_chunks, c) + x.shape[2:]).swapaxes(0, 1)
  return x.reshape((num_chunks, B * c) + x.shape[3:])


def _merge(x, B):
  """Inverse of ``_split`` for per-token arrays: [num_chunks, B·c, ...] → [B, T, ...]."""
  n, bc = x.shape[:2]
  c = bc // B
  x = x.reshape((n, B, c) + x.shape[2:]).swapaxes(0, 1)
  return x.reshape((B, n * c) + x.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _head_stats(hidden, targets, w, temperature, num_chunks, tied, dtype, with_entropy):
  return _head_stats_fwd(hidden, targets, w, temperature, num_chunks, tied, dtype, with_entropy)[0]


def _head_stats_fwd(hidden, targets, w, temperature, num_chunks, tied, dtype, with_entropy):
  B = hidden.shape[0]
  hc, yc = _split(hidden, num_chunks), _split(targets, num_chunks)
  wd = w.astype(dtype)
  if num_chunks == 1:
    z, logp, lse, ent = _chunk_forward(hc[0], yc[0], wd, temperature, tied, dtype, with_entropy)
    logp, lse = logp[None], lse[None]
    ent = None if ent is None else ent[None]
    saved_logits = z
  else:
    def body(xs):
      return _chunk_forward(xs[0], xs[1], wd, temperature, tied, dtype, with_entropy)[1:]
    logp, lse, ent = jax.lax.map(body, (hc, yc))
    saved_logits = None
  out = (_merge(logp, B), None if ent is None else _merge(ent, B))
  return out, (hidden, targets, w, temperature, lse, ent, saved_logits)


def _head_stats_bwd(num_chunks, tied, dtype, with_entropy, res, g):
  hidden, targets, w, temperature, lse, ent, saved_logits = res
  g_logp, g_ent = g
  hc, yc = _split(hidden, num_chunks), _split(targets, num_chunks)
  glc = _split(g_logp, num_chunks)
  gec = _split(g_ent, num_chunks) if with_entropy else jnp.zeros_like(glc)
  entc = ent if with_entropy else jnp.zeros_like(lse)
  wd = w.astype(dtype)

  def chunk_grads(h, y, lse_c, ent_c, gl, ge, z):
    if z is None:
      z = _logits(h, wd, tied, dtype, temperature)
    dz = _logit_cotangent(z, y, lse_c, ent_c if with_entropy else None, gl, ge, temperature).astype(dtype)
    dh = dz @ wd if tied else dz @ wd.T                        # [N, D]
    hd = h.astype(dtype)
    dw = dz.T @ hd if tied else hd.T @ dz                       # like w: [V, D] tied, [D, V] untied
    return dh, dw.astype(jnp.float32)

  if num_chunks == 1:
    dh, dw = chunk_grads(hc[0], yc[0], lse[0], entc[0], glc[0], gec[0], saved_logits)
    dh = dh[None]
  else:
    def body(dw_acc, xs):
      dh, dw = chunk_grads(*xs, None)
      return dw_acc + dw, dh
    dw, dh = jax.lax.scan(body, jnp.zeros(w.shape, jnp.float32), (hc, yc, lse, entc, glc, gec))
  d_hidden = _merge(dh, hidden.shape[0]).astype(hidden.dtype)
  # No gradient flows to the temperature (a sampling constant) or to the integer targets.
  return d_hidden, None, dw.astype(w.dtype), jnp.zeros_like(temperature)


_head_stats.defvjp(_head_stats_fwd, _head_stats_bwd)


def token_logprobs(params: dict, config: qwen2.Qwen2Config, hidden: jax.Array, targets: jax.Array, *,
                   chunk_size=128, temperature=1.0, return_entropy: bool = False):
  """Per-token log-probabilities (and entropies) of ``targets`` under the LM head, chunked over time.

      z_t = (h_t W_head) / τ,   log π(y_t) = z_t[y_t] - logsumexp(z_t),
      H_t = -Σ_v π_v log π_v = logsumexp(z_t) - Σ_v softmax(z_t)_v z_t,v

  The backward pass is hand-written (module docstring): with ``g_t = ∂L/∂ log π(y_t)`` and
  ``e_t = ∂L/∂H_t``, ``∂L/∂z_t = g_t (onehot(y_t) − π_t) − e_t π_t ⊙ (log π_t + H_t)``, then
  ``∂L/∂h_t = (∂L/∂z_t) W_headᵀ / τ`` and ``∂L/∂W_head = Σ_t h_tᵀ (∂L/∂z_t) / τ``.

  Args:
    params: model params (only the LM head / tied embedding is used).
    config: ``Qwen2Config`` (its ``dtype`` is the matmul compute dtype; statistics are float32).
    hidden: [B, T, D] final hidden states from ``qwen2.hidden_states`` (position t predicts targets[:, t]).
    targets: int[B, T] token ids to score (for next-token scoring pass tokens[:, 1:] with hidden[:, :-1]).
    chunk_size: time steps per chunk (default 128; T is padded up to a multiple of it): no buffer larger
      than one [B, chunk_size, V] float32 block exists in the forward or the backward pass, at the cost of
      recomputing the logits in the backward. ``None``: one chunk whose logits are kept for the backward
      (fastest; holds [B, T, V] float32).
    temperature: τ > 0, the sampling temperature the policy used (default 1). No gradient flows to it.
    return_entropy: also return the per-token entropy H_t.

  Returns:
    logp f32[B, T] (and entropy f32[B, T] when return_entropy). Gradients flow to params and hidden.
  """
  chex.assert_rank(hidden, 3)
  chex.assert_rank(targets, 2)
  B, T, _ = hidden.shape
  chex.assert_shape(targets, (B, T))
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(f"targets must be an integer array, got {targets.dtype}")
  if chunk_size is not None and chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive or None, got {chunk_size}")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  chunk = T if chunk_size is None else min(chunk_size, T)
  num_chunks = math.ceil(T / chunk)
  pad = num_chunks * chunk - T
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  tied = config.tie_word_embeddings
  w = params["embed_tokens"]["embedding"] if tied else params["lm_head"]["kernel"]
  logp, entropy = _head_stats(hidden, targets, w, jnp.asarray(temperature, jnp.float32), num_chunks, tied,
                              jnp.dtype(config.dtype), return_entropy)
  logp = logp[:, :T]
  if return_entropy:
    return logp, entropy[:, :T]
  return logp
