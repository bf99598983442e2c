"""ngrpo_jax.policy_objectives against float64 numpy loops written from the papers' formulas, and the
properties that define each objective (GSPO / GMPO with one token = PPO, CISPO's gradient on clipped tokens,
SAPO's on-policy gradient, DPPO's one-sided mask, whole-batch token selections)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import losses
from ngrpo_jax import policy_objectives as po


def _batch(seed=0, b=5, t=6, per_seq_adv=True):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 0.95, (b, t))).astype(np.float32)
  old = np.log(np.clip(np.exp(logp + rng.normal(0, 0.3, (b, t))), 0.01, 0.99)).astype(np.float32)
  lengths = rng.integers(1, t + 1, b)
  lengths[1] = 0
  mask = np.arange(t)[None] < lengths[:, None]
  adv = rng.normal(size=(b,) if per_seq_adv else (b, t)).astype(np.float32)
  return logp, old, adv, mask


def _tok(adv, shape):
  return np.broadcast_to(adv[:, None], shape) if adv.ndim == 1 else adv


def _seq_agg(per_token, mask):
  return losses.aggregate(per_token, mask, aggregation="seq_mean_token_mean")


# ------------------------------------------------------------------------------------------------------
# GSPO / GMPO.
# ------------------------------------------------------------------------------------------------------


def ref_gspo(logp, old, adv, mask, lo, hi):
  """(1/N_seq) Σ_i −min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp − old)), float64."""
  total, n = 0.0, 0
  for i in range(logp.shape[0]):
    ts = [t for t in range(logp.shape[1]) if mask[i, t]]
    if not ts:
      continue
    s = math.exp(sum(float(logp[i, t]) - float(old[i, t]) for t in ts) / len(ts))
    a = float(adv[i])
    total += -min(s * a, min(max(s, 1 - lo), 1 + hi) * a)
    n += 1
  return total / n


@pytest.mark.parametrize("token_level", [False, True])
def test_gspo_vs_numpy_and_gspo_token_same_gradient(variant, token_level):
  logp, old, adv, mask = _batch(1)
  lo, hi = 0.05, 0.08
  fn = variant(po.gspo, static_argnames=("eps_low", "eps_high", "token_level"))
  val = float(_seq_agg(fn(logp, old, adv, mask, eps_low=lo, eps_high=hi, token_level=token_level), mask))
  np.testing.assert_allclose(val, ref_gspo(logp, old, adv, mask, lo, hi), rtol=1e-5)
  grad = lambda tl: jax.grad(lambda lp: _seq_agg(po.gspo(lp, old, adv, mask, eps_low=lo, eps_high=hi,
                                                         token_level=tl), mask))(jnp.asarray(logp))
  np.testing.assert_allclose(np.asarray(grad(True)), np.asarray(grad(False)), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fn,kw,ppo_kw", [
    (po.gspo, dict(eps_low=0.1, eps_high=0.3), dict(eps_neg=0.1, eps_pos=0.3)),
    (po.gmpo, dict(eps_low=0.2, eps_high=0.3), dict(eps_neg=1 - math.exp(-0.2), eps_pos=math.exp(0.3) - 1)),
])
def test_sequence_objectives_with_one_token_per_sequence_equal_ppo(fn, kw, ppo_kw):
  rng = np.random.default_rng(2)
  logp = np.log(rng.uniform(0.1, 0.9, (8, 1))).astype(np.float32)
  old = (logp + rng.normal(0, 0.4, (8, 1))).astype(np.float32)
  adv = rng.normal(size=8).astype(np.float32)
  mask = np.ones((8, 1), bool)
  ours = lambda lp: losses.aggregate(fn(lp, old, adv, mask, **kw), mask, aggregation="token_mean")
  ppo = lambda lp: losses.aggregate(losses.clipped_surrogate(lp, old, adv, mask, **ppo_kw), mask,
                                    aggregation="token_mean")
  v1, g1 = jax.value_and_grad(ours)(jnp.asarray(logp))
  v2, g2 = jax.value_and_grad(ppo)(jnp.asarray(logp))
  np.testing.assert_allclose(float(v1), float(v2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4, atol=1e-7)
  assert np.any(np.asarray(g1) == 0) and np.any(np.asarray(g1) != 0)    # some clipped, some not


def test_gmpo_vs_numpy(variant):
  logp, old, adv, mask = _batch(3)
  lo, hi = 0.1, 0.2
  got = np.asarray(variant(po.gmpo, static_argnames=("eps_low", "eps_high"))(logp, old, adv, mask, eps_low=lo,
                                                                             eps_high=hi))
  for i in range(logp.shape[0]):
    ts = [t for t in range(logp.shape[1]) if mask[i, t]]
    a = float(adv[i])
    if not ts:
      assert np.all(got[i] == 0)
      continue
    prod = 1.0
    for t in ts:         # Π_t |min(ρA, clip(ρ, e^-lo, e^hi)A)|, then the |y|-th root and sgn(A)
      r = math.exp(float(logp[i, t]) - float(old[i, t]))
      prod *= abs(min(r * a, min(max(r, math.exp(-lo)), math.exp(hi)) * a))
    want = -math.copysign(prod ** (1 / len(ts)), a)
    np.testing.assert_allclose(got[i, ts], want, rtol=1e-5)
    assert np.all(got[i, len(ts):] == 0)


# ------------------------------------------------------------------------------------------------------
# CISPO / SAPO / DPPO / GPG.
# ------------------------------------------------------------------------------------------------------


def test_cispo_vs_numpy_and_gradient_survives_the_clip(variant):
  logp, old, adv, mask = _batch(4, per_seq_adv=False)
  hi = 0.1
  got = np.asarray(variant(po.cispo, static_argnames=("eps_low", "eps_high"))(logp, old, adv, mask, eps_high=hi))
  r = np.minimum(np.exp(logp.astype(np.float64) - old), 1 + hi)
  np.testing.assert_allclose(got, np.where(mask, -r * adv * logp, 0.0), rtol=1e-5, atol=1e-7)
  # Gradient −r̂·A (per token, token_sum) everywhere, including where PPO's clip zeroes it.
  g = np.asarray(jax.grad(lambda lp: jnp.sum(po.cispo(lp, old, adv, mask, eps_high=hi)))(jnp.asarray(logp)))
  np.testing.assert_allclose(g, np.where(mask, -r * adv, 0.0), rtol=1e-5, atol=1e-7)
  g_ppo = np.asarray(jax.grad(lambda lp: jnp.sum(losses.clipped_surrogate(lp, old, adv, mask, eps_pos=hi,
                                                                          eps_neg=1.0 - 1e-6)))(jnp.asarray(logp)))
  clipped = mask & (adv > 0) & (np.exp(logp - old) > 1 + hi)
  assert clipped.any() and np.all(g_ppo[clipped] == 0) and np.all(g[clipped] != 0)
  lo_got = np.asarray(po.cispo(logp, old, adv, mask, eps_low=0.1, eps_high=hi))
  r_lo = np.clip(np.exp(logp.astype(np.float64) - old), 0.9, 1 + hi)
  np.testing.assert_allclose(lo_got, np.where(mask, -r_lo * adv * logp, 0.0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", [po.cispo, po.sapo, po.gpg, po.dppo])
def test_on_policy_gradient_equals_ppo(fn):
  logp, _, adv, mask = _batch(5, per_seq_adv=False)
  agg = lambda f: jax.grad(lambda lp: losses.aggregate(f(lp), mask, aggregation="token_mean"))(jnp.asarray(logp))
  ours = agg(lambda lp: fn(lp, logp, adv, mask))
  ppo = agg(lambda lp: losses.clipped_surrogate(lp, logp, adv, mask))
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ppo), rtol=1e-5, atol=1e-8)


def test_sapo_vs_numpy_value_and_gradient(variant):
  logp, old, adv, mask = _batch(6, per_seq_adv=False)
  got = np.asarray(variant(po.sapo, static_argnames=("tau_pos", "tau_neg"))(logp, old, adv, mask, tau_pos=1.0,
                                                                           tau_neg=1.05))
  r = np.exp(logp.astype(np.float64) - old)
  tau = np.where(adv > 0, 1.0, 1.05)
  sig = 1 / (1 + np.exp(-tau * (r - 1)))
  np.testing.assert_allclose(got, np.where(mask, -4 / tau * sig * adv, 0.0), rtol=1e-5, atol=1e-7)
  g = np.asarray(jax.grad(lambda lp: jnp.sum(po.sapo(lp, old, adv, mask)))(jnp.asarray(logp)))
  # d/dlogp of −(4/τ)σ(τ(ρ−1))A = −4σ(1−σ)·ρ·A: a smooth gate, never exactly 0.
  np.testing.assert_allclose(g, np.where(mask, -4 * sig * (1 - sig) * r * adv, 0.0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("divergence", po.DPPO_DIVERGENCES)
def test_dppo_vs_numpy(variant, divergence):
  logp, old, adv, mask = _batch(7, per_seq_adv=False)
  delta = 0.05
  fn = lambda lp: po.dppo(lp, old, adv, mask, divergence=divergence, delta=delta)
  got = np.asarray(variant(fn)(logp))
  g = np.asarray(jax.grad(lambda lp: jnp.sum(fn(lp)))(jnp.asarray(logp)))
  p, q = np.exp(logp.astype(np.float64)), np.exp(old.astype(np.float64))
  d = np.abs(p - q) if divergence == "tv" else q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
  out = ((adv > 0) & (p > q)) | ((adv < 0) & (p < q))
  frozen = mask & (d > delta) & out
  r = p / q
  np.testing.assert_allclose(got, np.where(mask, -r * adv, 0.0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g, np.where(mask & ~frozen, -r * adv, 0.0), rtol=1e-4, atol=1e-7)
  assert frozen.any() and (mask & ~frozen & (d > delta)).any()   # inward moves past delta keep their gradient


def test_gpg_vs_numpy(variant):
  logp, old, adv, mask = _batch(8)
  got = np.asarray(variant(po.gpg)(logp, old, adv, mask))
  np.testing.assert_allclose(got, np.where(mask, -adv[:, None] * logp, 0.0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------------
# Clip-Cov / KL-Cov / top-entropy selections.
# ------------------------------------------------------------------------------------------------------


def test_cov_scores_and_selections_vs_numpy():
  logp, old, adv, mask = _batch(9, b=8, t=10, per_seq_adv=False)
  cov = np.asarray(po.cov_scores(logp, adv, mask))
  lp, a = logp[mask].astype(np.float64), adv[mask].astype(np.float64)
  ref = np.zeros(logp.shape)
  ref[mask] = (lp - lp.mean()) * (a - a.mean())
  np.testing.assert_allclose(cov, ref, rtol=1e-4, atol=1e-6)
  n_tok = int(mask.sum())
  top = np.asarray(po.kl_cov_mask(cov, mask, top_frac=0.1))
  k = max(int(0.1 * n_tok), 1)
  assert top.sum() == k and np.all(cov[top].min() >= np.sort(cov[mask])[::-1][k - 1]) and not (top & ~mask).any()
  lo, hi = np.quantile(cov[mask], [0.3, 0.9])
  sel = np.asarray(po.clip_cov_mask(cov, mask, jax.random.PRNGKey(0), clip_ratio=0.1, cov_low=lo, cov_high=hi))
  cand = mask & (cov >= lo) & (cov <= hi)
  assert sel.sum() == min(max(int(0.1 * n_tok), 1), cand.sum()) and not (sel & ~cand).any()
  other = np.asarray(po.clip_cov_mask(cov, mask, jax.random.PRNGKey(1), clip_ratio=0.1, cov_low=lo, cov_high=hi))
  assert other.sum() == sel.sum() and (other != sel).any()                # random among the candidates
  ent = np.abs(logp) + 0.01 * np.arange(logp.size).reshape(logp.shape)
  hot = np.asarray(po.top_entropy_mask(ent, mask, top_frac=0.2))
  kk = math.ceil(0.2 * n_tok)
  np.testing.assert_array_equal(hot, mask & (ent >= np.sort(ent[mask])[::-1][kk - 1]))
  assert hot.sum() == kk


def test_clip_cov_detaches_selected_tokens_and_kl_cov_vs_numpy():
  logp, old, adv, mask = _batch(10, per_seq_adv=False)
  sel = mask & (np.arange(logp.shape[1])[None] % 2 == 0)
  g = np.asarray(jax.grad(lambda lp: jnp.sum(po.clip_cov(lp, old, adv, mask, sel)))(jnp.asarray(logp)))
  g_ppo = np.asarray(jax.grad(lambda lp: jnp.sum(losses.clipped_surrogate(lp, old, adv, mask)))(jnp.asarray(logp)))
  assert np.all(g[sel] == 0)
  np.testing.assert_allclose(g[~sel], g_ppo[~sel], rtol=1e-6)
  val = np.asarray(po.kl_cov(logp, old, adv, mask, sel, coef=0.5))
  r = np.exp(logp.astype(np.float64) - old)
  want = np.where(mask, -r * adv + 0.5 * np.where(sel, np.abs(logp - old), 0.0), 0.0)
  np.testing.assert_allclose(val, want, rtol=1e-5, atol=1e-7)


def test_validation_errors():
  logp, old, adv, mask = _batch(0)
  with pytest.raises(ValueError, match="divergence"):
    po.dppo(logp, old, adv, mask, divergence="js")
  with pytest.raises(ValueError, match="tau_neg"):
    po.sapo(logp, old, adv, mask, tau_neg=0.0)
  with pytest.raises(ValueError, match="top_frac"):
    po.top_entropy_mask(logp, mask, top_frac=1.5)
  with pytest.raises(ValueError, match="mask"):
    po.gspo(logp, old, adv, mask[:, :2])


@pytest.mark.parametrize("fn", [po.gspo, po.gmpo, po.cispo, po.sapo, po.dppo, po.gpg])
def test_vmap_over_a_leading_axis_equals_the_loop(fn):
  batches = [_batch(s) for s in (11, 12, 13)]
  stacked = [np.stack(x) for x in zip(*batches)]
  got = np.asarray(jax.vmap(fn)(*stacked))
  for i, b in enumerate(batches):
    np.testing.assert_allclose(got[i], np.asarray(fn(*b)), rtol=1e-6, atol=1e-7)


def test_kl_cov_penalty_has_no_gradient_on_policy():
  logp, _, adv, mask = _batch(14)
  sel = np.ones_like(mask)
  g = jax.grad(lambda lp: jnp.sum(po.kl_cov(lp, logp, np.zeros_like(adv), mask, sel)))(jnp.asarray(logp))
  assert np.all(np.asarray(g) == 0)
