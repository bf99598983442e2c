"""Tests of ngrpo_jax.metrics: pass@k vs brute-force enumeration, the paper's AUC, bootstrap intervals."""
import itertools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import metrics

# NGRPO paper (arXiv 2509.18851), Table 1, AIME2025, NGRPO row: pass@k for k = 1, 2, 4, ..., 256 and its AUC.
AIME25_NGRPO_PASS_AT_K = [10.90, 15.46, 20.25, 25.25, 30.08, 34.87, 40.57, 48.31, 60.00]
AIME25_NGRPO_AUC = 31.28


def brute_force_pass_at_k(n, c, k):
  """Fraction of the k-subsets of n samples (c of them correct) that contain a correct sample."""
  samples = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_vs_brute_force():
  for n in range(1, 8):
    for c in range(n + 1):
      for k in range(1, n + 1):
        got = float(metrics.pass_at_k(n, c, k))
        assert got == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(st.integers(1, 300), st.data())
def test_pass_at_k_vs_comb_formula(n, data):
  c = data.draw(st.integers(0, n))
  k = data.draw(st.integers(1, n))
  exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
  assert float(metrics.pass_at_k(n, c, k)) == pytest.approx(exact, abs=1e-10)


def test_pass_at_k_vectorised_equals_loop():
  rng = np.random.default_rng(0)
  n = rng.integers(8, 64, 50)
  c = rng.integers(0, n + 1)
  vec = metrics.pass_at_k(n, c, 8)
  loop = np.array([metrics.pass_at_k(int(a), int(b), 8) for a, b in zip(n, c)])
  np.testing.assert_allclose(vec, loop, rtol=0, atol=1e-15)
  ks, curve = metrics.pass_at_k_curve(n, c, ks=[1, 2, 4, 8])
  np.testing.assert_allclose(curve, [np.mean(metrics.pass_at_k(n, c, int(k))) for k in ks])
  ks_all, _ = metrics.pass_at_k_curve(n, c)
  np.testing.assert_array_equal(ks_all, np.arange(1, n.min() + 1))
  np.testing.assert_allclose(metrics.pass_at_k(n, c, 1), c / n, atol=1e-14)


@pytest.mark.parametrize("call,match", [
    (lambda: metrics.pass_at_k(4, 2, 5), "k"),
    (lambda: metrics.pass_at_k(4, 2, 0), "k"),
    (lambda: metrics.pass_at_k(4, 5, 2), "num_correct"),
    (lambda: metrics.pass_at_k([4, 8], [1, -1], 2), "num_correct"),
    (lambda: metrics.pass_at_k(4.5, 2, 2), "num_samples"),
    (lambda: metrics.pass_at_k_auc([0.1]), "values"),
    (lambda: metrics.pass_at_k_auc([0.1, np.nan]), "values"),
    (lambda: metrics.pass_at_k_auc([0.1, 0.2], ks=[2, 1]), "ks"),
    (lambda: metrics.pass_at_k_auc([0.1, 0.2], ks=[1, 2, 4]), "ks"),
    (lambda: metrics.pass_at_k_auc_loglog([0.0, 0.2]), "values"),
    (lambda: metrics.bootstrap_ci([1.0, np.nan], 0), "per_problem_values"),
    (lambda: metrics.bootstrap_ci([1.0, 2.0], 0, alpha=1.5), "alpha"),
    (lambda: metrics.bootstrap_ci([1.0, 2.0], 0, num_resamples=0), "num_resamples"),
])
def test_validation_errors(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


def test_auc_paper_table1_aime2025_ngrpo():
  auc = metrics.pass_at_k_auc(np.asarray(AIME25_NGRPO_PASS_AT_K) / 100)
  assert round(auc, 2) == AIME25_NGRPO_AUC


def test_auc_matches_closed_form_and_numpy_trapezoid():
  p = np.asarray(AIME25_NGRPO_PASS_AT_K) / 100
  closed = 100 * (p[0] + 2 * p[1:-1].sum() + p[-1]) / 16
  assert metrics.pass_at_k_auc(p) == pytest.approx(closed, rel=1e-12)
  rng = np.random.default_rng(1)
  ks = np.array([1, 3, 5, 16, 40])
  y = np.sort(rng.uniform(size=5))
  x = np.log2(ks)
  ref = 100 * np.trapezoid(y, x) / (x[-1] - x[0])
  assert metrics.pass_at_k_auc(y, ks=ks) == pytest.approx(ref, rel=1e-12)
  # The loglog variant of a constant curve is that constant; it never exceeds the linear AUC (AM-GM).
  assert metrics.pass_at_k_auc_loglog([0.3] * 4) == pytest.approx(30.0)
  assert metrics.pass_at_k_auc_loglog(p) <= metrics.pass_at_k_auc(p)


def test_auc_from_counts_end_to_end():
  rng = np.random.default_rng(2)
  n = np.full(30, 16)
  c = rng.integers(0, 17, 30)
  ks, curve = metrics.pass_at_k_curve(n, c, ks=[1, 2, 4, 8, 16])
  auc = metrics.pass_at_k_auc(curve, ks=ks)
  assert curve[0] * 100 <= auc <= curve[-1] * 100


def test_bootstrap_ci():
  rng = np.random.default_rng(3)
  x = rng.uniform(size=200)
  a = metrics.bootstrap_ci(x, 0, num_resamples=500)
  b = metrics.bootstrap_ci(x, 0, num_resamples=500)
  assert a == b or all(np.array_equal(u, v) for u, v in zip(a, b))
  assert a.lower < a.estimate < a.upper
  assert a.estimate == pytest.approx(x.mean())
  # Roughly mean ± 1.96 SE.
  se = x.std(ddof=1) / np.sqrt(len(x))
  assert a.upper - a.lower == pytest.approx(2 * 1.96 * se, rel=0.2)
  narrow = metrics.bootstrap_ci(x[:20], 0, num_resamples=500)
  assert narrow.upper - narrow.lower > a.upper - a.lower
  with_key = metrics.bootstrap_ci(np.stack([x, 2 * x], 1), jax.random.key(0), num_resamples=300)
  assert with_key.lower.shape == (2,) and np.all(with_key.lower < with_key.upper)
  const = metrics.bootstrap_ci(np.full(10, 0.25), 1)
  assert const.lower == const.upper == 0.25


def test_auc_refuses_values_outside_zero_one():
  # Regression: pass_at_k_auc([10., 20., 30.]) returned 2000.0 (percentages passed as fractions).
  with pytest.raises(ValueError, match=r"fractions in \[0, 1\].*percentages\? divide by 100"):
    metrics.pass_at_k_auc([10.0, 20.0, 30.0])
  with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
    metrics.pass_at_k_auc_loglog([0.5, 1.2])
  with pytest.raises(ValueError, match=r"fractions in \[0, 1\]"):
    metrics.pass_at_k_auc([-0.1, 0.5])
  assert metrics.pass_at_k_auc([0.1, 0.2, 0.3]) == pytest.approx(20.0)


def test_metrics_say_they_are_host_side_under_jit():
  # README: the math core's advantages and losses are jit-safe; metrics are host-side and say so under jit.
  c = jnp.array([0, 3, 16])
  with pytest.raises(TypeError, match="`num_correct` is a traced JAX value.*outside jax.jit"):
    jax.jit(lambda c: metrics.pass_at_k(16, c, 4))(c)
  with pytest.raises(TypeError, match="`values` is a traced JAX value"):
    jax.jit(metrics.pass_at_k_auc)(jnp.array([0.1, 0.2]))
  with pytest.raises(TypeError, match="traced JAX value"):
    jax.vmap(lambda x: metrics.bootstrap_ci(x, 0).estimate)(jnp.ones((2, 3)))
  np.testing.assert_allclose(metrics.pass_at_k(16, c, 4), [0.0, 1 - (13 * 12 * 11 * 10) / (16 * 15 * 14 * 13), 1.0])


def test_readme_math_core_is_jit_vmap_grad_safe():
  from ngrpo_jax import advantages, losses  # pylint: disable=g-import-not-at-top
  rewards = jnp.array([[1.0, 0, 0, 0, 0, 0, 0, 0]])
  for fn in (advantages.grpo, advantages.ngrpo, advantages.dr_grpo, advantages.rloo, advantages.ngrpo_group_filter,
             advantages.dapo_group_filter, advantages.w_reinforce, advantages.nonfinite_count):
    np.testing.assert_allclose(jax.jit(fn)(rewards), fn(rewards), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(jax.vmap(advantages.ngrpo)(rewards[None]), advantages.ngrpo(rewards)[None], rtol=1e-6)
  logp = jnp.zeros((2, 3))
  grad = jax.grad(lambda lp: losses.policy_loss(lp, logp, jnp.array([1.0, -1.0]), jnp.ones((2, 3)))[0])(logp)
  assert grad.shape == (2, 3) and bool(jnp.all(jnp.isfinite(grad)))


def test_paired_bootstrap():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, 200)
  same = metrics.paired_bootstrap(a, a, 0, num_resamples=500)
  assert same == metrics.PairedComparison(0.0, 0.0, 0.0, 1.0)
  better = metrics.paired_bootstrap(a, np.clip(a + 0.1 + 0.05 * rng.standard_normal(200), 0, 2), 0)
  assert better.lower > 0 and better.lower < better.difference < better.upper
  assert better.p_value == pytest.approx(2 / 10001)                  # every resample > 0: the smallest p, never 0
  noise = metrics.paired_bootstrap(a, a + 0.3 * rng.standard_normal(200), 1)
  assert noise.lower < 0 < noise.upper and noise.p_value > 0.05
  # Two-way (seeds × problems): the same difference with more spread than over problems alone.
  seeds_a = rng.uniform(0, 1, (3, 200))
  seeds_b = seeds_a + np.array([[0.0], [0.2], [0.4]]) + 0.01 * rng.standard_normal((3, 200))
  two_way = metrics.paired_bootstrap(seeds_a, seeds_b, 0, num_resamples=2000)
  pooled = metrics.paired_bootstrap(seeds_a.reshape(-1), seeds_b.reshape(-1), 0, num_resamples=2000)
  assert two_way.difference == pytest.approx(0.2, abs=0.01)
  assert two_way.upper - two_way.lower > 3 * (pooled.upper - pooled.lower)
  with pytest.raises(ValueError, match="same shape"):
    metrics.paired_bootstrap(a, a[:10])
