"""Evaluation metrics: unbiased pass@k, pass@k curves, pass@k AUC (the NGRPO paper's), bootstrap CIs.

These are host-side functions in float64 numpy (evaluation happens once per checkpoint, outside jitted
code, and the products over up to N = 256 terms benefit from float64). They accept numpy or (concrete) JAX
arrays; called under ``jax.jit`` / ``vmap`` / ``grad`` they raise a TypeError saying so (unlike the
advantages and losses, which are jit-safe JAX). Values are checked: pass@k curves are fractions in [0, 1].
"""
from typing import NamedTuple, Optional, Sequence, Union

import jax
import numpy as np


def _host(x, name):
  """``x`` as a numpy array; a TypeError naming the argument when it is traced (under jit / vmap / grad)."""
  if isinstance(x, jax.core.Tracer):
    raise TypeError(f"`{name}` is a traced JAX value: ngrpo_jax.metrics are host-side float64 numpy functions "
                    "(evaluation, not training); call them outside jax.jit / vmap / grad")
  return np.asarray(x)


def _int_array(x, name):
  arr = _host(x, name)
  if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or
                               (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
    raise TypeError(f"`{name}` must hold integers, got dtype {arr.dtype} / values {arr!r}.")
  return arr.astype(np.int64)


def pass_at_k(num_samples, num_correct, k: int) -> np.ndarray:
  """Unbiased pass@k per problem (Chen et al. 2021, "Evaluating LLMs Trained on Code", arXiv 2107.03374).

  pass@k = 1 − C(n − c, k) / C(n, k) = 1 − Π_{i = n−c+1}^{n} (1 − k / i)   (= 1 when n − c < k),

  computed in the stable product form, vectorised over problems.

  Args:
    num_samples: int n, scalar or int[P] (samples per problem).
    num_correct: int c, scalar or int[P], 0 <= c <= n.
    k: int, 1 <= k <= min(n).

  Returns:
    float64 array of the broadcast shape of (n, c): the per-problem pass@k (average it over problems).
  """
  n = _int_array(num_samples, "num_samples")
  c = _int_array(num_correct, "num_correct")
  n, c = np.broadcast_arrays(n, c)
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
    raise TypeError(f"`k` must be a Python int, got {k!r}.")
  if k < 1:
    raise ValueError(f"`k` must be >= 1, got {k}.")
  if np.any(n < 1):
    raise ValueError(f"`num_samples` must be >= 1, got min {n.min()}.")
  if np.any(c < 0) or np.any(c > n):
    raise ValueError("`num_correct` must satisfy 0 <= num_correct <= num_samples.")
  if np.any(k > n):
    raise ValueError(f"`k`={k} exceeds `num_samples` (min n = {n.min()}): pass@k needs k <= n.")
  max_c = int(c.max()) if c.size else 0
  j = np.arange(max_c)                                   # term j uses i = n − j, for j < c
  i = n[..., None] - j                                   # [..., max_c]
  valid = j < c[..., None]
  terms = np.where(valid, 1.0 - k / np.where(valid, i, 1).astype(np.float64), 1.0)
  out = 1.0 - np.prod(terms, axis=-1)
  return np.where(n - c < k, 1.0, out)


def pass_at_k_curve(num_samples, num_correct, ks: Optional[Sequence[int]] = None):
  """Mean pass@k over problems for several k.

  Args:
    num_samples: int[P] (or scalar) n per problem.
    num_correct: int[P] c per problem.
    ks: the k values (default every k = 1 .. min(n)).

  Returns:
    (ks int64[K], values float64[K]) with values[j] = mean over problems of pass@ks[j] (fractions).
  """
  n = _int_array(num_samples, "num_samples")
  if ks is None:
    ks = np.arange(1, int(np.min(n)) + 1)
  ks = np.asarray([int(k) for k in ks], dtype=np.int64)
  values = np.array([np.mean(pass_at_k(num_samples, num_correct, int(k))) for k in ks])
  return ks, values


def _check_curve(values, ks):
  y = _host(values, "values").astype(np.float64)
  if y.ndim != 1 or y.size < 2:
    raise ValueError(f"`values` must be a 1-D array of >= 2 pass@k values, got shape {y.shape}.")
  if not np.all(np.isfinite(y)):
    raise ValueError("`values` contains NaN or infinite values.")
  if np.any(y < 0) or np.any(y > 1):
    raise ValueError(f"`values` must be pass@k fractions in [0, 1], got values in [{y.min():g}, {y.max():g}]"
                     + (" (percentages? divide by 100)" if y.max() <= 100 else "") + ".")
  if ks is None:
    ks = 2 ** np.arange(y.size)
  ks = _host(ks, "ks").astype(np.float64)
  if ks.shape != y.shape:
    raise ValueError(f"`ks` has shape {ks.shape} but `values` has shape {y.shape}.")
  if np.any(ks < 1) or np.any(np.diff(ks) <= 0):
    raise ValueError("`ks` must be strictly increasing and >= 1.")
  return y, np.log2(ks)


def pass_at_k_auc(values, ks: Optional[Sequence[int]] = None) -> float:
  """Pass@k AUC exactly as the NGRPO authors compute it (Nan et al. 2025, §5.1.2, Tables 1–3).

  Trapezoid rule over x = log2 k with linear y, normalised by the x range, in percent:

    AUC = 100 · Σ_j (x_{j+1} − x_j)(y_j + y_{j+1}) / 2 / (x_last − x_first).

  For k = 1, 2, 4, …, 256 this is 100 · [p1 + 2(p2 + … + p128) + p256] / 16. (The paper's text says "log-log
  scale", but its numbers use linear y; :func:`pass_at_k_auc_loglog` is the literal log-log variant.)

  Args:
    values: pass@k values as *fractions* in [0, 1], shape [K], K >= 2.
    ks: the k of each value (any strictly increasing grid >= 1); default 1, 2, 4, …, 2^(K−1).

  Returns:
    The AUC in percent (float).
  """
  y, x = _check_curve(values, ks)
  area = np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)
  return float(100.0 * area / (x[-1] - x[0]))


def pass_at_k_auc_loglog(values, ks: Optional[Sequence[int]] = None) -> float:
  """A true log-log pass@k AUC: the trapezoid of ln(y) over x = log2 k, normalised, mapped back to percent.

  AUC_loglog = 100 · exp( Σ_j (x_{j+1} − x_j)(ln y_j + ln y_{j+1}) / 2 / (x_last − x_first) ),

  i.e. the (log-k weighted) geometric mean of the curve in percent. Not the paper's metric (see
  :func:`pass_at_k_auc`); values must be > 0.
  """
  y, x = _check_curve(values, ks)
  if np.any(y <= 0):
    raise ValueError("`values` must be > 0 for the log-log AUC.")
  ly = np.log(y)
  area = np.sum(np.diff(x) * (ly[1:] + ly[:-1]) / 2.0)
  return float(100.0 * np.exp(area / (x[-1] - x[0])))


class ConfidenceInterval(NamedTuple):
  estimate: np.ndarray
  lower: np.ndarray
  upper: np.ndarray


def bootstrap_ci(per_problem_values, key_or_seed: Union[int, jax.Array], num_resamples: int = 1000,
                 alpha: float = 0.05) -> ConfidenceInterval:
  """Percentile bootstrap confidence interval of the mean over problems (Efron & Tibshirani 1993).

  Resamples problems (axis 0) with replacement ``num_resamples`` times, takes the mean over axis 0 of each
  resample, and returns the (alpha/2, 1 − alpha/2) quantiles.

  Args:
    per_problem_values: float[P] or float[P, ...] (e.g. per-problem pass@k, or [P, K] for a whole curve).
    key_or_seed: a ``jax.random`` key or an int seed (same input → same interval).
    num_resamples: number of bootstrap resamples (>= 1).
    alpha: 1 − confidence level, in (0, 1).

  Returns:
    ConfidenceInterval(estimate = mean over problems, lower, upper), each of shape values.shape[1:].
  """
  x = _host(per_problem_values, "per_problem_values").astype(np.float64)
  if x.ndim < 1 or x.shape[0] < 1:
    raise ValueError(f"`per_problem_values` must have at least one problem along axis 0, got shape {x.shape}.")
  if not np.all(np.isfinite(x)):
    raise ValueError("`per_problem_values` contains NaN or infinite values.")
  if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
    raise ValueError(f"`num_resamples` must be an int >= 1, got {num_resamples!r}.")
  if not 0 < alpha < 1:
    raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}.")
  p = x.shape[0]
  if isinstance(key_or_seed, (int, np.integer)):
    idx = np.random.default_rng(int(key_or_seed)).integers(0, p, size=(num_resamples, p))
  else:
    idx = np.asarray(jax.random.randint(key_or_seed, (num_resamples, p), 0, p))
  means = x[idx].mean(axis=1)
  lower, upper = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
  return ConfidenceInterval(estimate=x.mean(axis=0), lower=lower, upper=upper)


class PairedComparison(NamedTuple):
  """Mean difference b − a with its paired-bootstrap interval and two-sided p-value (H0: no difference)."""
  difference: float
  lower: float
  upper: float
  p_value: float


def paired_bootstrap(per_problem_a, per_problem_b, key_or_seed: Union[int, jax.Array] = 0,
                     num_resamples: int = 10000, alpha: float = 0.05) -> PairedComparison:
  """Paired bootstrap test of two methods evaluated on the same problems (and, optionally, the same seeds).

  d = b − a per problem (and seed); the statistic is mean(d). Each resample draws problems with replacement
  (and, independently, seeds with replacement: a two-way bootstrap over problems × seeds) and takes the mean
  of d over the drawn cells; the interval is the (alpha/2, 1 − alpha/2) percentile of the resampled means and
  the two-sided p-value is min(1, 2 · min(#(mean* ≤ 0) + 1, #(mean* ≥ 0) + 1) / (R + 1)) over the R resampled
  means (never 0: at least 2 / (R + 1)) (Efron & Tibshirani 1993, §16; Koehn 2004 for paired resampling of
  test items).

  Args:
    per_problem_a, per_problem_b: float[P] (e.g. per-problem pass@1 of two runs) or float[S, P] (S seeds,
      the same P problems in the same order); equal shapes.
    key_or_seed: a ``jax.random`` key or an int seed.
    num_resamples: bootstrap resamples (>= 1).
    alpha: 1 − confidence level, in (0, 1).

  Returns:
    PairedComparison(difference = mean(b − a), lower, upper, p_value).
  """
  a = _host(per_problem_a, "per_problem_a").astype(np.float64)
  b = _host(per_problem_b, "per_problem_b").astype(np.float64)
  if a.shape != b.shape or a.ndim not in (1, 2) or a.shape[-1] < 1:
    raise ValueError(f"per_problem_a and per_problem_b must both be [P] or [S, P] with the same shape, got "
                     f"{a.shape} and {b.shape}.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("per-problem values contain NaN or infinite values.")
  if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
    raise ValueError(f"`num_resamples` must be an int >= 1, got {num_resamples!r}.")
  if not 0 < alpha < 1:
    raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}.")
  d = (b - a).reshape(-1, a.shape[-1])                       # [S, P]
  s, p = d.shape
  seed = int(key_or_seed) if isinstance(key_or_seed, (int, np.integer)) else \
      int(np.asarray(jax.random.randint(key_or_seed, (), 0, 2 ** 31 - 1)))
  rng = np.random.default_rng(seed)
  means = np.empty(num_resamples)
  for start in range(0, num_resamples, 1000):                # bounded memory: 1000 resamples at a time
    r = min(1000, num_resamples - start)
    rows = rng.integers(0, s, size=(r, s))
    cols = rng.integers(0, p, size=(r, p))
    per_seed = np.stack([d[rows[i]][:, cols[i]].mean() for i in range(r)]) if s > 1 else d[0][cols].mean(axis=1)
    means[start:start + r] = per_seed
  lower, upper = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  # +1 correction: a p-value is never 0 (at least 2 / (R + 1), two-sided)
  p_value = min(1.0, 2.0 * min(np.sum(means <= 0.0) + 1, np.sum(means >= 0.0) + 1) / (num_resamples + 1))
  return PairedComparison(float(d.mean()), float(lower), float(upper), float(p_value))
