"""Tests of ngrpo_jax.losses against slow numpy references (values, gradients, aggregation, accumulation)."""
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import losses

AGGS = losses.AGGREGATIONS
MAX_LEN = 16
# Keyword arguments that are Python values, static under jax.jit (the `variant` fixture, tests/conftest.py).
CLIP_STATIC = ("eps_pos", "eps_neg", "dual_clip")
SURROGATE_STATIC = CLIP_STATIC + ("stop_gradient_advantages",)
AGG_STATIC = ("aggregation", "max_length")
POLICY_STATIC = SURROGATE_STATIC + AGG_STATIC


# ------------------------------------------------------------------------------------------------------
# Slow numpy references.
# ------------------------------------------------------------------------------------------------------


def ref_policy_token(lp, olp, a, eps_pos, eps_neg, dual_clip=None):
  r = np.exp(lp - olp)
  loss = -min(r * a, min(max(r, 1 - eps_neg), 1 + eps_pos) * a)
  if dual_clip is not None and a < 0:
    loss = min(loss, -dual_clip * a)
  return loss


def ref_per_token(logp, old, adv, mask, eps_pos, eps_neg, dual_clip=None):
  """float64 [B, T] per-token loss from ref_policy_token (0 at masked tokens); adv is [B] or [B, T]."""
  a_tok = np.broadcast_to(adv[:, None], logp.shape) if adv.ndim == 1 else adv
  per_token = np.zeros(logp.shape, np.float64)
  for b, t in zip(*np.nonzero(mask)):
    per_token[b, t] = ref_policy_token(float(logp[b, t]), float(old[b, t]), float(a_tok[b, t]), eps_pos,
                                       eps_neg, dual_clip)
  return per_token


def ref_aggregate(per_token, mask, mode, normalizer=None, max_length=MAX_LEN):
  """float64 loops of the six aggregation formulas (losses module docstring)."""
  b_, t_ = per_token.shape
  rows = [[float(per_token[b, t]) for t in range(t_) if mask[b, t]] for b in range(b_)]
  if mode == "token_mean":
    n = sum(len(r) for r in rows) if normalizer is None else normalizer
    return sum(sum(r) for r in rows) / n if n else 0.0
  if mode == "token_sum":
    n = 1.0 if normalizer is None else normalizer
    return sum(sum(r) for r in rows) / n if n else 0.0
  n = sum(1 for r in rows if r) if normalizer is None else normalizer
  if not n:
    return 0.0
  if mode == "seq_mean_token_mean":
    return sum(sum(r) / len(r) for r in rows if r) / n
  if mode == "seq_mean_token_sum":
    return sum(sum(r) for r in rows) / n
  assert mode in ("seq_mean_token_sum_norm", "sequence_mean_token_scale"), mode
  return sum(sum(r) for r in rows) / (max_length * n)


def _batch(seed=0, b=6, t=5, per_seq_adv=True):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 1.0, (b, t))).astype(np.float32)
  old = (logp + rng.normal(0, 0.3, (b, t))).astype(np.float32)
  lengths = rng.integers(1, t + 1, b)
  lengths[2] = 0                                   # an empty (padding) row
  mask = np.arange(t)[None] < lengths[:, None]
  adv = rng.normal(size=(b,) if per_seq_adv else (b, t)).astype(np.float32)
  return logp, old, adv, mask


def _agg_kw(agg):
  return dict(aggregation=agg, max_length=MAX_LEN) if agg in ("seq_mean_token_sum_norm", "sequence_mean_token_scale") \
      else dict(aggregation=agg)


# ------------------------------------------------------------------------------------------------------
# policy_loss.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("per_seq_adv", [True, False])
@pytest.mark.parametrize("clip", [(0.2, 0.2, None), (0.24, 0.16, None), (0.28, 0.2, 3.0)])
def test_policy_loss_vs_numpy(variant, agg, per_seq_adv, clip):
  eps_pos, eps_neg, dual = clip
  logp, old, adv, mask = _batch(per_seq_adv=per_seq_adv)
  loss, diag = variant(losses.policy_loss, static_argnames=POLICY_STATIC)(
      logp, old, adv, mask, eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=dual, **_agg_kw(agg))
  a_tok = np.broadcast_to(adv[:, None], logp.shape) if per_seq_adv else adv
  per_token = ref_per_token(logp, old, adv, mask, eps_pos, eps_neg, dual)
  np.testing.assert_allclose(float(loss), ref_aggregate(per_token, mask, agg), rtol=1e-5, atol=1e-6)
  ratio = np.exp(logp - old)[mask]
  a_m = a_tok[mask]
  pos_clip = (a_m > 0) & (ratio > 1 + eps_pos)
  neg_clip = (a_m < 0) & (ratio < 1 - eps_neg)
  np.testing.assert_allclose(float(diag["clip_frac"]), (pos_clip | neg_clip).mean(), rtol=1e-6)
  np.testing.assert_allclose(float(diag["clip_frac_pos"]), pos_clip.sum() / max((a_m > 0).sum(), 1), rtol=1e-6)
  np.testing.assert_allclose(float(diag["clip_frac_neg"]), neg_clip.sum() / max((a_m < 0).sum(), 1), rtol=1e-6)
  np.testing.assert_allclose([float(diag[k]) for k in ("ratio_mean", "ratio_min", "ratio_max")],
                             [ratio.mean(), ratio.min(), ratio.max()], rtol=1e-5)
  lr = (logp - old)[mask]
  np.testing.assert_allclose(float(diag["approx_kl_k3"]), np.mean(np.exp(lr) - 1 - lr), rtol=1e-4)
  np.testing.assert_allclose(float(diag["approx_kl_k2"]), np.mean(0.5 * lr ** 2), rtol=1e-5)
  assert float(diag["num_tokens"]) == mask.sum()
  assert float(diag["num_seqs"]) == mask.any(-1).sum()
  assert float(diag["num_pos_tokens"]) == (a_m > 0).sum()


@pytest.mark.parametrize("per_seq_adv", [True, False])
@pytest.mark.parametrize("clip", [(0.2, 0.2, None), (0.24, 0.16, None), (0.28, 0.2, 3.0)])
def test_clipped_surrogate_vs_numpy(variant, per_seq_adv, clip):
  eps_pos, eps_neg, dual = clip
  logp, old, adv, mask = _batch(seed=9, per_seq_adv=per_seq_adv)
  old[~mask] = np.nan                              # junk at masked tokens gives 0 there, not NaN
  surrogate = variant(losses.clipped_surrogate, static_argnames=SURROGATE_STATIC)
  kw = dict(eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=dual)
  per_token = surrogate(logp, old, adv, mask, **kw)
  assert per_token.shape == logp.shape and per_token.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(per_token), ref_per_token(logp, old, adv, mask, **kw), rtol=1e-5,
                             atol=1e-7)
  # dl/dlogp = −A·ρ where neither clip binds, 0 where one does (per token: the sum's gradient).
  grad = np.asarray(jax.grad(lambda lp: jnp.sum(surrogate(lp, old, adv, mask, **kw)))(jnp.asarray(logp)))
  a_tok = np.broadcast_to(adv[:, None], logp.shape) if per_seq_adv else adv
  r = np.exp(logp.astype(np.float64) - old)
  clipped = ((a_tok > 0) & (r > 1 + eps_pos)) | ((a_tok < 0) & (r < 1 - eps_neg))
  if dual is not None:
    clipped |= (a_tok < 0) & (r > dual)
  np.testing.assert_allclose(grad, np.where(mask & ~clipped, -a_tok * r, 0.0), rtol=1e-5, atol=1e-7)


def test_clipped_surrogate_stop_gradient_advantages(variant):
  logp, old, adv, mask = _batch(seed=10)
  surrogate = variant(losses.clipped_surrogate, static_argnames=SURROGATE_STATIC)
  grad = lambda sg: jax.grad(lambda a: jnp.sum(surrogate(logp, old, a, mask, stop_gradient_advantages=sg)))
  np.testing.assert_array_equal(np.asarray(grad(True)(jnp.asarray(adv))), 0.0)
  assert np.any(np.asarray(grad(False)(jnp.asarray(adv))) != 0.0)


@pytest.mark.parametrize("clip", [(0.2, 0.2, None), (0.28, 0.2, 3.0)])
def test_clip_diagnostics_equal_policy_loss_diagnostics(variant, clip):
  eps_pos, eps_neg, dual = clip
  logp, old, adv, mask = _batch(seed=11)
  kw = dict(eps_pos=eps_pos, eps_neg=eps_neg, dual_clip=dual)
  diag = variant(losses.clip_diagnostics, static_argnames=CLIP_STATIC)(logp, old, adv, mask, **kw)
  _, expected = variant(losses.policy_loss, static_argnames=POLICY_STATIC)(logp, old, adv, mask, **kw)
  assert set(diag) == {"clip_frac", "clip_frac_pos", "clip_frac_neg", "dual_clip_frac", "ratio_mean",
                       "ratio_min", "ratio_max", "approx_kl_k3", "approx_kl_k2", "num_tokens",
                       "num_pos_tokens", "num_neg_tokens", "num_seqs"}
  assert list(diag) == list(expected)
  for key in diag:
    assert diag[key].shape == () and diag[key].dtype == jnp.float32, key
    np.testing.assert_array_equal(np.asarray(diag[key]), np.asarray(expected[key]), err_msg=key)


def test_policy_loss_is_aggregated_surrogate(variant):
  logp, old, adv, mask = _batch(seed=12, per_seq_adv=False)
  kw = dict(eps_pos=0.24, eps_neg=0.16)
  for agg in AGGS:
    loss, _ = variant(losses.policy_loss, static_argnames=POLICY_STATIC)(logp, old, adv, mask, **kw,
                                                                         **_agg_kw(agg))
    per_token = losses.clipped_surrogate(logp, old, adv, mask, **kw)
    np.testing.assert_allclose(float(loss), float(losses.aggregate(per_token, mask, **_agg_kw(agg))), rtol=1e-6)


@pytest.mark.parametrize("agg", AGGS)
def test_symmetric_clip_equals_ppo_value_and_gradient(agg):
  eps = 0.2
  logp, old, adv, mask = _batch(seed=1)
  a_tok = np.broadcast_to(adv[:, None], logp.shape)

  def ppo_reference(lp):   # textbook PPO written independently, symmetric clip
    r = jnp.exp(lp - old)
    obj = jnp.minimum(r * a_tok, jnp.clip(r, 1 - eps, 1 + eps) * a_tok)
    return jnp.where(mask, -obj, 0.0)

  fn = lambda lp: losses.policy_loss(lp, old, adv, mask, eps_pos=eps, eps_neg=eps, **_agg_kw(agg))[0]
  val, grad = jax.value_and_grad(fn)(jnp.asarray(logp))
  ref_val = ref_aggregate(np.asarray(ppo_reference(logp)), mask, agg)
  np.testing.assert_allclose(float(val), ref_val, rtol=1e-5)
  # Analytic numpy gradient of the PPO surrogate: −A·ρ·w_bt where unclipped, 0 where clipped.
  r = np.exp(logp - old)
  clipped = ((a_tok > 0) & (r > 1 + eps)) | ((a_tok < 0) & (r < 1 - eps))
  lengths = mask.sum(-1, keepdims=True)
  n_seq = mask.any(-1).sum()
  w = {"token_mean": np.full(logp.shape, 1.0 / mask.sum()),
       "token_sum": np.ones(logp.shape),
       "seq_mean_token_sum": np.full(logp.shape, 1.0 / n_seq),
       "seq_mean_token_mean": 1.0 / (np.maximum(lengths, 1) * n_seq) * np.ones(logp.shape),
       "seq_mean_token_sum_norm": np.full(logp.shape, 1.0 / (MAX_LEN * n_seq)),
       "sequence_mean_token_scale": np.full(logp.shape, 1.0 / (MAX_LEN * n_seq))}[agg]
  exp_grad = np.where(mask & ~clipped, -a_tok * r * w, 0.0)
  np.testing.assert_allclose(np.asarray(grad), exp_grad, rtol=1e-5, atol=1e-8)


def test_zero_gradient_exactly_in_clipped_regions(variant):
  eps_pos, eps_neg = 0.24, 0.16
  ratios = np.array([[1.5, 1.1, 0.5, 1.3], [0.7, 0.95, 1.5, 0.8]], np.float32)
  adv = np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]], np.float32)
  old = np.log(np.full(ratios.shape, 0.4, np.float32))
  logp = old + np.log(ratios)
  mask = np.ones(ratios.shape, bool)
  fn = variant(losses.policy_loss, static_argnames=POLICY_STATIC)
  grad = jax.grad(lambda lp: fn(lp, old, adv, mask, eps_pos=eps_pos, eps_neg=eps_neg)[0])(jnp.asarray(logp))
  grad = np.asarray(grad)
  clipped = ((adv >= 0) & (ratios > 1 + eps_pos)) | ((adv < 0) & (ratios < 1 - eps_neg))
  assert clipped.sum() == 4
  assert np.all(grad[clipped] == 0.0)
  assert np.all(grad[~clipped] != 0.0)


def test_dual_clip_bounds_negative_loss():
  old = np.zeros((1, 2), np.float32)
  logp = np.log(np.array([[5.0, 2.0]], np.float32))
  adv = np.array([-1.0], np.float32)
  mask = np.ones((1, 2), bool)
  g = jax.grad(lambda lp: losses.policy_loss(lp, old, adv, mask, dual_clip=3.0,
                                             aggregation="token_mean")[0])(jnp.asarray(logp))
  loss, diag = losses.policy_loss(logp, old, adv, mask, dual_clip=3.0, aggregation="token_mean")
  np.testing.assert_allclose(float(loss), (3.0 + 2.0) / 2, rtol=1e-6)
  assert float(g[0, 0]) == 0.0 and float(g[0, 1]) != 0.0
  assert float(diag["dual_clip_frac"]) == 0.5


def test_advantages_under_stop_gradient():
  logp, old, adv, mask = _batch()
  g = jax.grad(lambda a: losses.policy_loss(logp, old, a, mask)[0])(jnp.asarray(adv))
  np.testing.assert_array_equal(np.asarray(g), 0.0)
  g2 = jax.grad(lambda a: losses.policy_loss(logp, old, a, mask, stop_gradient_advantages=False)[0])(
      jnp.asarray(adv))
  assert np.any(np.asarray(g2) != 0.0)


def test_masked_tokens_never_leak():
  logp, old, adv, mask = _batch(per_seq_adv=False)
  dirty = [x.copy() for x in (logp, old, adv)]
  for x in dirty:
    x[~mask] = np.nan
  dirty[0][~mask & (np.arange(5)[None] % 2 == 0)] = np.inf
  for agg in AGGS:
    clean_fn = lambda lp: losses.policy_loss(lp, old, adv, mask, **_agg_kw(agg))[0]
    dirty_fn = lambda lp: losses.policy_loss(lp, dirty[1], dirty[2], mask, **_agg_kw(agg))[0]
    v_c, g_c = jax.value_and_grad(clean_fn)(jnp.asarray(logp))
    v_d, g_d = jax.value_and_grad(dirty_fn)(jnp.asarray(dirty[0]))
    assert np.isfinite(float(v_d)) and np.all(np.isfinite(np.asarray(g_d)))
    np.testing.assert_allclose(float(v_d), float(v_c), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_d), np.asarray(g_c), rtol=1e-6)
  empty = np.zeros_like(mask)
  loss, diag = losses.policy_loss(logp, old, adv, empty)
  assert float(loss) == 0.0 and all(np.isfinite(float(v)) for v in diag.values())


# ------------------------------------------------------------------------------------------------------
# Gradient accumulation exactness.
# ------------------------------------------------------------------------------------------------------


def _loss_fns(agg):
  kw = _agg_kw(agg)
  rng = np.random.default_rng(7)
  ref = np.log(rng.uniform(0.05, 1.0, (6, 5))).astype(np.float32)

  def pol(lp, old, adv, mask, norm):
    return losses.policy_loss(lp, old, adv, mask, eps_pos=0.24, eps_neg=0.16, normalizer=norm, **kw)[0]

  def kl(lp, old, adv, mask, norm, ref_rows):
    return losses.kl_penalty(lp, ref_rows, mask, normalizer=norm, **kw)[0]

  def val(lp, old, adv, mask, norm):
    return losses.value_loss(lp, old, jnp.broadcast_to(adv[:, None], lp.shape), mask, normalizer=norm, **kw)[0]

  return ref, {"policy": pol, "kl": kl, "value": val}


@pytest.mark.parametrize("agg", AGGS)
def test_micro_batch_accumulation_is_exact(agg):
  logp, old, adv, mask = _batch(seed=3)
  ref, fns = _loss_fns(agg)
  norm = losses.batch_normalizer(mask, agg)
  splits = [slice(0, 2), slice(2, 3), slice(3, 6)]
  for name, fn in fns.items():
    extra = (ref,) if name == "kl" else ()
    full_val, full_grad = jax.value_and_grad(fn)(jnp.asarray(logp), old, adv, mask, None,
                                                 *extra)
    total, grads = 0.0, []
    for s in splits:
      e = (ref[s],) if name == "kl" else ()
      v, g = jax.value_and_grad(fn)(jnp.asarray(logp[s]), old[s], adv[s], mask[s], norm, *e)
      total += float(v)
      grads.append(np.asarray(g))
    np.testing.assert_allclose(total, float(full_val), rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(np.concatenate(grads), np.asarray(full_grad), rtol=1e-5, atol=1e-8,
                               err_msg=name)
  # Without the global normaliser the naive average of micro-batch means is generally *not* exact.
  if agg == "token_mean":
    naive = np.mean([float(fns["policy"](jnp.asarray(logp[s]), old[s], adv[s], mask[s], None)) for s in splits])
    assert abs(naive - float(fns["policy"](jnp.asarray(logp), old, adv, mask, None))) > 1e-4


def test_aggregation_modes_differ_and_match_reference(variant):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  mask = np.arange(6)[None] < np.array([[1], [6], [0], [3]])
  for agg in AGGS:
    got = float(variant(losses.aggregate, static_argnames=AGG_STATIC)(x, mask, **_agg_kw(agg)))
    np.testing.assert_allclose(got, ref_aggregate(x, mask, agg), rtol=1e-5)
  with pytest.raises(ValueError, match="max_length"):
    losses.aggregate(x, mask, aggregation="seq_mean_token_sum_norm")


# ------------------------------------------------------------------------------------------------------
# KL, entropy, value loss.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
def test_kl_penalty_vs_numpy(variant, estimator):
  logp, ref, _, mask = _batch(seed=4)
  kl_penalty = variant(losses.kl_penalty, static_argnames=("estimator", "aggregation"))
  loss, diag = kl_penalty(logp, ref, mask, estimator=estimator, aggregation="token_mean")
  x = (ref - logp).astype(np.float64)[mask]
  per = {"k1": -x, "k2": 0.5 * x ** 2, "k3": np.exp(x) - 1 - x, "k3_plus": np.exp(x) - 1 - x}[estimator]
  np.testing.assert_allclose(float(loss), per.mean(), rtol=1e-4)
  np.testing.assert_allclose(float(diag["kl_max"]), per.max(), rtol=1e-4)
  same, _ = kl_penalty(logp, logp, mask, estimator=estimator, aggregation="token_mean")
  assert float(same) == 0.0


def test_k3_plus_has_k3_value_and_k2_gradient(variant):
  logp, ref, _, mask = _batch(seed=8)
  f = lambda est: variant(lambda lp: losses.kl_penalty(lp, ref, mask, estimator=est, aggregation="token_mean")[0])
  v3p, g3p = jax.value_and_grad(f("k3_plus"))(jnp.asarray(logp))
  v3, _ = jax.value_and_grad(f("k3"))(jnp.asarray(logp))
  _, g2 = jax.value_and_grad(f("k2"))(jnp.asarray(logp))
  np.testing.assert_allclose(float(v3p), float(v3), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g3p), np.asarray(g2), rtol=1e-6, atol=1e-9)
  # numpy: d/dlogp ½ (ref − logp)² = −(ref − logp) / N_tok on valid tokens.
  np.testing.assert_allclose(np.asarray(g3p), np.where(mask, -(ref - logp) / mask.sum(), 0.0), rtol=1e-5, atol=1e-8)


def test_ratio_weighted_k3_is_unbiased_for_kl_and_its_gradient():
  """DeepSeek-V3.2's form: E_{y~π_old}[ρ(y)·k3(y)] = KL(π_θ‖π_ref) exactly, value and gradient (float64
  numpy over a 5-token vocabulary), while the unweighted k3 under π_old samples is biased."""
  rng = np.random.default_rng(0)
  z, z_old, z_ref = (rng.normal(size=5) for _ in range(3))
  log_softmax = lambda v: v - np.log(np.sum(np.exp(v)))
  old, ref = log_softmax(z_old), log_softmax(z_ref)

  def expected(zt, weighted):
    lp = jax.nn.log_softmax(zt)
    per = []
    for y in range(5):   # each vocabulary entry as one sampled token, weighted by π_old(y)
      kw = {"old_logp": jnp.asarray([[old[y]]], jnp.float32)} if weighted else {}
      per.append(losses.kl_penalty(lp[y][None, None], jnp.asarray([[ref[y]]], jnp.float32),
                                   np.ones((1, 1), bool), estimator="k3", aggregation="token_sum", **kw)[0])
    return jnp.sum(jnp.exp(jnp.asarray(old, jnp.float32)) * jnp.stack(per))

  def true_kl(zt):
    lp = jax.nn.log_softmax(zt)
    return jnp.sum(jnp.exp(lp) * (lp - jnp.asarray(ref, jnp.float32)))

  zt = jnp.asarray(z, jnp.float32)
  val, grad = jax.value_and_grad(lambda v: expected(v, True))(zt)
  kl_val, kl_grad = jax.value_and_grad(true_kl)(zt)
  lp64 = log_softmax(z)
  np.testing.assert_allclose(float(val), np.sum(np.exp(lp64) * (lp64 - ref)), rtol=1e-5)
  np.testing.assert_allclose(float(val), float(kl_val), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(kl_grad), rtol=1e-4, atol=1e-6)
  assert abs(float(expected(zt, False)) - float(kl_val)) > 1e-3     # the unweighted estimate is biased here


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True)
@hypothesis.given(st.lists(st.floats(-30, 0), min_size=2, max_size=2), st.floats(-30, 30))
def test_k3_nonnegative(lps, delta):
  lp = np.asarray([lps], np.float32)
  ref = (lp + np.float32(delta)).astype(np.float32)
  per = np.asarray(losses.kl_per_token(lp, ref, estimator="k3"))
  assert np.all(per >= 0) and np.all(np.isfinite(per))
  np.testing.assert_array_equal(np.asarray(losses.kl_per_token(lp, lp, estimator="k3")), 0.0)


def test_entropy_vs_numpy(variant):
  rng = np.random.default_rng(6)
  logits = rng.normal(0, 3, (3, 4, 7)).astype(np.float32)
  logits[0, 0, :3] = -np.inf                      # banned tokens
  mask = np.ones((3, 4), bool)
  mask[2, 2:] = False
  value, diag = variant(losses.entropy)(logits, mask)
  z = logits.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0.0), axis=-1)
  np.testing.assert_allclose(np.asarray(diag["per_token"]), np.where(mask, h, 0.0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(value), h[mask].mean(), rtol=1e-5)
  big = np.asarray(losses.token_entropy(np.array([[1e4, 1e4 - 1.0, -1e4]], np.float32)))
  two = np.array([1.0, np.exp(-1.0)]) / (1 + np.exp(-1.0))
  np.testing.assert_allclose(big, -np.sum(two * np.log(two)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(losses.token_entropy(np.zeros((2, 5)))), np.log(5), rtol=1e-6)


@pytest.mark.parametrize("clip_eps", [0.2, None])
def test_value_loss_vs_numpy(variant, clip_eps):
  rng = np.random.default_rng(8)
  v, v_old, ret = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(3))
  mask = rng.uniform(size=(3, 4)) > 0.3
  loss, diag = variant(losses.value_loss, static_argnames=("clip_eps",))(v, v_old, ret, mask, clip_eps=clip_eps)
  per = np.zeros((3, 4))
  for b, t in zip(*np.nonzero(mask)):
    e = (v[b, t] - ret[b, t]) ** 2
    if clip_eps is not None:
      vc = v_old[b, t] + np.clip(v[b, t] - v_old[b, t], -clip_eps, clip_eps)
      e = max(e, (vc - ret[b, t]) ** 2)
    per[b, t] = 0.5 * e
  np.testing.assert_allclose(float(loss), per[mask].mean(), rtol=1e-5)
  assert 0.0 <= float(diag["value_clip_frac"]) <= 1.0


@pytest.mark.parametrize("call,match", [
    (lambda b: losses.policy_loss(*b, eps_pos=-0.1), "eps_pos"),
    (lambda b: losses.policy_loss(*b, eps_neg=1.0), "eps_neg"),
    (lambda b: losses.policy_loss(*b, dual_clip=0.5), "dual_clip"),
    (lambda b: losses.policy_loss(*b, aggregation="mean"), "aggregation"),
    (lambda b: losses.policy_loss(*b, aggregation="seq_mean_token_sum_norm"), "max_length"),
    (lambda b: losses.policy_loss(b[0], b[1][:, :3], b[2], b[3]), "old_logp"),
    (lambda b: losses.policy_loss(b[0], b[1], b[2][:3], b[3]), "advantages"),
    (lambda b: losses.policy_loss(b[0][0], b[1][0], b[2], b[3][0]), "logp"),
    (lambda b: losses.policy_loss(b[0], b[1], b[2], b[3][:, :2]), "mask"),
    (lambda b: losses.clipped_surrogate(*b, eps_neg=-0.1), "eps_neg"),
    (lambda b: losses.clipped_surrogate(b[0], b[1], b[2][:, None, None], b[3]), "advantages"),
    (lambda b: losses.clip_diagnostics(*b, dual_clip=1.0), "dual_clip"),
    (lambda b: losses.clip_diagnostics(b[0], b[1][:2], b[2], b[3]), "old_logp"),
    (lambda b: losses.kl_penalty(b[0], b[1], b[3], estimator="k4"), "estimator"),
    (lambda b: losses.value_loss(b[0], b[1], b[0], b[3], clip_eps=-1.0), "clip_eps"),
    (lambda b: losses.entropy(b[0]), "logits"),
])
def test_validation_errors(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call(_batch())


def test_kl_clip_max():
  lp = np.zeros((1, 3), np.float32)
  ref = np.array([[0.0, 3.0, 5.0]], np.float32)
  per = np.asarray(losses.kl_per_token(lp, ref, estimator="k3", clip_max=10.0))
  np.testing.assert_allclose(per, np.minimum(np.exp(ref[0]) - 1 - ref[0], 10.0)[None], rtol=1e-5)
  with pytest.raises(ValueError, match="clip_max"):
    losses.kl_per_token(lp, ref, clip_max=0.0)
