"""Reward functions for RL with verifiable rewards.

    r_i = correct_reward    if the answer of response i is equivalent to gold i,
          incorrect_reward  otherwise,
    r_i -= format_penalty   additionally when response i has no ``\\boxed{}`` answer.

With ``correct_reward=1, incorrect_reward=0`` this is the binary RLVR reward of GRPO/NGRPO
(Nan et al., 2025, "NGRPO: Negative-enhanced Group Relative Policy Optimization", arXiv:2509.18851);
``+1/-1`` is the symmetric variant.
"""
from typing import Optional, Sequence

import numpy as np

from ngrpo_jax.grading import batch
from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import process_pool


def rewards_from_results(results: Sequence[equivalence.GradeResult], *, correct_reward: float = 1.0,
                         incorrect_reward: float = 0.0, format_penalty: float = 0.0) -> np.ndarray:
  """Maps grade results to rewards (equation in the module docstring). Returns float32 ``[N]``."""
  for name, value in (("correct_reward", correct_reward), ("incorrect_reward", incorrect_reward),
                      ("format_penalty", format_penalty)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
      raise ValueError(f"{name} must be a finite number, got {value!r}")
  out = np.empty(len(results), dtype=np.float32)
  for i, r in enumerate(results):
    out[i] = correct_reward if r.equivalent else incorrect_reward
    if not r.boxed:
      out[i] -= format_penalty
  return out


def reward_batch(responses: Sequence[str], golds: Sequence[str], *, correct_reward: float = 1.0,
                 incorrect_reward: float = 0.0, format_penalty: float = 0.0, require_boxed: bool = True,
                 num_workers: int = 2, timeout: float = equivalence.DEFAULT_TIMEOUT,
                 pool: Optional[process_pool.WorkerPool] = None, backend: str = "sympy") -> np.ndarray:
  """Verifiable rewards for a flat rollout batch (note the argument order: responses first).

  Args:
    responses: N model responses (e.g. ``num_groups * G`` rollouts, flattened row-major).
    golds: N gold answers (repeat each problem's gold G times).
    correct_reward: reward for an equivalent answer (default 1.0).
    incorrect_reward: reward otherwise (default 0.0; use -1.0 for the symmetric variant).
    format_penalty: subtracted when the response has no boxed answer (default 0.0).
    require_boxed: only boxed answers can be correct (default True, the usual RL format rule).
    num_workers: worker processes if ``pool`` is None.
    timeout: hard time bound per answer in seconds.
    pool: a reusable ``process_pool.WorkerPool`` (recommended across training steps).
    backend: grading backend name ("sympy", the default, or "math_verify"; see ``backends``).

  Returns:
    float32 array ``[N]``; reshape to ``[num_groups, G]`` for group advantages.
  """
  results = batch.grade_batch(golds, responses, num_workers=num_workers, timeout=timeout,
                              require_boxed=require_boxed, pool=pool, backend=backend)
  return rewards_from_results(results, correct_reward=correct_reward, incorrect_reward=incorrect_reward,
                              format_penalty=format_penalty)
