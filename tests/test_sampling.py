"""Tests of ngrpo_jax.sampling against numpy references and transformers' generate."""
import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ngrpo_jax import sampling
from ngrpo_jax.models import hf_checkpoint
from ngrpo_jax.models import qwen2
from tests import tiny_checkpoints

# ----------------------------------------------------------------------------------------------------------
# numpy references (sort-based, float64).


def _np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np_top_p_keep(p, top_p):
  """Sort descending, k = first index with cumulative mass >= top_p, keep every p >= p_(k) (ties kept)."""
  keep = np.zeros(p.shape, bool)
  for r in range(p.shape[0]):
    order = np.argsort(-p[r], kind="stable")
    csum = np.cumsum(p[r][order])
    k = int(np.searchsorted(csum, top_p * csum[-1] * (1 - 1e-12)))
    keep[r] = p[r] >= p[r][order[min(k, len(order) - 1)]]
  return keep


def _np_filtered(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
  """Reference q = temperature → top-k → top-p (renormalised) → min-p, as in transformers' warpers."""
  x = np.asarray(logits, np.float64) / temperature
  keep = np.ones(x.shape, bool)
  if top_k:
    kth = np.sort(x, -1)[:, -top_k][:, None]
    keep &= x >= kth
  p = np.where(keep, _np_softmax(np.where(keep, x, -np.inf)), 0.0)
  if top_p < 1.0:
    keep &= _np_top_p_keep(p, top_p)
    p = np.where(keep, p, 0.0)
  if min_p > 0.0:
    keep &= p >= min_p * p.max(-1, keepdims=True)
    p = np.where(keep, p, 0.0)
  return p / p.sum(-1, keepdims=True)


def _chi_square_pvalue(counts, probs):
  """Pearson chi-square goodness of fit; bins with expected < 5 are merged. p = Q(df/2, χ²/2)."""
  n = counts.sum()
  expected = probs * n
  big = expected >= 5
  obs = np.concatenate([counts[big], [counts[~big].sum()]])
  exp = np.concatenate([expected[big], [expected[~big].sum()]])
  if exp[-1] == 0:
    obs, exp = obs[:-1], exp[:-1]
  chi2 = float(((obs - exp) ** 2 / exp).sum())
  df = len(obs) - 1
  if df == 0:
    return 1.0
  return float(jax.scipy.special.gammaincc(df / 2.0, chi2 / 2.0))


# ----------------------------------------------------------------------------------------------------------
# Filters.


def _mass_far_from_boundary(p, top_p, tol=2e-6):
  """Rows whose cumulative mass just before and at the nucleus boundary is not within tol of top_p (float32
  rounding then cannot move the boundary)."""
  csum = np.cumsum(-np.sort(-p, -1), -1) / p.sum(-1, keepdims=True)
  k = np.minimum((csum < top_p).sum(-1), p.shape[-1] - 1)
  rows = np.arange(len(p))
  before = np.where(k > 0, csum[rows, np.maximum(k - 1, 0)], -1.0)
  return (np.abs(before - top_p) > tol) & (np.abs(csum[rows, k] - top_p) > tol)


@pytest.mark.parametrize("method", ["candidates", "bits"])
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95, 0.999, 1.0])
def test_top_p_threshold_matches_sort_reference(top_p, method):
  rng = np.random.RandomState(0)
  v = 3000
  scales = np.array([0.02, 0.5, 1.0, 3.0, 8.0, 20.0])  # near-uniform (bisection path) ... peaked (fast path)
  logits = rng.randn(len(scales) * 4, v) * np.repeat(scales, 4)[:, None]
  w = np.exp(logits - logits.max(-1, keepdims=True)).astype(np.float32)
  thr = np.asarray(jax.jit(functools.partial(sampling.top_p_threshold, method=method))(jnp.asarray(w), top_p))
  keep = w >= thr
  ref = _np_top_p_keep(w.astype(np.float64), top_p)
  if top_p == 1.0:
    assert keep.all()
    return
  rows = _mass_far_from_boundary(w.astype(np.float64), top_p)
  assert rows.sum() >= len(rows) // 2
  np.testing.assert_array_equal(keep[rows], ref[rows])


@pytest.mark.parametrize("method", ["candidates", "bits"])
def test_top_p_threshold_ties_and_minimal_set(method):
  # Dyadic probabilities: float32 sums are exact, so ties at the boundary are decided exactly.
  v = 1024
  rows = []
  rows.append(np.full(v, 1.0))  # all tied: everything kept for any top_p
  r = np.full(v, 1.0)
  r[:10] = 64.0  # 10 big tokens then 1014 tied small ones (more than the bracket size)
  rows.append(r)
  r = np.ones(v)
  r[::2] = 2.0  # two tie groups, crossing inside the first group or second
  rows.append(r)
  r = np.full(v, 0.0)
  r[:300] = 4.0  # zero-weight tokens (removed by an earlier filter) and 300 ties
  r[300:310] = 1.0
  rows.append(r)
  w = np.stack(rows).astype(np.float32)
  for top_p in [0.1, 0.37, 0.5, 0.62, 0.9, 0.999, 1.0]:
    thr = np.asarray(sampling.top_p_threshold(jnp.asarray(w), top_p, method=method))
    keep = w >= thr
    ref = _np_top_p_keep(w.astype(np.float64), top_p)
    np.testing.assert_array_equal(keep | (w == 0), ref | (w == 0), err_msg=f"top_p={top_p}")
    # Minimal-set property: mass >= top_p, and dropping the smallest kept tie group falls below top_p.
    for r in range(len(w)):
      wr = w[r].astype(np.float64)
      kept = keep[r] & (wr > 0)
      mass = wr[kept].sum() / wr.sum()
      assert mass >= top_p - 1e-12
      smallest = wr[kept].min()
      assert (wr[kept & (wr > smallest)].sum() / wr.sum()) < top_p


@pytest.mark.parametrize("method", ["candidates", "bits"])
def test_top_p_threshold_candidate_ties_beyond_fast_set(method):
  # The candidate set's last value ties with many tokens outside it: t* is that value.
  w = np.full((1, 500), 1.0, np.float32)
  w[0, :63] = 2.0
  for top_p in [0.3, 0.5, 0.9]:
    thr = np.asarray(sampling.top_p_threshold(jnp.asarray(w), top_p, method=method))
    np.testing.assert_array_equal(w >= thr, _np_top_p_keep(w.astype(np.float64), top_p))


def test_top_k_and_min_p_filters_match_reference():
  rng = np.random.RandomState(1)
  logits = rng.randn(8, 100).astype(np.float32) * 2
  logits[0, :5] = 3.0  # ties at the k-th value
  for kwargs in [dict(top_k=5), dict(top_k=1), dict(min_p=0.2), dict(temperature=0.5, top_k=20, min_p=0.05),
                 dict(temperature=1.3, top_k=50, top_p=0.8, min_p=0.01)]:
    lq = np.asarray(jax.jit(lambda l, kw=kwargs: sampling.filtered_log_probs(l, **kw))(jnp.asarray(logits)))
    ref = _np_filtered(logits, **kwargs)
    np.testing.assert_array_equal(np.isfinite(lq), ref > 0, err_msg=str(kwargs))
    np.testing.assert_allclose(np.exp(lq), ref, atol=1e-6, err_msg=str(kwargs))


def test_inverse_cdf_never_returns_zero_weight_tokens():
  rng = np.random.RandomState(2)
  w = (rng.rand(64, 1000) < 0.01) * rng.rand(64, 1000)
  w[:, 999] = 1e-30  # a tiny positive weight in the last (padded) block
  u = jnp.asarray(np.concatenate([rng.rand(62), [0.0, 1.0 - 2 ** -24]]), jnp.float32)
  tok = np.asarray(sampling.sample_inverse_cdf(jnp.asarray(w, jnp.float32), u))
  assert np.all(w[np.arange(64), tok] > 0)


@pytest.mark.parametrize("kwargs", [
    dict(temperature=0.7),
    dict(temperature=1.0, top_k=7),
    dict(temperature=0.6, top_p=0.95),
    dict(temperature=1.2, top_p=0.5, min_p=0.02),
    dict(temperature=1.0, min_p=0.1),
])
def test_sampling_frequencies_chi_square(kwargs):
  rng = np.random.RandomState(3)
  v, n = 300, 20000
  # One flat row (top-p takes the bisection path) and one peaked row (candidate fast path).
  base = np.stack([rng.randn(v) * 0.3, rng.randn(v) * 2.5]).astype(np.float32)
  keys = sampling.row_keys(jax.random.key(42), jnp.arange(n))
  fn = jax.jit(lambda l: sampling.sample_tokens(l, keys, 0, **kwargs))
  for row in range(2):
    logits = jnp.broadcast_to(jnp.asarray(base[row]), (n, v))
    tok, logq = fn(logits)
    tok, logq = np.asarray(tok), np.asarray(logq)
    q = _np_filtered(base[row:row + 1], **kwargs)[0]
    assert np.all(q[tok] > 0), "sampled a filtered-out token"
    np.testing.assert_allclose(logq, np.log(q[tok]), atol=2e-5)
    pvalue = _chi_square_pvalue(np.bincount(tok, minlength=v), q)
    assert pvalue > 1e-3, (kwargs, row, pvalue)


def test_chi_square_helper_rejects_wrong_distribution():
  rng = np.random.RandomState(0)
  p = np.full(20, 0.05)
  counts = np.bincount(rng.choice(20, 5000, p=p), minlength=20)
  assert _chi_square_pvalue(counts, p) > 1e-3
  skew = p.copy()
  skew[0], skew[1] = 0.08, 0.02
  assert _chi_square_pvalue(counts, skew) < 1e-3


def test_bucket_length():
  assert [sampling.bucket_length(n) for n in (1, 16, 17, 100, 512, 513, 1500)] == [16, 16, 32, 128, 512, 1024,
                                                                                     1536]


# ----------------------------------------------------------------------------------------------------------
# generate on a tiny random checkpoint.

PAD = 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path_factory.mktemp("sampling"), seed=3, with_tokenizer=False)
  config, params = hf_checkpoint.load_pretrained(path)
  torch_model = tiny_checkpoints.make_tiny_model(seed=3)
  return config, params, torch_model


def _prompts(vocab, lengths, width=None, seed=0):
  rng = np.random.RandomState(seed)
  width = width or max(lengths)
  tokens = np.full((len(lengths), width), PAD, np.int32)
  mask = np.zeros((len(lengths), width), bool)
  for i, n in enumerate(lengths):
    tokens[i, width - n:] = rng.randint(3, vocab, n)
    mask[i, width - n:] = True
  return tokens, mask


def test_decode_loop_updates_the_donated_cache_in_place():
  """The compiled decode loop aliases the donated cache and its temporaries stay well under one cache: each
  step writes only the new slot (no per-step copy of the [L, ...] cache)."""
  config = qwen2.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                             num_attention_heads=4, num_key_value_heads=2)
  n, cache_len, gen_len = 4, 512, 16
  params = jax.eval_shape(lambda: qwen2.init_params(config, jax.random.key(0)))
  cache = jax.eval_shape(lambda: qwen2.unstack_cache(qwen2.init_cache(config, n, cache_len)))
  keys = jax.eval_shape(lambda: sampling.row_keys(jax.random.key(0), jnp.arange(n)))
  f32, i32 = jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)
  static = sampling._Static(config=config, gen_len=gen_len, greedy=False, top_k=0, use_top_p=True,
                            use_min_p=False, sampling_logprobs=False)
  compiled = sampling._decode.lower(
      params, cache, jax.ShapeDtypeStruct((n, config.vocab_size), jnp.float32), keys, i32, f32, f32, f32,
      jax.ShapeDtypeStruct((8,), jnp.int32), i32, static=static).compile()
  memory = compiled.memory_analysis()
  one_cache = sum(k.size * k.dtype.itemsize for k in cache.k)  # bytes of k alone (all layers)
  assert memory.alias_size_in_bytes >= 2 * one_cache
  assert memory.temp_size_in_bytes < one_cache / 2, (memory.temp_size_in_bytes, one_cache)


def test_greedy_matches_transformers_generate(tiny):
  config, params, model = tiny
  tokens, mask = _prompts(config.vocab_size, [4, 11, 7, 1], seed=1)
  max_new = 12
  free = sampling.generate(params, config, tokens, mask, jax.random.key(0), max_new_tokens=max_new, greedy=True,
                           stop_token_ids=())
  free_tokens = np.asarray(free.tokens)
  # Stop tokens that occur mid-sequence in two rows (first occurrence at step 3 of row 0, step 6 of row 2).
  stops = (int(free_tokens[0, 3]), int(free_tokens[2, 6]))
  with torch.no_grad():
    hf = model.generate(torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                        do_sample=False, max_new_tokens=max_new, eos_token_id=list(stops), pad_token_id=PAD)
  hf = hf[:, tokens.shape[1]:].numpy()
  hf = np.pad(hf, ((0, 0), (0, max_new - hf.shape[1])), constant_values=PAD)
  out = sampling.generate(params, config, tokens, mask, jax.random.key(0), max_new_tokens=max_new, greedy=True,
                          stop_token_ids=stops, pad_token_id=PAD)
  np.testing.assert_array_equal(np.asarray(out.tokens), hf)
  # Lengths and finish reasons follow the first stop token.
  for r in range(len(tokens)):
    hits = np.flatnonzero(np.isin(free_tokens[r], stops))
    expected_len = hits[0] + 1 if len(hits) else max_new
    assert int(out.lengths[r]) == expected_len
    assert int(out.finish_reason[r]) == (sampling.FINISH_STOP if len(hits) else sampling.FINISH_LENGTH)
    np.testing.assert_array_equal(np.asarray(out.mask[r]), np.arange(max_new) < expected_len)
  assert np.any(np.asarray(out.finish_reason) == sampling.FINISH_STOP)


@pytest.mark.parametrize("layout", ["prepared", "sliced_per_step"])
def test_weight_layouts_give_the_same_rollout(tiny, layout, monkeypatch):
  """prepare_params (per-layer weights) and the large-model path (stacked weights sliced inside every step)
  sample the same tokens as the default path, with log-probs equal to float32 rounding."""
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [5, 9, 2], seed=7)
  kw = dict(max_new_tokens=12, temperature=0.8, top_p=0.9, num_samples=2, stop_token_ids=(),
            return_sampling_logprobs=True)
  ref = sampling.generate(params, config, tokens, mask, jax.random.key(3), **kw)
  if layout == "prepared":
    prepared = sampling.prepare_params(params)
    assert isinstance(prepared["layers"], tuple) and len(prepared["layers"]) == config.num_hidden_layers
    np.testing.assert_array_equal(prepared["layers"][1]["mlp"]["up_proj"]["kernel"],
                                  params["layers"]["mlp"]["up_proj"]["kernel"][1])
    out = sampling.generate(prepared, config, tokens, mask, jax.random.key(3), **kw)
  else:
    monkeypatch.setattr(sampling, "_SLICE_WEIGHTS_ONCE_MAX_BYTES", 0)
    out = sampling.generate(params, config, tokens, mask, jax.random.key(3), **kw)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.sampling_logprobs), np.asarray(ref.sampling_logprobs), atol=1e-5)


def _full_forward_logprobs(params, config, tokens, mask, out, temperature, top_p):
  seq = np.concatenate([tokens, np.asarray(out.tokens)], axis=1)
  seq_mask = np.concatenate([mask, np.asarray(out.mask)], axis=1)
  logits, _ = qwen2.forward(params, config, jnp.asarray(seq), attention_mask=jnp.asarray(seq_mask))
  p = tokens.shape[1]
  step_logits = np.asarray(logits[:, p - 1:-1], np.float64)  # predicts the generated tokens
  gen = np.asarray(out.tokens)
  logp = jax.nn.log_softmax(step_logits, -1)
  ref = np.take_along_axis(np.asarray(logp), gen[..., None], -1)[..., 0]
  n, t, v = step_logits.shape
  q = _np_filtered(step_logits.reshape(n * t, v), temperature=temperature, top_p=top_p).reshape(n, t, v)
  ref_q = np.log(np.take_along_axis(q, gen[..., None], -1)[..., 0])
  return ref, ref_q


def test_logprobs_equal_full_forward(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [6, 2, 9], seed=2)
  out = sampling.generate(params, config, tokens, mask, jax.random.key(1), max_new_tokens=10, temperature=1.0,
                          top_p=0.9, num_samples=2, return_sampling_logprobs=True, stop_token_ids=())
  tokens, mask = np.repeat(tokens, 2, 0), np.repeat(mask, 2, 0)
  ref, ref_q = _full_forward_logprobs(params, config, tokens, mask, out, 1.0, 0.9)
  m = np.asarray(out.mask)
  assert m.all()
  np.testing.assert_allclose(np.asarray(out.logprobs)[m], ref[m], atol=2e-4)
  np.testing.assert_allclose(np.asarray(out.sampling_logprobs)[m], ref_q[m], atol=2e-4)


def test_deterministic_and_key_dependent(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [5, 8], seed=4)
  kw = dict(max_new_tokens=16, temperature=1.0, stop_token_ids=())
  a = sampling.generate(params, config, tokens, mask, jax.random.key(5), **kw)
  b = sampling.generate(params, config, tokens, mask, jax.random.key(5), **kw)
  c = sampling.generate(params, config, tokens, mask, jax.random.key(6), **kw)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert not np.array_equal(a.tokens, c.tokens)


def test_rows_independent_of_batch_composition(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [6, 6, 6], seed=5)
  kw = dict(max_new_tokens=16, temperature=1.0, stop_token_ids=())
  key = jax.random.key(7)
  ab = sampling.generate(params, config, tokens[[0, 1]], mask[[0, 1]], key, **kw)
  ac = sampling.generate(params, config, tokens[[0, 2]], mask[[0, 2]], key, **kw)
  np.testing.assert_array_equal(ab.tokens[0], ac.tokens[0])
  assert not np.array_equal(ab.tokens[1], ac.tokens[1])
  # With explicit stream ids, a row's output follows its id, not its position in the batch.
  ba = sampling.generate(params, config, tokens[[1, 0]], mask[[1, 0]], key, stream_ids=[1, 0], **kw)
  np.testing.assert_array_equal(ba.tokens[1], ab.tokens[0])
  np.testing.assert_array_equal(ba.tokens[0], ab.tokens[1])


def test_num_samples_equals_repeating_prompts(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [3, 7], seed=6)
  kw = dict(max_new_tokens=16, temperature=1.0, stop_token_ids=())
  key = jax.random.key(8)
  grouped = sampling.generate(params, config, tokens, mask, key, num_samples=3, **kw)
  repeated = sampling.generate(params, config, np.repeat(tokens, 3, 0), np.repeat(mask, 3, 0), key, **kw)
  np.testing.assert_array_equal(grouped.tokens, repeated.tokens)
  np.testing.assert_allclose(grouped.logprobs, repeated.logprobs, atol=1e-5)
  np.testing.assert_array_equal(grouped.prompt_index, [0, 0, 0, 1, 1, 1])
  # The G samples of a prompt differ from each other.
  assert len({tuple(r) for r in np.asarray(grouped.tokens[:3])}) == 3


def test_generate_first_token_chi_square(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [5], seed=7)
  n = 6000
  out = sampling.generate(params, config, tokens, mask, jax.random.key(9), max_new_tokens=1, temperature=0.8,
                          num_samples=n, stop_token_ids=())
  logits, _ = qwen2.forward(params, config, jnp.asarray(tokens), attention_mask=jnp.asarray(mask))
  q = _np_filtered(np.asarray(logits[:, -1]), temperature=0.8)[0]
  counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=config.vocab_size)
  assert _chi_square_pvalue(counts, q) > 1e-3


def test_no_recompile_within_buckets(tiny):
  config, params, _ = tiny
  kw = dict(temperature=1.0, top_p=0.9, stop_token_ids=(2,))
  t1, m1 = _prompts(config.vocab_size, [5, 9], seed=8)
  sampling.generate(params, config, t1, m1, jax.random.key(0), max_new_tokens=20, **kw)
  before = sampling.trace_counts()
  t2, m2 = _prompts(config.vocab_size, [3, 12], seed=9)  # new contents and prompt width, same bucket (16)
  out = sampling.generate(params, config, t2, m2, jax.random.key(1), max_new_tokens=25, **kw)  # same bucket (32)
  assert out.tokens.shape == (2, 25)
  assert sampling.trace_counts() == before
  sampling.generate(params, config, t2, m2, jax.random.key(1), max_new_tokens=40, **kw)  # next bucket
  assert sampling.trace_counts()["decode"] == before["decode"] + 1


def test_bfloat16_compute(tiny, tmp_path):
  _, params32, _ = tiny
  path = tiny_checkpoints.make_tiny_checkpoint(tmp_path, seed=3, with_tokenizer=False)
  config, params = hf_checkpoint.load_pretrained(path, compute_dtype=jnp.bfloat16)
  tokens, mask = _prompts(config.vocab_size, [4, 8], seed=10)
  out = sampling.generate(params, config, tokens, mask, jax.random.key(2), max_new_tokens=8, temperature=1.0,
                          top_p=0.95, stop_token_ids=())
  assert out.logprobs.dtype == jnp.float32 and out.tokens.shape == (2, 8)
  ref, _ = _full_forward_logprobs(params, config, tokens, mask, out, 1.0, 0.95)
  np.testing.assert_allclose(np.asarray(out.logprobs), ref, atol=0.1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=-1.0), "temperature"),
    (dict(min_p=2.0), "min_p"),
    (dict(top_k=-3), "top_k"),
    (dict(num_samples=0), "num_samples"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=10_000), "max_position_embeddings"),
    (dict(stop_token_ids=(10_000,)), "stop_token_ids"),
    (dict(stream_ids=[0]), "stream_ids"),
])
def test_bad_arguments_raise(tiny, kwargs, match):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [3, 4])
  kwargs = {"max_new_tokens": 4, **kwargs}
  with pytest.raises(ValueError, match=match):
    sampling.generate(params, config, tokens, mask, jax.random.key(0), **kwargs)


def test_bad_prompts_raise(tiny):
  config, params, _ = tiny
  tokens, mask = _prompts(config.vocab_size, [3, 4])
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="prompt_mask shape"):
    sampling.generate(params, config, tokens, mask[:, 1:], key, max_new_tokens=4)
  with pytest.raises(ValueError, match="left-padded"):
    sampling.generate(params, config, tokens, mask[:, ::-1], key, max_new_tokens=4)
  with pytest.raises(ValueError, match="prompt_tokens must have shape"):
    sampling.generate(params, config, tokens[0], mask[0], key, max_new_tokens=4)
  with pytest.raises(TypeError, match="prompt_tokens must be integers"):
    sampling.generate(params, config, tokens.astype(np.float32), mask, key, max_new_tokens=4)
