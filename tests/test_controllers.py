"""ngrpo_jax.controllers: KL in the reward, the adaptive KL controller, the adaptive entropy coefficient."""
import numpy as np
import pytest

from ngrpo_jax import controllers


def test_kl_in_reward_vs_numpy(variant):
  rng = np.random.default_rng(0)
  logp = np.log(rng.uniform(0.1, 1, (3, 5))).astype(np.float32)
  ref = (logp + rng.normal(0, 0.2, (3, 5))).astype(np.float32)
  mask = np.arange(5)[None] < np.array([[5], [2], [0]])
  r = np.asarray([1.0, 0.0, 1.0], np.float32)
  seq, tok = variant(controllers.kl_in_reward)(r, logp, ref, mask, 0.1)
  k1 = np.where(mask, logp.astype(np.float64) - ref, 0.0)
  np.testing.assert_allclose(seq, r - 0.1 * k1.sum(-1), rtol=1e-5)
  want = -0.1 * k1
  want[0, 4] += 1.0
  want[1, 1] += 0.0
  np.testing.assert_allclose(tok, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(tok).sum(-1)[:2], np.asarray(seq)[:2], rtol=1e-5)


@pytest.mark.parametrize("kl,expected_e", [(0.5, 0.2), (0.05, -0.2), (0.11, 0.1)])
def test_adaptive_kl_coef_vs_ziegler(kl, expected_e):
  beta = float(controllers.adaptive_kl_coef(0.2, kl, 64, target=0.1, horizon=1000))
  np.testing.assert_allclose(beta, 0.2 * (1 + expected_e * 64 / 1000), rtol=1e-5)


def test_adaptive_entropy_coef_follows_the_target():
  c = 0.0
  applied = []
  for e in (0.1, 0.1, 0.3, 0.1):
    c, a = controllers.adaptive_entropy_coef(c, e, target=0.2, delta=0.005, coef_max=0.008)
    applied.append(float(a))
  np.testing.assert_allclose(applied, [0.005, 0.008, 0.0, 0.008], rtol=1e-6)   # capped at coef_max
  c, a = controllers.adaptive_entropy_coef(0.002, 0.5, target=0.2, delta=0.005)
  assert float(c) == 0.0 and float(a) == 0.0                               # never below 0
  with pytest.raises(ValueError, match="target"):
    controllers.adaptive_entropy_coef(0.0, 0.1, target=-1.0, delta=0.1)
