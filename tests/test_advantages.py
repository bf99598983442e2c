"""Tests of ngrpo_jax.advantages against slow numpy references, the paper's Figure 3 and properties."""
import chex
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import advantages as adv


# ------------------------------------------------------------------------------------------------------
# Slow numpy references (one group at a time, no vectorisation, float64).
# ------------------------------------------------------------------------------------------------------


def ref_group(values, kind, ddof=1, eps=1e-6, r_virtual=1.0, num_virtual=1):
  v = np.asarray(values, np.float64)
  out = np.zeros_like(v)
  n = len(v)
  if n == 0:
    return out
  if kind == "grpo":
    stats = v
  elif kind == "ngrpo":
    stats = np.concatenate([v, np.full(num_virtual, r_virtual)])
  elif kind == "dr_grpo":
    return v - v.mean()
  elif kind == "rloo":
    if n < 2:
      return out
    for i in range(n):
      out[i] = v[i] - (v.sum() - v[i]) / (n - 1)
    return out
  m = len(stats)
  mean = stats.mean()
  std = np.sqrt(((stats - mean) ** 2).sum() / (m - ddof)) if m - ddof > 0 else 0.0
  for i in range(n):
    den = std + eps
    out[i] = (v[i] - mean) / den if den > 0 else 0.0
  return out


def ref_dense(rewards, mask, kind, **kw):
  rewards = np.asarray(rewards, np.float64)
  mask = np.ones(rewards.shape, bool) if mask is None else np.asarray(mask)
  out = np.zeros_like(rewards)
  for g in range(rewards.shape[0]):
    idx = np.nonzero(mask[g])[0]
    out[g, idx] = ref_group(rewards[g, idx], kind, **kw)
  return out


def ref_ragged(rewards, ids, valid, num_groups, kind, **kw):
  out = np.zeros(len(rewards))
  for g in range(num_groups):
    idx = [i for i in range(len(rewards)) if valid[i] and ids[i] == g]
    if idx:
      out[idx] = ref_group(np.asarray(rewards)[idx], kind, **kw)
  return out


def ref_gae(rewards, values, mask, gamma, lam):
  adv_out = np.zeros_like(np.asarray(rewards, np.float64))
  ret_out = np.zeros_like(adv_out)
  for b in range(rewards.shape[0]):
    idx = [t for t in range(rewards.shape[1]) if mask[b, t]]
    r = [float(rewards[b, t]) for t in idx]
    v = [float(values[b, t]) for t in idx] + [0.0]
    running = 0.0
    for j in reversed(range(len(idx))):
      delta = r[j] + gamma * v[j + 1] - v[j]
      running = delta + gamma * lam * running
      adv_out[b, idx[j]] = running
      ret_out[b, idx[j]] = running + v[j]
  return adv_out, ret_out


def _binary_groups(counts, g=8):
  r = np.zeros((len(counts), g), np.float32)
  for i, c in enumerate(counts):
    r[i, :c] = 1.0
  return r


# ------------------------------------------------------------------------------------------------------
# Paper Figure 3.
# ------------------------------------------------------------------------------------------------------


def test_figure3_one_correct(variant):
  r = _binary_groups([1])
  a_grpo = np.asarray(variant(adv.grpo)(r))
  a_ngrpo = np.asarray(variant(adv.ngrpo)(r))
  assert round(float(a_grpo[0, 0]), 2) == 2.47 and round(float(a_grpo[0, 1]), 2) == -0.35
  assert round(float(a_ngrpo[0, 0]), 2) == 1.76 and round(float(a_ngrpo[0, 1]), 2) == -0.50
  np.testing.assert_allclose(a_grpo[0, 1:], a_grpo[0, 1], rtol=1e-6)


def test_figure3_all_wrong(variant):
  r = _binary_groups([0])
  np.testing.assert_array_equal(np.asarray(variant(adv.grpo)(r)), 0.0)
  np.testing.assert_allclose(np.asarray(variant(adv.ngrpo)(r)), -1.0 / 3.0, atol=1e-5)


@pytest.mark.parametrize("ddof", [0, 1])
def test_figure3_cases_vs_numpy(variant, ddof):
  r = _binary_groups([0, 1, 4, 7, 8])
  for kind, fn in (("grpo", adv.grpo), ("ngrpo", adv.ngrpo)):
    got = np.asarray(variant(fn, static_argnames=("ddof",))(r, ddof=ddof))
    np.testing.assert_allclose(got, ref_dense(r, None, kind, ddof=ddof), rtol=1e-5, atol=1e-6)
  # All-correct: sigma' = 0 -> advantage exactly 0 for NGRPO as well.
  np.testing.assert_array_equal(np.asarray(variant(adv.ngrpo, static_argnames=("ddof",))(r, ddof=ddof))[-1],
                                0.0)


def test_eq6_ddof0_numbers():
  a = np.asarray(adv.ngrpo(_binary_groups([1, 0]), ddof=0))
  assert round(float(a[0, 0]), 2) == 1.87 and round(float(a[0, 1]), 2) == -0.53
  assert round(float(a[1, 0]), 2) == -0.35


# ------------------------------------------------------------------------------------------------------
# Against the numpy reference, dense with padding and ragged.
# ------------------------------------------------------------------------------------------------------

_ESTIMATORS = [
    ("grpo", adv.grpo, adv.grpo_ragged, dict(ddof=1)),
    ("grpo", adv.grpo, adv.grpo_ragged, dict(ddof=0, eps=0.0)),
    ("ngrpo", adv.ngrpo, adv.ngrpo_ragged, dict()),
    ("ngrpo", adv.ngrpo, adv.ngrpo_ragged, dict(r_virtual=0.5, num_virtual=2, ddof=0)),
    ("ngrpo", adv.ngrpo, adv.ngrpo_ragged, dict(r_virtual=0.0, num_virtual=4, eps=0.0)),
    ("dr_grpo", adv.dr_grpo, adv.dr_grpo_ragged, dict()),
    ("rloo", adv.rloo, adv.rloo_ragged, dict()),
]


@pytest.mark.parametrize("kind,dense_fn,ragged_fn,kw", _ESTIMATORS)
def test_dense_masked_vs_numpy(variant, kind, dense_fn, ragged_fn, kw):
  rng = np.random.default_rng(0)
  r = rng.uniform(-1, 2, (6, 5)).astype(np.float32)
  r[0] = 1.0            # constant group
  mask = rng.uniform(size=r.shape) > 0.3
  mask[1] = [True, False, False, False, False]   # singleton group
  mask[2] = False                                # empty group
  r_padded = np.where(mask, r, np.nan).astype(np.float32)   # NaN in padding must not leak
  got = np.asarray(variant(dense_fn, static_argnames=tuple(kw))(r_padded, mask, **kw))
  assert np.all(np.isfinite(got))
  np.testing.assert_array_equal(got[~mask], 0.0)
  np.testing.assert_allclose(got, ref_dense(r, mask, kind, **kw), rtol=2e-5, atol=2e-5)
  ref_kw = {k: v for k, v in kw.items()}
  # Ragged: shuffled flat layout of the same groups, with invalid entries carrying junk ids.
  ids = np.repeat(np.arange(6), 5)
  perm = rng.permutation(30)
  flat_r, flat_ids, flat_valid = r_padded.reshape(-1)[perm], ids[perm], mask.reshape(-1)[perm]
  flat_ids = np.where(flat_valid, flat_ids, 99)
  ragged = variant(ragged_fn, static_argnames=("num_groups", *kw))
  got_ragged = np.asarray(ragged(flat_r, flat_ids, 6, flat_valid, **kw))
  np.testing.assert_allclose(got_ragged, got.reshape(-1)[perm], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      got_ragged, ref_ragged(r.reshape(-1)[perm], flat_ids, flat_valid, 6, kind, **ref_kw), rtol=2e-5, atol=2e-5)


def test_ragged_variable_group_sizes_vs_loop():
  rng = np.random.default_rng(1)
  sizes = [1, 2, 3, 8, 5]
  ids = np.concatenate([np.full(s, g) for g, s in enumerate(sizes)])
  r = (rng.uniform(size=ids.shape) > 0.5).astype(np.float32)
  got = np.asarray(adv.ngrpo_ragged(r, ids, len(sizes)))
  looped = np.concatenate([np.asarray(adv.ngrpo(r[ids == g][None]))[0] for g in range(len(sizes))])
  np.testing.assert_allclose(got, looped, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got, ref_ragged(r, ids, np.ones_like(ids, bool), 5, "ngrpo"), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("ddof", [0, 1])
def test_group_stats_vs_numpy(variant, ddof):
  rng = np.random.default_rng(2)
  r = (rng.uniform(size=(7, 6)) > 0.5).astype(np.float32)
  r[0], r[1] = 0.0, 1.0
  r[2] = rng.uniform(size=6)
  mask = rng.uniform(size=r.shape) > 0.2
  mask[0, :] = True
  mask[3] = False
  s = variant(adv.group_stats, static_argnames=("ddof",))(r, mask, ddof=ddof)
  ids = np.repeat(np.arange(7), 6)
  stats_ragged = variant(adv.group_stats_ragged, static_argnames=("num_groups", "ddof"))
  s_r = stats_ragged(r.reshape(-1), ids, 7, mask.reshape(-1), ddof=ddof)
  for g in range(7):
    v = r[g][mask[g]]
    n = len(v)
    for stats in (s, s_r):
      assert float(stats.count[g]) == n
      np.testing.assert_allclose(float(stats.mean[g]), v.mean() if n else 0.0, atol=1e-6)
      exp_std = np.std(v, ddof=ddof) if n - ddof > 0 else 0.0
      np.testing.assert_allclose(float(stats.std[g]), exp_std, atol=1e-6)
      assert bool(stats.all_correct[g]) == (n > 0 and bool(np.all(v >= 0.5)))
      assert bool(stats.all_incorrect[g]) == (n > 0 and bool(np.all(v < 0.5)))
      assert bool(stats.is_constant[g]) == (n > 0 and len(set(v.tolist())) == 1)


# ------------------------------------------------------------------------------------------------------
# Hypothesis properties.
# ------------------------------------------------------------------------------------------------------

_SETTINGS = hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
_binary_rows = st.lists(st.lists(st.booleans(), min_size=8, max_size=8), min_size=4, max_size=4)
_ngrpo_j = jax.jit(adv.ngrpo)
_grpo_j = jax.jit(adv.grpo)


@_SETTINGS
@hypothesis.given(_binary_rows)
def test_property_binary_no_sign_flip_and_negative_sum(rows):
  r = np.asarray(rows, np.float32)
  a_g, a_n = np.asarray(_grpo_j(r)), np.asarray(_ngrpo_j(r))
  nonzero = a_g != 0
  assert np.all(np.sign(a_n[nonzero]) == np.sign(a_g[nonzero]))
  all_max = np.all(r == 1.0, axis=1)
  sums = a_n.sum(axis=1)
  assert np.all(sums[~all_max] < 0)
  np.testing.assert_array_equal(a_n[all_max], 0.0)
  np.testing.assert_allclose(a_g.sum(axis=1), 0.0, atol=1e-5)
  wrong = np.all(r == 0.0, axis=1)
  if wrong.any():
    assert np.all(a_n[wrong] < 0) and np.all(a_n[wrong] == a_n[wrong][:, :1])


@_SETTINGS
@hypothesis.given(st.lists(st.floats(-5, 5, width=32), min_size=6, max_size=6),
                  st.floats(-3, 3), st.floats(0.1, 10.0), st.floats(-2, 2))
def test_property_shift_and_scale_invariance(values, shift, scale, r_virtual):
  r = np.asarray([values], np.float64)
  hypothesis.assume(np.ptp(np.append(r, r_virtual)) > 1e-2)
  base = ref_dense(r, None, "ngrpo", r_virtual=r_virtual, eps=0.0)
  np.testing.assert_allclose(base, np.asarray(adv.ngrpo(r.astype(np.float32), r_virtual=r_virtual, eps=0.0)),
                             rtol=1e-3, atol=1e-3)
  shifted = adv.ngrpo((r + shift).astype(np.float32), r_virtual=r_virtual + shift, eps=0.0)
  scaled = adv.ngrpo((r * scale).astype(np.float32), r_virtual=r_virtual * scale, eps=0.0)
  grpo_scaled = adv.grpo((r * scale + shift).astype(np.float32), eps=0.0)
  np.testing.assert_allclose(np.asarray(shifted), base, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.asarray(scaled), base, rtol=1e-3, atol=1e-3)
  hypothesis.assume(np.ptp(r) > 1e-2)
  np.testing.assert_allclose(np.asarray(grpo_scaled), ref_dense(r, None, "grpo", eps=0.0), rtol=1e-3,
                             atol=1e-3)


def test_continuous_rewards_can_flip_sign():
  r = np.asarray([[0.2, 0.6, 0.7]], np.float32)
  assert float(adv.grpo(r)[0, 1]) > 0 > float(adv.ngrpo(r)[0, 1])


# ------------------------------------------------------------------------------------------------------
# Degenerate groups and validation.
# ------------------------------------------------------------------------------------------------------


def test_group_size_one(variant):
  r = np.asarray([[1.0], [0.0]], np.float32)
  for fn in (adv.grpo, adv.dr_grpo, adv.ngrpo):
    out = np.asarray(variant(fn)(r))
    assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(np.asarray(variant(adv.grpo)(r)), 0.0)
  np.testing.assert_allclose(np.asarray(variant(adv.ngrpo)(r)), ref_dense(r, None, "ngrpo"), atol=1e-5)
  with pytest.raises(ValueError, match="rloo"):
    adv.rloo(r)
  np.testing.assert_array_equal(np.asarray(adv.rloo_ragged(r[:, 0], np.arange(2), 2)), 0.0)


@pytest.mark.parametrize("call,match", [
    (lambda: adv.grpo(np.zeros(8)), "rewards"),
    (lambda: adv.grpo(np.zeros((2, 8)), np.ones((2, 7), bool)), "mask"),
    (lambda: adv.grpo(np.array([[0.0, np.nan]])), "rewards"),
    (lambda: adv.grpo(np.zeros((2, 8)), ddof=-1), "ddof"),
    (lambda: adv.grpo(np.zeros((2, 8)), eps=-1.0), "eps"),
    (lambda: adv.ngrpo(np.zeros((2, 8)), r_virtual=float("nan")), "r_virtual"),
    (lambda: adv.ngrpo(np.zeros((2, 8)), num_virtual=-1), "num_virtual"),
    (lambda: adv.ngrpo_ragged(np.zeros(4), np.array([0, 1, 2, 3]), 2), "group_ids"),
    (lambda: adv.ngrpo_ragged(np.zeros(4), np.zeros(3, int), 2), "group_ids"),
    (lambda: adv.ngrpo_ragged(np.zeros(4), np.zeros(4), 2), "group_ids"),
    (lambda: adv.ngrpo_ragged(np.zeros(4), np.zeros(4, int), 0), "num_groups"),
    (lambda: adv.w_reinforce(np.zeros(4), lam=-0.1), "lam"),
    (lambda: adv.w_reinforce(np.array([np.nan])), "rewards"),
    (lambda: adv.gae(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3))), "values"),
    (lambda: adv.gae(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)), gamma=1.5), "gamma"),
])
def test_validation_errors(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


_GROUP_ESTIMATORS = [(adv.grpo, {}), (adv.grpo, {"eps": 0.0}), (adv.ngrpo, {"num_virtual": 0}), (adv.dr_grpo, {}),
                     (adv.rloo, {})]


@hypothesis.settings(max_examples=15, deadline=None, derandomize=True)     # each example compiles its shapes
@hypothesis.given(st.floats(-1e6, 1e6, width=32), st.integers(2, 17), st.integers(0, len(_GROUP_ESTIMATORS) - 1))
def test_property_equal_rewards_give_exactly_zero_for_any_value(value, g, which):
  # Regression: grpo([[0.7] * 7]) was +0.056 and a group of 10 × 4.2379 got −0.317 (mean ≠ value by an ulp,
  # divided by std + eps = 1e-6).
  fn, kw = _GROUP_ESTIMATORS[which]
  rewards = np.full((2, g), value, np.float32)
  mask = np.ones((2, g), bool)
  mask[1, -1] = False                                     # a padded sample does not break homogeneity
  for out in (fn(rewards, mask, **kw), jax.jit(lambda r, m: fn(r, m, **kw))(rewards, mask)):
    np.testing.assert_array_equal(np.asarray(out), 0.0)
  ragged = adv.grpo_ragged(rewards.reshape(-1), np.repeat(np.arange(2), g), 2, mask.reshape(-1))
  np.testing.assert_array_equal(np.asarray(ragged), 0.0)
  np.testing.assert_array_equal(np.asarray(adv.ngrpo(np.full((1, g), value, np.float32), r_virtual=float(value))),
                                0.0)


def test_issue_examples_of_equal_rewards_are_zero():
  assert np.all(np.asarray(adv.grpo(np.array([[0.7] * 7], np.float32))) == 0.0)
  assert np.all(np.asarray(adv.grpo(np.array([[4.2379] * 10], np.float32))) == 0.0)


def test_nonfinite_rewards_raise_eagerly_and_are_padding_under_jit():
  rewards = np.array([[0.0, np.nan, 1.0, 1.0], [1.0, 0.0, np.inf, 0.0], [0.0, 1.0, 1.0, 0.0]], np.float32)
  with pytest.raises(ValueError, match="`rewards` contains NaN or infinite values"):
    adv.grpo(rewards)
  as_padding = adv.grpo(np.nan_to_num(rewards, posinf=0.0), np.isfinite(rewards))
  for fn in (adv.grpo, adv.ngrpo, adv.dr_grpo, adv.rloo):
    jitted = np.asarray(jax.jit(fn)(rewards))
    np.testing.assert_array_equal(jitted, np.asarray(jax.jit(fn)(np.nan_to_num(rewards, posinf=0.0),
                                                                 np.isfinite(rewards))))
    assert np.all(np.isfinite(jitted)) and jitted[0, 1] == 0.0 and jitted[1, 2] == 0.0
    assert np.any(jitted[0] != 0.0) and np.any(jitted[1] != 0.0)   # the rest of the group still learns
  np.testing.assert_array_equal(np.asarray(jax.jit(adv.grpo)(rewards)), np.asarray(as_padding))
  assert int(jax.jit(adv.nonfinite_count)(rewards)) == 2
  assert int(adv.nonfinite_count(rewards, np.isfinite(rewards))) == 0


# ------------------------------------------------------------------------------------------------------
# Fixed-advantage family, filters, GAE.
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold,lam", [(0.5, 0.1), (0.0, 1.0)])
def test_fixed_family_vs_numpy(variant, threshold, lam):
  rng = np.random.default_rng(3)
  r = rng.choice([-1.0, 0.0, 1.0], size=(4, 6)).astype(np.float32)
  mask = rng.uniform(size=r.shape) > 0.2
  correct = r >= threshold
  exp_w = np.where(mask, np.where(correct, lam, -1.0), 0.0)
  w_reinforce = variant(adv.w_reinforce, static_argnames=("lam", "threshold"))
  psr_only = variant(adv.psr_only, static_argnames=("threshold",))
  nsr_only = variant(adv.nsr_only, static_argnames=("threshold",))
  np.testing.assert_allclose(np.asarray(w_reinforce(r, mask, lam=lam, threshold=threshold)), exp_w)
  np.testing.assert_array_equal(np.asarray(psr_only(r, mask, threshold=threshold)), np.where(mask & correct, 1.0, 0.0))
  np.testing.assert_array_equal(np.asarray(nsr_only(r, mask, threshold=threshold)),
                                np.where(mask & ~correct, -1.0, 0.0))
  # Flat layout (ragged use) gives the same per-sample values.
  np.testing.assert_allclose(np.asarray(adv.w_reinforce(r.reshape(-1), mask.reshape(-1), lam=lam,
                                                        threshold=threshold)), exp_w.reshape(-1))


def test_group_filters(variant):
  r = np.asarray([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 0], [0.5, 0.5, 0.5, 0.5]], np.float32)
  mask = np.ones(r.shape, bool)
  mask[3, 3] = False          # the only wrong sample is padding -> homogeneous-correct
  exp_dapo = [len(set(r[g][mask[g]].tolist())) > 1 for g in range(5)]
  exp_ngrpo = [not np.all(r[g][mask[g]] == 1.0) for g in range(5)]
  np.testing.assert_array_equal(np.asarray(variant(adv.dapo_group_filter)(r, mask)), exp_dapo)
  np.testing.assert_array_equal(np.asarray(variant(adv.ngrpo_group_filter)(r, mask)), exp_ngrpo)
  ids = np.repeat(np.arange(5), 4)
  for ragged_filter, expected in ((adv.dapo_group_filter_ragged, exp_dapo), (adv.ngrpo_group_filter_ragged, exp_ngrpo)):
    keep = variant(ragged_filter, static_argnames=("num_groups",))(r.reshape(-1), ids, 5, mask.reshape(-1))
    np.testing.assert_array_equal(np.asarray(keep), expected)


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.8), (0.5, 0.0)])
def test_gae_vs_looped_numpy(variant, gamma, lam):
  rng = np.random.default_rng(4)
  b, t = 4, 7
  rewards = rng.normal(size=(b, t)).astype(np.float32)
  values = rng.normal(size=(b, t)).astype(np.float32)
  mask = rng.uniform(size=(b, t)) > 0.3     # includes interior gaps
  mask[0] = [True] * 5 + [False] * 2        # the usual prefix mask
  mask[1] = False                           # empty row
  rewards[~mask] = np.nan                   # padding junk must not leak
  a, ret = variant(adv.gae, static_argnames=("gamma", "lam"))(rewards, values, mask, gamma=gamma, lam=lam)
  exp_a, exp_ret = ref_gae(rewards, values, mask, gamma, lam)
  chex.assert_trees_all_close((np.asarray(a), np.asarray(ret)), (exp_a, exp_ret), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------
# Batch-normalised estimators, GDPO, RL-ZVP, LENS, GPG (float64 loops from the papers' formulas).
# ------------------------------------------------------------------------------------------------------


def _mixed_rewards(seed=0, n=5, g=6, binary=False):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, 2, (n, g)).astype(np.float32) if binary else rng.normal(size=(n, g)).astype(np.float32)
  r[1] = r[1, 0]                                     # a homogeneous group
  mask = np.ones((n, g), bool)
  mask[2, 4:] = False                                # a padded group
  return r, mask


def _np_std(x, ddof):
  x = np.asarray(x, np.float64)
  return np.sqrt(((x - x.mean()) ** 2).sum() / (len(x) - ddof)) if len(x) > ddof else 0.0


def test_reinforce_pp_and_baseline_and_batch_std_vs_numpy(variant):
  r, mask = _mixed_rewards(1)
  vals = r.astype(np.float64)[mask]
  eps = 1e-6
  want = np.zeros(r.shape)
  want[mask] = (vals - vals.mean()) / (_np_std(vals, 1) + eps)
  np.testing.assert_allclose(variant(adv.reinforce_pp)(r, mask), want, rtol=1e-4, atol=1e-6)
  centred = np.zeros(r.shape)
  for i in range(r.shape[0]):
    v = r[i, mask[i]].astype(np.float64)
    centred[i, mask[i]] = v - v.mean()
  c = centred[mask]
  want_b = np.zeros(r.shape)
  want_b[mask] = (c - c.mean()) / (_np_std(c, 1) + eps)
  np.testing.assert_allclose(variant(adv.reinforce_pp_baseline)(r, mask), want_b, rtol=1e-4, atol=1e-6)
  want_s = np.where(mask, centred / (_np_std(vals, 1) + eps), 0.0)
  np.testing.assert_allclose(variant(adv.grpo_batch_std)(r, mask), want_s, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(adv.grpo_batch_std(r, mask))[1] == 0)    # homogeneous group: 0


@hypothesis.settings(max_examples=30, deadline=None, derandomize=True)
@hypothesis.given(st.floats(-50, 50), st.floats(0.1, 10))
def test_batch_normalised_estimators_shift_invariant_scale_equivariant(shift, scale):
  r, mask = _mixed_rewards(2)
  for fn, equivariant in ((adv.grpo_batch_std, True), (adv.reinforce_pp, False), (adv.reinforce_pp_baseline, False)):
    base = np.asarray(fn(r, mask, eps=0.0))
    shifted = np.asarray(fn((r + shift).astype(np.float32), mask, eps=0.0))
    np.testing.assert_allclose(shifted, base, rtol=2e-3, atol=2e-3, err_msg=fn.__name__)
    scaled = np.asarray(fn((r * scale).astype(np.float32), mask, eps=0.0))
    np.testing.assert_allclose(scaled, base, rtol=2e-3, atol=2e-3, err_msg=fn.__name__)
  del equivariant


def test_gdpo_vs_numpy_and_one_component_is_grpo(variant):
  rng = np.random.default_rng(3)
  r = np.stack([rng.integers(0, 2, (4, 6)), rng.integers(0, 2, (4, 6)) * 0.5], -1).astype(np.float32)
  mask = np.ones((4, 6), bool)
  mask[3, 5] = False
  w = (1.0, 2.0)
  per = np.zeros((4, 6, 2))
  for k in range(2):
    for i in range(4):
      per[i, mask[i], k] = ref_group(r[i, mask[i], k], "grpo")
  total = per[..., 0] * w[0] + per[..., 1] * w[1]
  t = total[mask]
  want = np.where(mask, (total - t.mean()) / (_np_std(t, 1) + 1e-6), 0.0)
  fn = variant(adv.gdpo, static_argnames=("weights", "batch_normalize"))
  np.testing.assert_allclose(fn(r, mask, weights=w), want, rtol=1e-4, atol=1e-5)
  one = r[..., :1]
  np.testing.assert_allclose(fn(one, mask, batch_normalize=False), adv.grpo(one[..., 0], mask), rtol=1e-6)
  g = np.asarray(adv.grpo(one[..., 0], mask), np.float64)[mask]
  np.testing.assert_allclose(np.asarray(fn(one, mask))[mask], (g - g.mean()) / (_np_std(g, 1) + 1e-6), rtol=1e-4,
                             atol=1e-5)
  # Decoupling: two reward combinations GRPO maps to the same advantage stay apart under GDPO.
  # (correct, format) = (1, 1) vs (0, 0) and (1, 0) vs (0, 0): GRPO on the summed reward gives both groups
  # the same advantages, GDPO keeps the first (better on both components) apart.
  combos = np.asarray([[[1, 1], [0, 0]], [[1, 0], [0, 0]]], np.float32)
  summed = np.asarray(adv.grpo(combos.sum(-1)))
  np.testing.assert_allclose(summed[0], summed[1], rtol=1e-6)
  gd = np.asarray(adv.gdpo(combos, batch_normalize=False))
  np.testing.assert_allclose(gd[0], 2 * gd[1], rtol=1e-5)
  assert gd[0, 0] > gd[1, 0] > 0
  with pytest.raises(ValueError, match="weights"):
    adv.gdpo(r, mask, weights=(1.0,))


def test_rl_zvp_vs_numpy(variant):
  r = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
  rng = np.random.default_rng(4)
  h = rng.uniform(0, 3, (3, 4, 5)).astype(np.float32)
  tm = np.ones((3, 4, 5), bool)
  tm[:, :, 3:] = np.arange(4)[None, :, None] % 2 == 0        # shorter responses
  got = np.asarray(variant(adv.rl_zvp, static_argnames=("alpha",))(r, None, h, tm, alpha=0.1))
  for i in range(3):
    for j in range(4):
      ts = np.nonzero(tm[i, j])[0]
      if i == 0:
        want = ref_group(r[0], "grpo")[j]
        np.testing.assert_allclose(got[i, j, ts], want, rtol=1e-5)
      elif i == 1:
        np.testing.assert_allclose(got[i, j, ts], 0.1 * h[i, j, ts], rtol=1e-5)
      else:
        np.testing.assert_allclose(got[i, j, ts], -0.1 * (h[i, j, ts].max() - h[i, j, ts]), rtol=1e-5, atol=1e-7)
      assert np.all(got[i, j, ~tm[i, j]] == 0)
  # Not a function of the entropy's gradient: it is treated as a constant.
  g = jax.grad(lambda e: jnp.sum(adv.rl_zvp(r, None, e, tm)))(jnp.asarray(h))
  assert np.all(np.asarray(g) == 0)


def ref_lens(r, seq_logp, lengths):
  """§5.1 of arXiv 2510.08696 for one group, float64."""
  g = len(r)
  c = (np.asarray(r) >= 0.5).astype(np.float64)
  pbar = np.exp(np.asarray(seq_logp, np.float64) / np.asarray(lengths, np.float64))
  if c.sum() > 0:
    d_imp = 1.0 / (np.sum(c / pbar) / g)
    d = max(d_imp, 2 * pbar.max())
  else:
    d = 2 * pbar.max()
  return c - (1 - c) * (1.0 / g) * pbar / (d - pbar)


def test_lens_vs_numpy(variant):
  r = np.array([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  rng = np.random.default_rng(5)
  lengths = rng.integers(3, 9, r.shape).astype(np.float32)
  seq_logp = (-rng.uniform(0.1, 1.5, r.shape) * lengths).astype(np.float32)
  cal = np.asarray(variant(adv.lens_rewards)(r, None, seq_logp, lengths))
  for i in range(3):
    np.testing.assert_allclose(cal[i], ref_lens(r[i], seq_logp[i], lengths[i]), rtol=1e-5, atol=1e-7)
  assert np.all(cal >= -1) and np.all(cal <= 1)
  a = np.asarray(variant(adv.lens, static_argnames=("alpha",))(r, None, seq_logp, lengths, alpha=0.5))
  np.testing.assert_allclose(a[0], ref_group(ref_lens(r[0], seq_logp[0], lengths[0]), "grpo"), rtol=1e-4)
  neg = ref_lens(r[1], seq_logp[1], lengths[1])
  np.testing.assert_allclose(a[1], 0.5 * (neg - neg.mean()), rtol=1e-5, atol=1e-7)
  assert np.all(a[2] == 0)
  # The most confident mistake of the all-wrong group is pushed down hardest.
  pbar = np.exp(seq_logp[1] / lengths[1])
  assert np.argmin(a[1]) == np.argmax(pbar)


def test_gpg_estimator_vs_numpy(variant):
  r, mask = _mixed_rewards(6, binary=True)
  got = np.asarray(variant(adv.gpg, static_argnames=("normalize_std",))(r, mask))
  total = mask.sum()
  dead = sum(mask[i].sum() for i in range(r.shape[0]) if len(set(r[i, mask[i]].tolist())) == 1)
  alpha = total / (total - dead)
  for i in range(r.shape[0]):
    np.testing.assert_allclose(got[i, mask[i]], alpha * ref_group(r[i, mask[i]], "grpo"), rtol=1e-5, atol=1e-7)
  raw = np.asarray(adv.gpg(r, mask, normalize_std=False))
  for i in range(r.shape[0]):
    v = r[i, mask[i]].astype(np.float64)
    np.testing.assert_allclose(raw[i, mask[i]], alpha * (v - v.mean()), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", [adv.reinforce_pp, adv.reinforce_pp_baseline, adv.grpo_batch_std, adv.gpg])
def test_batch_estimators_vmap_and_grad_safe(fn):
  rs = [_mixed_rewards(s)[0] for s in (7, 8)]
  got = np.asarray(jax.vmap(fn)(np.stack(rs)))
  for i, r in enumerate(rs):
    np.testing.assert_allclose(got[i], np.asarray(fn(r)), rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda r: jnp.sum(fn(r) * jnp.arange(r.size).reshape(r.shape)))(jnp.asarray(rs[0]))
  assert np.all(np.isfinite(np.asarray(g)))
