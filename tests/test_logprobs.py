"""Chunked token log-probs / entropy vs the naive full log-softmax; no [B, T, V] float32 buffer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax.models import logprobs
from ngrpo_jax.models import qwen2

B, T = 2, 20


def _setup(tied, vocab_size=96, time=T):
  config = qwen2.Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                             initializer_range=0.3)
  params = qwen2.init_params(config, jax.random.key(0))
  hidden = jax.random.normal(jax.random.key(1), (B, time, 32))
  targets = jax.random.randint(jax.random.key(2), (B, time), 0, vocab_size)
  return config, params, hidden, targets


def _naive(params, config, hidden, targets, temperature):
  """Reference: full float32 log-softmax over [B, T, V]."""
  z = qwen2.lm_logits(params, config, hidden) / temperature
  logp_all = jax.nn.log_softmax(z, axis=-1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
  entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, entropy


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk_size, temperature", [(7, 1.0), (4, 0.7), (64, 1.3)])
def test_values_match_naive(tied, chunk_size, temperature):
  config, params, hidden, targets = _setup(tied)
  logp, ent = logprobs.token_logprobs(params, config, hidden, targets, chunk_size=chunk_size,
                                      temperature=temperature, return_entropy=True)
  ref_logp, ref_ent = _naive(params, config, hidden, targets, temperature)
  assert logp.shape == (B, T) and ent.shape == (B, T) and logp.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logp), np.asarray(ref_logp), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ent), np.asarray(ref_ent), rtol=1e-5, atol=1e-5)
  # Independent numpy check of the reference itself.
  z = np.asarray(hidden, np.float64) @ (np.asarray(params["embed_tokens"]["embedding"], np.float64).T if tied
                                        else np.asarray(params["lm_head"]["kernel"], np.float64)) / temperature
  lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
  np.testing.assert_allclose(np.asarray(logp), np.take_along_axis(z, np.asarray(targets)[..., None], -1)[..., 0]
                             - lse, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk_size, temperature, with_entropy", [(6, 1.0, True), (None, 0.7, True),
                                                                   (7, 1.3, False), (None, 1.0, False)])
def test_gradients_match_naive(tied, chunk_size, temperature, with_entropy):
  """The hand-written backward (recomputed chunks, or kept logits with chunk_size=None) equals autodiff."""
  config, params, hidden, targets = _setup(tied)
  weights = jax.random.normal(jax.random.key(3), (B, T))
  ent_weights = jax.random.normal(jax.random.key(4), (B, T))

  def loss(fn, params, hidden):
    logp, ent = fn(params, hidden)
    out = jnp.sum(weights * logp)
    return out + 0.1 * jnp.sum(ent_weights * ent) if with_entropy else out

  def chunked(p, h):
    res = logprobs.token_logprobs(p, config, h, targets, chunk_size=chunk_size, temperature=temperature,
                                  return_entropy=with_entropy)
    return res if with_entropy else (res, None)

  naive = lambda p, h: _naive(p, config, h, targets, temperature)
  g = jax.jit(jax.grad(lambda p, h: loss(chunked, p, h), argnums=(0, 1)))(params, hidden)
  g_ref = jax.grad(lambda p, h: loss(naive, p, h), argnums=(0, 1))(params, hidden)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5),
               g, g_ref)
  assert float(jnp.max(jnp.abs(g[1]))) > 0  # the hidden-state gradient is not trivially zero


def _all_avals(jaxpr):
  for eqn in jaxpr.eqns:
    for v in eqn.outvars:
      yield v.aval
    for p in eqn.params.values():
      subs = p if isinstance(p, (tuple, list)) else [p]
      for sub in subs:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _all_avals(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _all_avals(sub)


def _largest_float_buffer(fn, *args):
  jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
  return max(int(np.prod(a.shape)) for a in _all_avals(jaxpr) if hasattr(a, "shape")
             and jnp.issubdtype(a.dtype, jnp.floating))


def test_no_full_vocab_buffer_forward_or_backward():
  """No intermediate (in the value-and-grad jaxpr) holds B*T*V floats; the naive path does.

  The largest float buffer of the chunked path is the [D, V] head kernel (and its gradient) or one
  [B, chunk, V] block.
  """
  vocab, time = 512, 64
  config, params, hidden, targets = _setup(False, vocab_size=vocab, time=time)

  def chunked_loss(p, h):
    logp, ent = logprobs.token_logprobs(p, config, h, targets, chunk_size=5, return_entropy=True)
    return jnp.sum(logp) + jnp.sum(ent)

  def naive_loss(p, h):
    logp, ent = _naive(p, config, h, targets, 1.0)
    return jnp.sum(logp) + jnp.sum(ent)

  full = B * time * vocab
  chunked = _largest_float_buffer(jax.value_and_grad(chunked_loss, argnums=(0, 1)), params, hidden)
  naive = _largest_float_buffer(jax.value_and_grad(naive_loss, argnums=(0, 1)), params, hidden)
  assert naive >= full
  assert chunked <= max(B * 5 * vocab, config.hidden_size * vocab) < full, (chunked, full)


def test_rejects_bad_arguments():
  config, params, hidden, targets = _setup(False)
  with pytest.raises(ValueError, match="chunk_size"):
    logprobs.token_logprobs(params, config, hidden, targets, chunk_size=0)
  with pytest.raises(ValueError, match="temperature"):
    logprobs.token_logprobs(params, config, hidden, targets, temperature=0.0)
  with pytest.raises(TypeError, match="targets"):
    logprobs.token_logprobs(params, config, hidden, targets.astype(jnp.float32))
