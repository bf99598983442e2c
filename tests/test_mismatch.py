"""ngrpo_jax.mismatch: importance weights, rejection and metrics vs float64 numpy, and the top-p question."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ngrpo_jax import mismatch
from ngrpo_jax import sampling


def _batch(seed=0, b=5, t=7):
  rng = np.random.default_rng(seed)
  trainer = np.log(rng.uniform(0.05, 1.0, (b, t))).astype(np.float32)
  behaviour = (trainer + rng.normal(0, 0.6, (b, t))).astype(np.float32)
  lengths = rng.integers(1, t + 1, b)
  lengths[2] = 0
  return trainer, behaviour, np.arange(t)[None] < lengths[:, None]


@pytest.mark.parametrize("level", mismatch.IS_LEVELS)
@pytest.mark.parametrize("mode", mismatch.IS_MODES)
def test_importance_weights_vs_numpy(variant, level, mode):
  tr, be, mask = _batch(1)
  fn = variant(mismatch.importance_weights, static_argnames=("level", "mode", "upper", "lower"))
  got = np.asarray(fn(tr, be, mask, level=level, mode=mode, upper=1.5))
  lr = np.where(mask, tr.astype(np.float64) - be, 0.0)
  w = np.exp(lr) if level == "token" else np.exp(lr.sum(-1, keepdims=True)) * np.ones_like(lr)
  w = np.minimum(w, 1.5) if mode == "truncate" else np.where((w >= 1 / 1.5) & (w <= 1.5), w, 0.0)
  np.testing.assert_allclose(got, np.where(mask, w, 0.0), rtol=1e-4, atol=1e-7)
  if mode == "mask" and level == "token":
    assert (got[mask] == 0).any() and (got[mask] > 0).any()
  if level == "sequence":                                   # one weight per row
    for i in range(got.shape[0]):
      assert len(set(got[i][mask[i]].tolist())) <= 1


@pytest.mark.parametrize("statistic", mismatch.REJECTION_STATISTICS)
def test_rejection_mask_vs_numpy(statistic):
  tr, be, mask = _batch(2)
  be[0] -= 2.0                                         # a row whose mean mismatch is large
  got = np.asarray(mismatch.rejection_mask(tr, be, mask, statistic=statistic, lower=0.6, upper=1.8))
  for i in range(tr.shape[0]):
    lr = (tr[i].astype(np.float64) - be[i])[mask[i]]
    if statistic == "token":
      want = bool(np.all((np.exp(lr) >= 0.6) & (np.exp(lr) <= 1.8)))
    else:
      want = len(lr) == 0 or 0.6 <= np.exp(lr.mean()) <= 1.8
    assert got[i] == want, i
  assert got.any() and not got.all()


def test_mismatch_metrics_vs_numpy_and_zero_when_equal():
  tr, be, mask = _batch(3)
  m = jax.device_get(mismatch.mismatch_metrics(tr, be, mask))
  lr = (tr.astype(np.float64) - be)[mask]
  r = np.exp(lr)
  np.testing.assert_allclose(m["kl_k1"], -lr.mean(), rtol=1e-4)
  np.testing.assert_allclose(m["kl_k3"], np.mean(r - 1 - lr), rtol=1e-4)
  np.testing.assert_allclose(m["chi2_token"], np.mean(r ** 2) - 1, rtol=1e-4)
  np.testing.assert_allclose(m["ratio_max"], r.max(), rtol=1e-5)
  np.testing.assert_allclose(m["frac_outside"], np.mean((r < 0.5) | (r > 2)), rtol=1e-6)
  rows = [(tr[i].astype(np.float64) - be[i])[mask[i]].mean() for i in range(tr.shape[0]) if mask[i].any()]
  np.testing.assert_allclose(m["log_ppl_diff"], -np.mean(rows), rtol=1e-4)
  same = jax.device_get(mismatch.mismatch_metrics(tr, tr, mask))
  for k in ("kl_k1", "kl_k3", "chi2_token", "frac_outside", "abs_logp_diff_max", "log_ppl_diff"):
    assert abs(float(same[k])) < 1e-6, k


def test_top_p_sampler_returns_pi_and_q_and_weights_against_q_are_unbiased():
  """The sampler's ``logprobs`` are log π (unfiltered, T = 1) and ``sampling_logprobs`` log q (the top-p
  distribution). E_q[π/q · f] = E_π[f] holds exactly for weights against q; weights against the returned π
  (what a sampler without processed log-probs gives) are 1 and leave the truncation bias."""
  logits = jnp.asarray([[2.0, 1.5, 0.5, -1.0, -2.0]])
  top_p = 0.8
  log_pi = np.asarray(jax.nn.log_softmax(logits))[0]
  log_q = np.asarray(sampling.filtered_log_probs(logits, top_p=top_p))[0]
  support = np.isfinite(log_q)
  assert 0 < support.sum() < 5                       # the nucleus drops some tokens
  f = np.asarray([1.0, 0.0, 3.0, 5.0, -2.0])         # any per-token quantity
  toks = np.nonzero(support)[0]
  w_q = np.asarray(mismatch.importance_weights(log_pi[None, toks], log_q[None, toks], np.ones((1, len(toks)), bool),
                                               upper=1e6))[0]
  est_q = np.sum(np.exp(log_q[toks]) * w_q * f[toks])
  # Importance weights only reach the support of q: the estimate is E_π[f · 1(nucleus)], exact.
  np.testing.assert_allclose(est_q, np.sum(np.exp(log_pi[toks]) * f[toks]), rtol=1e-5)
  nucleus_mass = np.exp(log_pi[toks]).sum()
  np.testing.assert_allclose(w_q, 1.0 * nucleus_mass, rtol=1e-5)    # π/q = Z_nucleus on the nucleus
  w_pi = np.asarray(mismatch.importance_weights(log_pi[None, toks], log_pi[None, toks],
                                                np.ones((1, len(toks)), bool)))[0]
  np.testing.assert_allclose(w_pi, 1.0)                              # blind to the truncation


def test_generate_logprobs_are_pi_and_sampling_logprobs_are_q():
  from ngrpo_jax.models import qwen2   # pylint: disable=g-import-not-at-top
  cfg = qwen2.Qwen2Config(vocab_size=12, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
  params = qwen2.init_params(cfg, jax.random.PRNGKey(0))
  prompt = jnp.asarray([[1, 2, 3]], jnp.int32)
  out = sampling.generate(params, cfg, prompt, jnp.ones_like(prompt, bool), jax.random.PRNGKey(1),
                          max_new_tokens=4, top_p=0.7, temperature=0.8, return_sampling_logprobs=True)
  tokens = np.concatenate([np.asarray(prompt), np.asarray(out.tokens)], 1)
  logits, _ = qwen2.forward(params, cfg, jnp.asarray(tokens[:, :-1]))
  logits = logits[0, 2:]
  tgt = tokens[0, 3:]
  log_pi = np.asarray(jax.nn.log_softmax(logits))[np.arange(4), tgt]
  log_q = np.asarray(sampling.filtered_log_probs(logits, temperature=0.8, top_p=0.7))[np.arange(4), tgt]
  m = np.asarray(out.mask)[0]
  np.testing.assert_allclose(np.asarray(out.logprobs)[0][m], log_pi[m], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.asarray(out.sampling_logprobs)[0][m], log_q[m], rtol=1e-4, atol=1e-4)
  assert np.all(np.asarray(out.sampling_logprobs)[0][m] >= np.asarray(out.logprobs)[0][m] - 1.0)


def test_validation_errors():
  tr, be, mask = _batch(0)
  with pytest.raises(ValueError, match="level"):
    mismatch.importance_weights(tr, be, mask, level="row")
  with pytest.raises(ValueError, match="lower"):
    mismatch.importance_weights(tr, be, mask, mode="mask", lower=3.0, upper=2.0)
  with pytest.raises(ValueError, match="behaviour_logp"):
    mismatch.importance_weights(tr, be[:, :3], mask)
