"""ngrpo_jax.passk_credit against float64 brute force over k-subsets and the papers' closed forms."""
import itertools
import math

import jax
import numpy as np
import pytest

from ngrpo_jax import advantages
from ngrpo_jax import passk_credit as pk


def _groups(seed=0, n=4, g=6, levels=3):
  rng = np.random.default_rng(seed)
  r = rng.integers(0, levels, (n, g)).astype(np.float32)
  mask = np.ones((n, g), bool)
  mask[3, 4:] = False
  return r, mask


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_pkpo_rewards_and_baseline_vs_subset_brute_force(variant, k):
  r, mask = _groups(1)
  g = np.asarray(variant(pk.pkpo_rewards, static_argnames=("k",))(r, mask, k=k))
  a = np.asarray(variant(pk.pkpo, static_argnames=("k",))(r, mask, k=k))
  for gi in range(r.shape[0]):
    idx = [i for i in range(r.shape[1]) if mask[gi, i]]
    for i in idx:
      with_i = [S for S in itertools.combinations(idx, k) if i in S]
      gg = np.mean([max(float(r[gi, j]) for j in S) for S in with_i])
      others = [j for j in idx if j != i]
      subsets = list(itertools.combinations(others, k))
      bb = np.mean([max(float(r[gi, j]) for j in S) for S in subsets]) if subsets else 0.0
      np.testing.assert_allclose(g[gi, i], gg, rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(a[gi, i], gg - bb, rtol=1e-5, atol=1e-5)
    assert np.all(g[gi, ~mask[gi]] == 0) and np.all(a[gi, ~mask[gi]] == 0)


def test_pkpo_k1_is_the_reward_and_rloo():
  r, mask = _groups(2)
  np.testing.assert_allclose(pk.pkpo_rewards(r, mask, k=1), np.where(mask, r, 0.0), rtol=1e-6)
  np.testing.assert_allclose(pk.pkpo(r, mask, k=1), advantages.rloo(r, mask), rtol=1e-5, atol=1e-6)


def test_pkpo_gradient_estimate_is_unbiased_for_pass_at_k():
  """Σ_i (k/n)·g_i·∇log p(y_i) averaged over every possible group equals ∇ pass@k of a Bernoulli(p) policy,
  exactly (enumeration over all 2^n outcomes, float64)."""
  n, k, p = 5, 3, 0.3
  # d/dp log p(y) = y/p − (1 − y)/(1 − p) for y ∈ {0, 1}.
  total = 0.0
  for ys in itertools.product([0.0, 1.0], repeat=n):
    prob = np.prod([p if y else 1 - p for y in ys])
    g = np.asarray(pk.pkpo(np.asarray([ys], np.float32), k=k))[0]
    score = np.asarray([y / p - (1 - y) / (1 - p) for y in ys])
    total += prob * np.sum(k / n * g * score)
  want = k * (1 - p) ** (k - 1)            # d/dp [1 − (1 − p)^k]
  np.testing.assert_allclose(total, want, rtol=1e-4)


def ref_passk(correct, k):
  n, n_neg = len(correct), int(np.sum(~correct))
  mean = 1 - math.comb(n_neg, k) / math.comb(n, k)
  std = math.sqrt(mean * (1 - mean))
  if std == 0:
    return np.zeros(n)
  a_pos = (1 - mean) / std
  a_neg = (1 - mean - math.comb(n_neg - 1, k - 1) / math.comb(n - 1, k - 1)) / std
  return np.where(correct, a_pos, a_neg)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_passk_advantage_vs_closed_form(variant, k):
  r, mask = _groups(3, levels=2)
  r[0] = [1, 0, 0, 0, 0, 0]
  got = np.asarray(variant(pk.passk_advantage, static_argnames=("k",))(r, mask, k=k))
  for gi in range(r.shape[0]):
    c = r[gi, mask[gi]] >= 0.5
    np.testing.assert_allclose(got[gi, mask[gi]], ref_passk(c, k), rtol=1e-4, atol=1e-6)


def test_passk_advantage_is_the_expected_advantage_over_k_subsets():
  """A_i = E over k-subsets S ∋ i of (max(S) − R̄) / σ: the definition the closed form was derived from."""
  r = np.asarray([[1, 0, 0, 1, 0, 0, 0]], np.float32)
  k = 3
  idx = range(7)
  subsets = list(itertools.combinations(idx, k))
  vals = np.asarray([max(r[0, j] for j in S) for S in subsets])
  mean, std = vals.mean(), vals.std()
  want = [np.mean([(max(r[0, j] for j in S) - mean) / std for S in subsets if i in S]) for i in idx]
  np.testing.assert_allclose(pk.passk_advantage(r, k=k)[0], want, rtol=1e-4)


def test_passk_k1_equals_the_mean_baseline_form():
  r, mask = _groups(4, levels=2)
  np.testing.assert_allclose(pk.passk_advantage(r, mask, k=1), advantages.grpo(r, mask, ddof=0, eps=0.0),
                             rtol=1e-4, atol=1e-6)


def test_grpo_passk_vs_numpy(variant):
  r = np.asarray([[0.2, 0.9, 0.5, 0.1], [1, 1, 0, 0], [0.3, 0.3, 0.3, 0.3], [0.4, 0.0, 0.7, 0.0]], np.float32)
  mask = np.ones_like(r, bool)
  mask[3, 2] = False
  got = np.asarray(variant(pk.grpo_passk, static_argnames=("norm_by_std",))(r, mask))
  raw = np.asarray(pk.grpo_passk(r, mask, norm_by_std=False))
  for gi in range(4):
    v = r[gi, mask[gi]].astype(np.float64)
    order = np.argsort(-v, kind="stable")
    gap = v[order[0]] - v[order[1]]
    best = np.nonzero(mask[gi])[0][order[0]]
    want = np.zeros(4)
    want[best] = gap
    np.testing.assert_allclose(raw[gi], want, rtol=1e-6, atol=1e-7)
    std = v.std(ddof=1)
    np.testing.assert_allclose(got[gi], want / (std + 1e-6) if gap else want, rtol=1e-5, atol=1e-7)
  assert np.count_nonzero(got[0]) == 1 and np.all(got[1] == 0)     # a tie at the top gets no credit


def test_unlikeliness_rewards_vs_numpy(variant):
  r = np.asarray([[1, 1, 0, 1], [1, 0, 1, 1]], np.float32)
  seq_logp = np.asarray([[-1.0, -3.0, -0.5, -2.0], [-4.0, -1.0, -2.0, -3.0]], np.float32)
  got = np.asarray(variant(pk.unlikeliness_rewards, static_argnames=("beta",))(r, None, seq_logp, beta=0.25))
  for gi in range(2):
    rank = np.argsort(np.argsort(-seq_logp[gi], kind="stable"), kind="stable")   # 0 = most likely
    want = r[gi] * (1 - 0.25 * (4 - rank) / 4)
    np.testing.assert_allclose(got[gi], want, rtol=1e-6)
  # Among correct answers the rarer one now has the higher reward.
  assert got[0, 1] > got[0, 3] > got[0, 0]
  np.testing.assert_allclose(pk.unlikeliness_rewards(r, None, seq_logp, beta=0.0), r)


def test_binom_and_errors():
  np.testing.assert_allclose(pk.binom(np.arange(8.0), 3.0), [math.comb(n, 3) for n in range(8)], rtol=1e-5)
  assert float(pk.binom(3.0, -1.0)) == 0.0
  with pytest.raises(ValueError, match="k"):
    pk.pkpo(np.zeros((1, 4)), k=0)
  with pytest.raises(ValueError, match="smaller than the group size"):
    pk.passk_advantage(np.zeros((1, 4)), k=4)
  with pytest.raises(ValueError, match="at most the group size"):
    pk.pkpo(np.zeros((1, 4)), k=5)
  with pytest.raises(ValueError, match="seq_logp"):
    pk.unlikeliness_rewards(np.zeros((1, 4)), None, np.zeros((1, 3)))
  jax.jit(pk.pkpo, static_argnames=("k",))(np.zeros((2, 4), np.float32), k=2)


@pytest.mark.parametrize("fn", [pk.pkpo, pk.pkpo_rewards, pk.passk_advantage, pk.grpo_passk])
def test_vmap_over_a_leading_axis_equals_the_loop(fn):
  rs = [_groups(s)[0] for s in (5, 6, 7)]
  got = np.asarray(jax.vmap(fn)(np.stack(rs)))
  for i, r in enumerate(rs):
    np.testing.assert_allclose(got[i], np.asarray(fn(r)), rtol=1e-6, atol=1e-7)
