"""Token log-probabilities and entropies under the LM head, chunked over time.

Every RL loss needs log π(y_t | y_<t) of the sampled tokens; with Qwen's vocabulary (151,936) a full
float32 log-softmax over [B, T, V] would dominate memory. ``token_logprobs`` computes the logits of
``chunk_size`` time steps at a time inside ``jax.lax.map`` with a rematerialised (``jax.checkpoint``) body,
so neither the forward nor the backward pass holds more than one [B, chunk_size, V] float32 block.
"""
import chex
import jax
import jax.numpy as jnp

from ngrpo_jax.models import qwen2


def _chunk_stats(params, config, hidden, targets, temperature):
  """(log p(targets), entropy) for one chunk: hidden [B, C, D], targets [B, C] → f32[B, C] each."""
  z = qwen2.lm_logits(params, config, hidden) / temperature        # f32[B, C, V]
  lse = jax.nn.logsumexp(z, axis=-1)
  target_z = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]
  probs = jnp.exp(z - lse[..., None])
  entropy = lse - jnp.sum(probs * z, axis=-1)
  return target_z - lse, entropy


def token_logprobs(params: dict, config: qwen2.Qwen2Config, hidden: jax.Array, targets: jax.Array, *,
                   chunk_size: int = 128, temperature: float = 1.0, return_entropy: bool = False):
  """Per-token log-probabilities (and entropies) of ``targets`` under the LM head, chunked over time.

      z_t = (h_t W_head) / τ,   log π(y_t) = z_t[y_t] - logsumexp(z_t),
      H_t = -Σ_v π_v log π_v = logsumexp(z_t) - Σ_v softmax(z_t)_v z_t,v

  Args:
    params: model params (only the LM head / tied embedding is used).
    config: ``Qwen2Config``.
    hidden: [B, T, D] final hidden states from ``qwen2.hidden_states`` (position t predicts targets[:, t]).
    targets: int[B, T] token ids to score (for next-token scoring pass tokens[:, 1:] with hidden[:, :-1]).
    chunk_size: time steps per chunk (default 128); T is padded up to a multiple of it.
    temperature: τ > 0, the sampling temperature the policy used (default 1).
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
  if chunk_size <= 0:
    raise ValueError(f"chunk_size must be positive, got {chunk_size}")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be positive, got {temperature}")
  chunk = min(chunk_size, T)
  num_chunks = -(-T // chunk)
  pad = num_chunks * chunk - T
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [num_chunks, B, chunk, ...] so lax.map walks over time chunks.
  hidden_chunks = hidden.reshape(B, num_chunks, chunk, -1).swapaxes(0, 1)
  target_chunks = targets.reshape(B, num_chunks, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def body(xs):
    h, y = xs
    return _chunk_stats(params, config, h, y, temperature)

  logp, entropy = jax.lax.map(body, (hidden_chunks, target_chunks))
  logp = logp.swapaxes(0, 1).reshape(B, num_chunks * chunk)[:, :T]
  entropy = entropy.swapaxes(0, 1).reshape(B, num_chunks * chunk)[:, :T]
  return (logp, entropy) if return_entropy else logp
