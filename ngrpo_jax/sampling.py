"""Autoregressive sampling with a KV cache: the rollout engine.

``generate`` runs one jitted prefill over left-padded prompts, repeats the prefilled cache ``num_samples``
times along the batch (a group of G responses per prompt without recomputing the prompt), then one jitted
``lax.while_loop`` decode loop over a preallocated, donated cache that stops as soon as every row finished.
The whole loop stays on device: no host round trip per token. Each decode step is ``qwen2.forward`` on one
token per row with the cache, unrolled over layers with per-layer cache buffers (``qwen2.unstack_cache``)
and per-layer weights (``prepare_params``) made once before the loop: each layer attends its own buffer and
writes only the new slot, so with the cache donated it is updated in place (no per-step copy of the cache or of a
layer's keys / weights, which XLA:CPU makes for slices of stacked arrays). Small models are prepared inside
``generate``; for large ones call ``prepare_params`` once per policy version and pass its result (otherwise
the stacked weights are sliced inside every step, which avoids a second copy of the weights in memory).

Sampling distribution (the order of transformers' ``generate`` warpers)::

    p_T(v)  ∝ exp(logits_v / T)                                  temperature T > 0
    top-k : keep v if logits_v >= (k-th largest logit)            (ties at the k-th value are kept)
    top-p : keep the smallest set S, closed under ties, with Σ_{v∈S} p(v) >= top_p (p renormalised after
            top-k) — the nucleus of Holtzman et al. 2020, https://arxiv.org/abs/1904.09751
    min-p : keep v if p(v) >= min_p · max_u p(u)                  (Nguyen et al. 2024, https://arxiv.org/abs/2407.01082)
    q(v)  = p(v) · keep(v) / Σ_u p(u) · keep(u)

Greedy decoding (``greedy=True`` or ``temperature == 0``) takes argmax logits (the first index on ties, as
``torch.argmax``).

Top-p is exact without a full-vocabulary sort (see ``top_p_threshold``): a ``lax.top_k`` candidate set of
``num_candidates`` tokens answers peaked distributions; otherwise a bisection on the probability threshold
shrinks a bracket until it holds at most ``bracket_size`` tokens, which one more ``lax.top_k`` resolves
exactly. Tokens are drawn by inverse-CDF sampling with one uniform per row and step (a two-level blocked
cumulative sum, O(V)).

Randomness: every row r has its own stream ``fold_in(key, stream_id[r])`` (default ``stream_id`` = global row
index ``prompt_index * num_samples + sample_index``), and step t uses ``fold_in(row_key, t)``; a row's
sample therefore does not depend on the other rows of the batch, and the same key gives the same rollout.

Compilation: prompt and generation lengths are padded to buckets (``bucket_length``), so a new batch with
the same batch size and buckets reuses the compiled prefill/decode; ``trace_counts()`` reports how many
times each was traced (= compiled).
"""
import collections
import dataclasses
import functools
import math
from typing import Optional, Sequence

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax.models import qwen2

FINISH_LENGTH = 0
FINISH_STOP = 1

# Number of times each jitted stage was traced (a retrace means a recompile). Diagnostic only.
_TRACE_COUNTS = collections.Counter()


def trace_counts() -> dict:
  """How many times the prefill / decode stages were traced (each trace is one XLA compilation)."""
  return dict(_TRACE_COUNTS)


def bucket_length(n: int, minimum: int = 16, step: int = 512) -> int:
  """Padded length used for shapes: the next power of two >= max(n, minimum) up to ``step``, then the next
  multiple of ``step``. Keeps the number of distinct compiled shapes logarithmic in the length."""
  n = max(int(n), minimum)
  if n <= step:
    return 1 << (n - 1).bit_length()
  return -(-n // step) * step


# ----------------------------------------------------------------------------------------------------------
# Logit filters. All take/return [N, V] arrays and are jittable; scalar knobs may be traced.


def apply_temperature(logits: jax.Array, temperature) -> jax.Array:
  """logits / T (float32). logits: [N, V]; temperature: scalar > 0 (may be traced)."""
  return logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """keep(v) = logits_v >= (k-th largest logit of the row). Ties with the k-th value are kept.

  logits: f32[N, V]; k: static int (0 or >= V disables the filter). Returns bool[N, V].
  """
  if k <= 0 or k >= logits.shape[-1]:
    return jnp.ones(logits.shape, bool)
  kth = jax.lax.top_k(logits, k)[0][:, -1:]
  return logits >= kth


def _first_true(x: jax.Array) -> jax.Array:
  """Index of the first True along the last axis (== size when none), for monotone x (False..True)."""
  return jnp.sum(~x, axis=-1)


# Vocabularies up to this size use ``top_p_threshold``'s bit bisection (cheap full passes) instead of top_k.
_BIT_BISECTION_MAX_VOCAB = 2048


def _top_p_threshold_bits(w: jax.Array, target: jax.Array) -> jax.Array:
  """t* = max{t : Σ_v w_v·1(w_v >= t) >= target} by bisection on the float32 bit patterns.

  For w >= 0 the int32 bit pattern is monotone in the value, so a bisection over integers with the
  invariant f(lo) and not f(hi) ends (hi = lo + 1) after ceil(log2(hi - lo)) <= 31 steps at lo = the bits of
  t* (f changes between lo and lo + 1 only if some w_v equals lo). Each step is one fused pass over [N, V];
  the steps are unrolled (no loop). w: f32[N, V] finite, >= 0; target: f32[N] in (0, Σ w]. Returns f32[N].
  """
  lo = jnp.zeros(w.shape[:1], jnp.int32)  # f(0) = [Σ w >= target]: true
  hi = jax.lax.bitcast_convert_type(jnp.max(w, axis=-1), jnp.int32) + 1  # nothing >= hi: f false
  for _ in range(31):  # hi - lo <= bits(max finite float32) + 1 < 2^31
    mid = lo + (hi - lo) // 2
    t = jax.lax.bitcast_convert_type(mid, jnp.float32)
    ok = jnp.sum(jnp.where(w >= t[:, None], w, 0.0), axis=-1) >= target
    lo = jnp.where(ok, mid, lo)
    hi = jnp.where(ok, hi, mid)
  return jax.lax.bitcast_convert_type(lo, jnp.float32)


def top_p_threshold(weights: jax.Array, top_p, *, num_candidates: int = 64, bracket_size: int = 128,
                    max_bisection_steps: int = 64, method: str = "auto") -> jax.Array:
  """Exact nucleus threshold without sorting the vocabulary.

  For non-negative weights w (unnormalised probabilities) of a row with total mass Z, let
  f(t) = [Σ_v w_v·1(w_v >= t) >= top_p·Z]. f is monotone (true for small t), and the nucleus — the smallest
  set closed under ties with mass >= top_p — is {v : w_v >= t*} with t* = max{t : f(t)}, which is one of the
  w_v. This equals the sort-based definition: sort descending, k = first index whose cumulative mass reaches
  top_p·Z, keep every w >= w_(k).

  Algorithm (per row, vectorised):
    1. candidates c = top_k(w, num_candidates) with cumulative sums S; if S reaches top_p·Z, t* = c[k].
    2. otherwise bisection on t over [min w>0, c_last] with the invariant f(lo) and not f(hi), each step one
       fused pass computing Σ w·1(w>=mid) and #{w>=mid}, until the bracket [lo, hi) holds at most
       ``bracket_size`` tokens (or cannot shrink: lo and hi adjacent floats, all bracket tokens tie).
    3. the bracket's tokens are the top ``bracket_size`` of {w < hi}; the cumulative mass mass(w>=hi) + their
       cumsum crosses top_p·Z at t*.
  Cost: one or two ``top_k`` plus ~log2(V / bracket_size) passes over [N, V], versus an O(V log V) sort.
  Exact up to float32 rounding of the mass sums (a boundary whose cumulative mass is within ~1e-6 of
  top_p·Z may resolve either way, as for any float implementation).

  ``method="bits"`` instead bisects t directly over the float32 bit patterns (31 unrolled passes over
  [N, V], no ``top_k``): exact as well, and faster for small vocabularies where XLA:CPU's ``top_k`` costs
  far more than a pass. ``"auto"`` (default) uses it when V <= 2048, the candidate algorithm otherwise.

  Args:
    weights: f32[N, V] non-negative, at least one positive per row.
    top_p: scalar or f32[N] in (0, 1] (may be traced).
    num_candidates: static size of the fast candidate set.
    bracket_size: static size of the final exact extraction.
    max_bisection_steps: static cap on bisection steps (float bisection needs < 64 even for denormals).
    method: static, "auto" | "candidates" | "bits" (see above).

  Returns:
    f32[N, 1] threshold t*; keep(v) = weights_v >= t*.
  """
  chex.assert_rank(weights, 2)
  w = weights.astype(jnp.float32)
  n, v = w.shape
  kc = min(num_candidates, v)
  kb = min(bracket_size, v)
  total = jnp.sum(w, axis=-1)
  target = jnp.broadcast_to(jnp.asarray(top_p, jnp.float32), (n,)) * total  # [N]
  if method not in ("auto", "candidates", "bits"):
    raise ValueError(f"method must be 'auto', 'candidates' or 'bits', got {method!r}")
  if method == "bits" or (method == "auto" and v <= _BIT_BISECTION_MAX_VOCAB):
    return jnp.where(target >= total, 0.0, _top_p_threshold_bits(w, target))[:, None]

  cand = jax.lax.top_k(w, kc)[0]  # [N, kc] descending
  csum = jnp.cumsum(cand, axis=-1)
  reach = csum >= target[:, None]
  found = reach[:, -1]
  idx = jnp.minimum(_first_true(reach), kc - 1)
  thr_fast = jnp.take_along_axis(cand, idx[:, None], axis=-1)[:, 0]
  if kc == v:
    return jnp.where(target >= total, 0.0, thr_fast)[:, None]

  def slow(_):
    c_last = cand[:, -1]
    mass_at = lambda t: jnp.sum(jnp.where(w >= t[:, None], w, 0.0), axis=-1)
    count_at = lambda t: jnp.sum(w >= t[:, None], axis=-1, dtype=jnp.int32)
    # Ties with c_last beyond the candidates can make f(c_last) true: then t* = c_last.
    m_last = mass_at(c_last)
    tie_case = m_last >= target
    lo = jnp.min(jnp.where(w > 0, w, jnp.inf), axis=-1)
    lo = jnp.minimum(lo, c_last)
    hi = c_last
    c_lo = count_at(lo)
    c_hi = count_at(hi)

    def active(s):
      lo, hi, c_lo, c_hi, _, _ = s
      mid = lo + (hi - lo) * 0.5
      return (c_lo - c_hi > kb) & (mid > lo) & (mid < hi) & ~found & ~tie_case

    def cond(s):
      return (s[-1] < max_bisection_steps) & jnp.any(active(s))

    def body(s):
      lo, hi, c_lo, c_hi, m_hi, it = s
      act = active(s)
      mid = lo + (hi - lo) * 0.5
      sel = w >= mid[:, None]
      m_mid = jnp.sum(jnp.where(sel, w, 0.0), axis=-1)
      c_mid = jnp.sum(sel, axis=-1, dtype=jnp.int32)
      ok = m_mid >= target
      lo = jnp.where(act & ok, mid, lo)
      c_lo = jnp.where(act & ok, c_mid, c_lo)
      hi = jnp.where(act & ~ok, mid, hi)
      c_hi = jnp.where(act & ~ok, c_mid, c_hi)
      m_hi = jnp.where(act & ~ok, m_mid, m_hi)
      return lo, hi, c_lo, c_hi, m_hi, it + 1

    lo, hi, _, _, m_hi, _ = jax.lax.while_loop(cond, body, (lo, hi, c_lo, c_hi, m_last, jnp.int32(0)))
    below = jax.lax.top_k(jnp.where(w < hi[:, None], w, -1.0), kb)[0]  # [N, kb] descending
    cum = m_hi[:, None] + jnp.cumsum(jnp.maximum(below, 0.0), axis=-1)
    j = _first_true(cum >= target[:, None])
    at_j = jnp.take_along_axis(below, jnp.minimum(j, kb - 1)[:, None], axis=-1)[:, 0]
    thr_br = jnp.where((j < kb) & (at_j >= lo), at_j, lo)
    thr = jnp.where(tie_case, c_last, thr_br)
    return jnp.where(found, thr_fast, thr)

  thr = jax.lax.cond(jnp.all(found), lambda _: thr_fast, slow, None)
  # top_p = 1 keeps every token (float rounding of the mass sums must not drop a tiny tail).
  return jnp.where(target >= total, 0.0, thr)[:, None]


def filtered_weights(logits: jax.Array, *, temperature=1.0, top_k: int = 0, top_p=1.0, min_p=0.0,
                     use_top_p: bool = True, use_min_p: bool = True) -> jax.Array:
  """Unnormalised sampling distribution after temperature, top-k, top-p and min-p (module docstring).

  w_v = exp(logits_v / T - max_u logits_u / T) · keep(v). Normalise by its row sum to get q.

  Args:
    logits: [N, V] raw logits.
    temperature: scalar > 0 (traced ok).
    top_k: static int; 0 disables.
    top_p: scalar in (0, 1] (traced ok); applied when ``use_top_p`` (static).
    min_p: scalar in [0, 1] (traced ok); applied when ``use_min_p`` (static).

  Returns:
    f32[N, V] non-negative weights; the row maximum is always kept (so every row has positive mass).
  """
  chex.assert_rank(logits, 2)
  x = apply_temperature(logits, temperature)
  x = x - jnp.max(x, axis=-1, keepdims=True)
  w = jnp.exp(x)
  if top_k > 0 and top_k < logits.shape[-1]:
    w = jnp.where(top_k_mask(x, top_k), w, 0.0)
  if use_top_p:
    thr = top_p_threshold(w, top_p)
    w = jnp.where(w >= thr, w, 0.0)
  if use_min_p:
    # max w = exp(0) = 1 (the argmax always survives top-k and top-p).
    w = jnp.where(w >= jnp.asarray(min_p, jnp.float32), w, 0.0)
  return w


def filtered_log_probs(logits: jax.Array, *, temperature=1.0, top_k: int = 0, top_p=1.0,
                       min_p=0.0) -> jax.Array:
  """log q(v) of the filtered sampling distribution (-inf for removed tokens). logits: [N, V] → f32[N, V]."""
  w = filtered_weights(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
  return jnp.log(w) - jnp.log(jnp.sum(w, axis=-1, keepdims=True))


def sample_inverse_cdf(weights: jax.Array, uniforms: jax.Array, block: int = 128) -> jax.Array:
  """Draws v with probability w_v / Σ w: the first v whose cumulative weight exceeds u·Σ w.

  Two-level blocked cumulative sums (per block of ``block`` tokens, then inside the chosen block) keep the
  cost O(V). Zero-weight tokens are never returned.

  Args:
    weights: f32[N, V] non-negative with a positive entry per row.
    uniforms: f32[N] in [0, 1).

  Returns:
    int32[N] token ids.
  """
  chex.assert_rank(weights, 2)
  n, v = weights.shape
  nb = -(-v // block)
  w = jnp.pad(weights, ((0, 0), (0, nb * block - v))).reshape(n, nb, block)
  bsum = jnp.sum(w, axis=-1)  # [N, nb]
  bcum = jnp.cumsum(bsum, axis=-1)
  target = uniforms.astype(jnp.float32) * bcum[:, -1]
  b = _first_true(bcum > target[:, None])
  last_pos_block = jnp.max(jnp.where(bsum > 0, jnp.arange(nb), -1), axis=-1)
  b = jnp.where(b >= nb, last_pos_block, b)
  excl = jnp.take_along_axis(bcum - bsum, b[:, None], axis=-1)[:, 0]
  inner = jnp.take_along_axis(w, b[:, None, None], axis=1)[:, 0]  # [N, block]
  rem = jnp.maximum(target - excl, 0.0)
  icum = jnp.cumsum(inner, axis=-1)
  j = _first_true(icum > rem[:, None])
  last_pos = jnp.max(jnp.where(inner > 0, jnp.arange(block), -1), axis=-1)
  j = jnp.where(j >= block, last_pos, j)
  return (b * block + j).astype(jnp.int32)


def row_keys(key: chex.PRNGKey, stream_ids: jax.Array) -> jax.Array:
  """Per-row PRNG streams: key_r = fold_in(key, stream_ids[r]). stream_ids: int[N] → keys [N]."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(stream_ids, jnp.uint32))


def sample_tokens(logits: jax.Array, keys: jax.Array, step, *, temperature=1.0, top_k: int = 0, top_p=1.0,
                  min_p=0.0, greedy: bool = False, use_top_p: bool = True, use_min_p: bool = True):
  """One sampling step for N rows.

  Row r draws u_r ~ U[0, 1) from fold_in(keys[r], step) and returns the inverse-CDF token of q (or argmax
  when ``greedy``).

  Args:
    logits: [N, V] next-token logits.
    keys: [N] per-row keys (``row_keys``).
    step: int scalar (traced ok), the decode step index.
    temperature, top_k, top_p, min_p, use_top_p, use_min_p: see ``filtered_weights``.
    greedy: static; argmax decoding (the sampling log-prob is then 0).

  Returns:
    (tokens int32[N], log q(token) f32[N]).
  """
  chex.assert_rank(logits, 2)
  if greedy:
    # argmax as first index of the max: two plain reductions, which XLA:CPU vectorises (jnp.argmax's
    # variadic reduce is much slower there; docs/benchmarks.md). Same result as torch.argmax for finite logits.
    is_max = logits == jnp.max(logits, axis=-1, keepdims=True)
    v = logits.shape[-1]
    tok = jnp.min(jnp.where(is_max, jnp.arange(v, dtype=jnp.int32), v - 1), axis=-1)  # (v - 1: NaN rows)
    return tok, jnp.zeros(tok.shape, jnp.float32)
  w = filtered_weights(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                       use_top_p=use_top_p, use_min_p=use_min_p)
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, step), (), jnp.float32))(keys)
  tok = sample_inverse_cdf(w, u)
  w_tok = jnp.take_along_axis(w, tok[:, None], axis=-1)[:, 0]
  return tok, jnp.log(w_tok) - jnp.log(jnp.sum(w, axis=-1))


# ----------------------------------------------------------------------------------------------------------
# Generation.


@flax.struct.dataclass
class GenerateOutput:
  """Result of ``generate`` for R = B·num_samples rows (row r = prompt r // G, sample r % G).

  Attributes:
    tokens: int32[R, max_new_tokens] generated ids, ``pad_token_id`` after the end.
    mask: bool[R, max_new_tokens] True on generated tokens (including the stop token).
    lengths: int32[R] number of generated tokens (= mask.sum(-1)).
    finish_reason: int32[R] ``FINISH_STOP`` (a stop token was generated) or ``FINISH_LENGTH``.
    logprobs: f32[R, max_new_tokens] log π(token | prefix) at temperature 1 (PPO's old log-probs), 0 on padding.
    sampling_logprobs: f32[R, max_new_tokens] log q(token | prefix) under the filtered sampling
      distribution (0 for greedy), or None unless requested.
    prompt_index: int32[R] the prompt each row answers.
  """
  tokens: jax.Array
  mask: jax.Array
  lengths: jax.Array
  finish_reason: jax.Array
  logprobs: jax.Array
  sampling_logprobs: Optional[jax.Array]
  prompt_index: jax.Array


@dataclasses.dataclass(frozen=True)
class _Static:
  """Hashable static description of a compiled decode."""
  config: qwen2.Qwen2Config
  gen_len: int
  greedy: bool
  top_k: int
  use_top_p: bool
  use_min_p: bool
  sampling_logprobs: bool
  slice_weights_once: bool = True


# Stacked layer weights up to this size are prepared (``prepare_params``) once per decode (a temporary copy);
# larger stacked models slice inside the step (per-step copies, but no second copy of the weights in memory)
# unless the caller passes prepared params.
_SLICE_WEIGHTS_ONCE_MAX_BYTES = 64 << 20


@jax.jit
def prepare_params(params: dict) -> dict:
  """The decode layout of Qwen2 params: one weight dict per layer (``qwen2.unstack_layers``).

  ``generate`` accepts either layout and gives the same tokens; prepared params skip the per-step slicing
  of stacked weights (faster per decode step; measured in docs/benchmarks.md). Costs one copy of the layer weights
  (make it once per policy update, e.g. at the start of a rollout). params: the training (stacked) layout or an
  already prepared one (same values). Works on sharded params (the sharded training loop uses it).
  """
  return qwen2.unstack_layers(params)


@functools.partial(jax.jit, static_argnames=("config", "cache_len", "num_samples"))
def _prefill(params, tokens, mask, *, config, cache_len, num_samples):
  """Prefill [B, P] left-padded prompts; returns the cache repeated G times and last-position logits."""
  _TRACE_COUNTS["prefill"] += 1
  b, _ = tokens.shape
  cache = qwen2.init_cache(config, b, cache_len)
  hidden, cache = qwen2.hidden_states(params, config, tokens, attention_mask=mask, cache=cache)
  logits = qwen2.lm_logits(params, config, hidden[:, -1])
  if num_samples > 1:
    rep = lambda x, axis: jnp.repeat(x, num_samples, axis=axis, total_repeat_length=x.shape[axis] * num_samples)
    cache = cache.replace(k=rep(cache.k, 1), v=rep(cache.v, 1), mask=rep(cache.mask, 0))
    logits = rep(logits, 0)
  return qwen2.unstack_cache(cache), logits


def _log_softmax_at(logits, tok):
  """log softmax(logits)[tok] without materialising the full log-softmax. logits [N, V], tok [N]."""
  logits = logits.astype(jnp.float32)
  return jnp.take_along_axis(logits, tok[:, None], axis=-1)[:, 0] - jax.nn.logsumexp(logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("static",), donate_argnames=("cache",))
def _decode(params, cache, logits, keys, max_new_tokens, temperature, top_p, min_p, stop_ids, pad_id, *,
            static):
  """The decode loop (see ``generate``). ``cache`` is donated and updated in place."""
  _TRACE_COUNTS["decode"] += 1
  config = static.config
  n = logits.shape[0]
  t_max = static.gen_len
  sample = functools.partial(sample_tokens, temperature=temperature, top_k=static.top_k, top_p=top_p,
                             min_p=min_p, greedy=static.greedy, use_top_p=static.use_top_p,
                             use_min_p=static.use_min_p)

  def emit(step, logits, bufs, done, stopped):
    tok, slogp = sample(logits, keys, step)
    live = ~done
    tok = jnp.where(live, tok, pad_id)
    lp = jnp.where(live, _log_softmax_at(logits, tok), 0.0)
    slogp = jnp.where(live, slogp, 0.0)
    toks, lps, slps = bufs
    col = lambda buf, x: jax.lax.dynamic_update_slice(buf, x[:, None].astype(buf.dtype), (0, step))
    bufs = (col(toks, tok), col(lps, lp), col(slps, slogp) if slps is not None else None)
    is_stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1) & live
    return tok, bufs, done | is_stop, stopped | is_stop, live

  bufs = (jnp.full((n, t_max), pad_id, jnp.int32), jnp.zeros((n, t_max), jnp.float32),
          jnp.zeros((n, t_max), jnp.float32) if static.sampling_logprobs else None)
  done = jnp.zeros((n,), bool)
  tok, bufs, done, stopped, live = emit(0, logits, bufs, done, done)
  lengths = live.astype(jnp.int32)

  def cond(s):
    step, _, _, done, _, _, _ = s
    return (step < max_new_tokens) & ~jnp.all(done)

  # Per-layer weights for the unrolled decode step, sliced once here rather than copied every step; this
  # costs one extra copy of the layer weights, so only below a size limit (``_Static.slice_weights_once``).
  if static.slice_weights_once:
    params = qwen2.unstack_layers(params)

  def body(s):
    step, tok, bufs, done, stopped, lengths, cache = s
    # One token per row through the model; finished rows write a masked slot into the donated per-layer
    # cache buffers (in place: only the new slot is written).
    logits, cache = qwen2.forward(params, config, tok[:, None], attention_mask=~done[:, None], cache=cache)
    logits = logits[:, 0]
    tok, bufs, done, stopped, live = emit(step, logits, bufs, done, stopped)
    return step + 1, tok, bufs, done, stopped, lengths + live.astype(jnp.int32), cache

  state = (jnp.int32(1), tok, bufs, done, stopped, lengths, cache)
  _, _, bufs, _, stopped, lengths, cache = jax.lax.while_loop(cond, body, state)
  return bufs, lengths, stopped, cache


def _check_scalar(name, value, lo, hi, lo_open, hi_open=False):
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"{name} must be a number, got {type(value).__name__}")
  value = float(value)
  bad_lo = value <= lo if lo_open else value < lo
  bad_hi = value >= hi if hi_open else value > hi
  if not math.isfinite(value) or bad_lo or bad_hi:
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value}")
  return value


def generate(params, config: qwen2.Qwen2Config, prompt_tokens, prompt_mask, key: chex.PRNGKey, *,
             max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             min_p: float = 0.0, greedy: bool = False, stop_token_ids: Optional[Sequence[int]] = None,
             num_samples: int = 1, pad_token_id: Optional[int] = None, return_sampling_logprobs: bool = False,
             stream_ids=None) -> GenerateOutput:
  """Samples ``num_samples`` continuations of each left-padded prompt.

  y_t ~ q(· | prompt, y_<t) (the filtered distribution of the module docstring), until a stop token
  (included in the response) or ``max_new_tokens``. One jitted prefill computes the prompt's KV cache
  once; it is repeated G = num_samples times along the batch, then a jitted ``lax.while_loop`` decodes all
  B·G rows and exits as soon as every row has finished.

  Args:
    params: Qwen2 params pytree (may be sharded; any param dtype), in the training layout or the decode
      layout of ``prepare_params`` (faster for large models: pass it when sampling many batches).
    config: ``Qwen2Config`` (static; ``config.dtype`` is the compute dtype, e.g. bfloat16).
    prompt_tokens: int[B, P] prompts, LEFT-padded.
    prompt_mask: bool/int[B, P], 1 on real tokens; each row must be zeros then ones with >= 1 real token.
    key: PRNG key; the same key gives the same output.
    max_new_tokens: number of tokens to generate at most (>= 1); prompt length + max_new_tokens must not
      exceed ``config.max_position_embeddings``.
    temperature: T >= 0 (default 1.0); 0 means greedy.
    top_p: nucleus mass in (0, 1] (default 1.0 = off).
    top_k: keep the k most likely tokens (default 0 = off). Static: each value compiles once.
    min_p: in [0, 1] (default 0.0 = off).
    greedy: argmax decoding (ignores temperature / filters).
    stop_token_ids: ids that end a row; default ``config.eos_token_id``; ``()`` disables stopping.
    num_samples: G responses per prompt (default 1); rows are prompt-major (row = b·G + g).
    pad_token_id: id written after a row ends; default ``config.pad_token_id`` or 0.
    return_sampling_logprobs: also return log q(y_t) under the sampling distribution.
    stream_ids: optional int[B·G] identity of each row's PRNG stream (default arange(B·G)); give global
      ids to make rows independent of how prompts are batched.

  Returns:
    ``GenerateOutput`` with arrays of R = B·G rows and ``max_new_tokens`` columns.

  Raises:
    ValueError / TypeError: on bad shapes, dtypes, padding or out-of-range arguments (the message names the
      argument).
  """
  if not isinstance(config, qwen2.Qwen2Config):
    raise TypeError(f"config must be a Qwen2Config, got {type(config).__name__}")
  tokens = np.asarray(prompt_tokens)
  mask = np.asarray(prompt_mask)
  if tokens.ndim != 2:
    raise ValueError(f"prompt_tokens must have shape [B, P], got shape {tokens.shape}")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"prompt_tokens must be integers, got {tokens.dtype}")
  if mask.shape != tokens.shape:
    raise ValueError(f"prompt_mask shape {mask.shape} does not match prompt_tokens shape {tokens.shape}")
  if mask.dtype != bool:
    if not np.all((mask == 0) | (mask == 1)):
      raise ValueError("prompt_mask must be boolean or 0/1")
    mask = mask.astype(bool)
  b, p = tokens.shape
  if b == 0 or p == 0:
    raise ValueError(f"prompt_tokens must be non-empty, got shape {tokens.shape}")
  if not mask[:, -1].all() or np.any(mask[:, :-1] & ~mask[:, 1:]):
    raise ValueError("prompt_mask must be left-padded (zeros then ones) with at least one real token per row")
  if np.any((tokens < 0) | (tokens >= config.vocab_size)):
    raise ValueError(f"prompt_tokens contain ids outside [0, vocab_size={config.vocab_size})")
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
  prompt_len = int(mask.sum(-1).max())
  if prompt_len + max_new_tokens > config.max_position_embeddings:
    raise ValueError(f"longest prompt ({prompt_len}) + max_new_tokens ({max_new_tokens}) exceeds "
                     f"max_position_embeddings={config.max_position_embeddings}")
  temperature = _check_scalar("temperature", temperature, 0.0, math.inf, lo_open=False, hi_open=True)
  top_p = _check_scalar("top_p", top_p, 0.0, 1.0, lo_open=True)
  min_p = _check_scalar("min_p", min_p, 0.0, 1.0, lo_open=False)
  if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
    raise ValueError(f"top_k must be a non-negative int, got {top_k!r}")
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
  greedy = bool(greedy) or temperature == 0.0
  stop = config.eos_token_ids if stop_token_ids is None else tuple(int(t) for t in stop_token_ids)
  if any(t < 0 or t >= config.vocab_size for t in stop):
    raise ValueError(f"stop_token_ids {stop} must be in [0, vocab_size={config.vocab_size})")
  if pad_token_id is None:
    pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
  rows = b * num_samples
  if stream_ids is None:
    stream_ids = np.arange(rows)
  stream_ids = np.asarray(stream_ids)
  if stream_ids.shape != (rows,) or not np.issubdtype(stream_ids.dtype, np.integer):
    raise ValueError(f"stream_ids must be int[{rows}] (B * num_samples), got {stream_ids.dtype}{stream_ids.shape}")

  # Pad to buckets so new batches of similar lengths reuse the compiled code.
  p_bucket = bucket_length(p)
  gen_len = bucket_length(max_new_tokens)
  tokens = np.pad(tokens.astype(np.int32), ((0, 0), (p_bucket - p, 0)), constant_values=pad_token_id)
  mask = np.pad(mask, ((0, 0), (p_bucket - p, 0)))
  stop_arr = np.full((max(8, 1 << (max(len(stop), 1) - 1).bit_length()),), -1, np.int32)
  stop_arr[:len(stop)] = stop

  cache, logits = _prefill(params, jnp.asarray(tokens), jnp.asarray(mask), config=config,
                           cache_len=p_bucket + gen_len, num_samples=int(num_samples))
  layer_bytes = sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params["layers"]))
  static = _Static(config=config, gen_len=gen_len, greedy=greedy, top_k=int(top_k), use_top_p=top_p < 1.0,
                   use_min_p=min_p > 0.0, sampling_logprobs=bool(return_sampling_logprobs),
                   slice_weights_once=layer_bytes <= _SLICE_WEIGHTS_ONCE_MAX_BYTES)
  keys = row_keys(key, stream_ids)
  (toks, lps, slps), lengths, stopped, _ = _decode(
      params, cache, logits, keys, jnp.int32(max_new_tokens), jnp.float32(temperature if not greedy else 1.0),
      jnp.float32(top_p), jnp.float32(min_p), jnp.asarray(stop_arr), jnp.int32(pad_token_id), static=static)
  toks, lps = toks[:, :max_new_tokens], lps[:, :max_new_tokens]
  return GenerateOutput(
      tokens=toks,
      mask=jnp.arange(max_new_tokens)[None, :] < lengths[:, None],
      lengths=lengths,
      finish_reason=jnp.where(stopped, FINISH_STOP, FINISH_LENGTH).astype(jnp.int32),
      logprobs=lps,
      sampling_logprobs=slps[:, :max_new_tokens] if slps is not None else None,
      prompt_index=jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_samples),
  )


# ----------------------------------------------------------------------------------------------------------
# The sampler adapter shared by the trainer and the evaluation.


def left_pad(seqs: Sequence[Sequence[int]], length: int, pad_id: int, *,
             what: str = "max_prompt_len") -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to ``length`` → (int32[N, length], bool[N, length]) as ``generate`` expects.

  A sequence longer than ``length`` raises a ValueError naming ``what`` (the setting that fixes ``length``).
  """
  tokens = np.full((len(seqs), length), pad_id, np.int32)
  mask = np.zeros((len(seqs), length), bool)
  for i, s in enumerate(seqs):
    if len(s) > length:
      raise ValueError(f"prompt {i} has {len(s)} tokens, more than {what}={length}")
    if len(s):
      tokens[i, length - len(s):] = s
      mask[i, length - len(s):] = True
  return tokens, mask


def make_sampler(config: qwen2.Qwen2Config, *, num_samples: int, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                 stop_token_ids: Optional[Sequence[int]] = None, pad_token_id: Optional[int] = None,
                 return_sampling_logprobs: bool = False):
  """``sample(params, prompt_tokens, prompt_mask, key, stream_ids=None) -> GenerateOutput`` with host arrays.

  :func:`generate` with fixed settings (G = ``num_samples`` responses per left-padded prompt), its result
  fetched to numpy (``jax.device_get``) for the host-side decoding and grading that follows. The trainer's
  rollout and the held-out evaluation both sample through it.
  """
  if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")

  def sample(params, prompt_tokens, prompt_mask, key, stream_ids=None) -> GenerateOutput:
    out = generate(params, config, prompt_tokens, prompt_mask, key, max_new_tokens=max_new_tokens,
                   temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, stop_token_ids=stop_token_ids,
                   num_samples=num_samples, pad_token_id=pad_token_id, stream_ids=stream_ids,
                   return_sampling_logprobs=return_sampling_logprobs)
    return jax.device_get(out)

  return sample
