"""The verifiable reward of RL training — one function, used by the trainer and by ``reward_batch``.

    r_i = correct_reward      if the answer of response i is equivalent to gold i,
          wrong_reward        otherwise,
        + format_reward       when response i has a parseable (boxed) answer,
        + R_len(|y_i|)        DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), when enabled:
                              0 if |y| ≤ L − b;  −p · (|y| − (L − b)) / b if L − b < |y| ≤ L  (L = max_new_tokens).

With ``correct_reward=1, wrong_reward=0`` this is the binary RLVR reward of GRPO / NGRPO (Nan et al. 2025,
arXiv 2509.18851, §3). The task's maximum reward ``RewardConfig.max_reward`` (a correct, boxed answer:
correct_reward + format_reward) is the r_max that NGRPO's virtual sample and its group filter use.
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np

from ngrpo_jax.grading import batch
from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import process_pool


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """The reward of one response (equation in the module docstring).

  Attributes:
    correct_reward, wrong_reward: reward of a correct / wrong answer (paper: 1 / 0); correct > wrong.
    format_reward: bonus (>= 0) for a response with a parseable boxed answer (a format remedy; default 0).
    overlong_buffer: DAPO's buffer b in tokens (0 disables the length shaping).
    overlong_penalty: its maximum penalty p (>= 0).
  """
  correct_reward: float = 1.0
  wrong_reward: float = 0.0
  format_reward: float = 0.0
  overlong_buffer: int = 0
  overlong_penalty: float = 1.0

  def __post_init__(self):
    for name in ("correct_reward", "wrong_reward", "format_reward", "overlong_penalty"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if self.correct_reward <= self.wrong_reward:
      raise ValueError(f"correct_reward ({self.correct_reward}) must be greater than wrong_reward "
                       f"({self.wrong_reward})")
    if self.format_reward < 0 or self.overlong_penalty < 0:
      raise ValueError("format_reward and overlong_penalty must be >= 0 (a bonus and a penalty size)")
    if not isinstance(self.overlong_buffer, int) or self.overlong_buffer < 0:
      raise ValueError(f"overlong_buffer must be an int >= 0, got {self.overlong_buffer!r}")

  @property
  def max_reward(self) -> float:
    """The highest reward a response can earn (correct and boxed, no length penalty): NGRPO's r_max."""
    return float(self.correct_reward + self.format_reward)

  @property
  def min_reward(self) -> float:
    """The reward of a wrong, unparseable answer before length shaping."""
    return float(self.wrong_reward)


def overlong_penalty(lengths: np.ndarray, max_new_tokens: int, buffer: int, penalty: float) -> np.ndarray:
  """R_len of DAPO's soft overlong punishment (Eq. 13) for int lengths [...] → f32 [...] (<= 0)."""
  if buffer <= 0:
    return np.zeros(np.shape(lengths), np.float32)
  if buffer >= max_new_tokens:
    raise ValueError(f"overlong_buffer ({buffer}) must be smaller than max_new_tokens ({max_new_tokens})")
  over = np.clip(np.asarray(lengths) - (max_new_tokens - buffer), 0, buffer).astype(np.float32)
  return -penalty * over / buffer


def verdicts(results: Sequence) -> tuple[np.ndarray, np.ndarray]:
  """(correct bool[N], parseable bool[N]) from a grader's results.

  Accepts ``GradeResult``-like objects (``.equivalent``; parseable = a boxed answer was extracted:
  ``.pred_answer`` is not None and ``.boxed``) or plain bools (then parseable = True: no format signal).
  """
  correct, parseable = np.zeros(len(results), bool), np.zeros(len(results), bool)
  for i, r in enumerate(results):
    if isinstance(r, (bool, np.bool_)):
      correct[i], parseable[i] = bool(r), True
    elif hasattr(r, "equivalent"):
      correct[i] = bool(r.equivalent)
      parseable[i] = getattr(r, "pred_answer", None) is not None and bool(getattr(r, "boxed", True))
    else:
      raise TypeError(f"a grader must return bools or objects with .equivalent, got {type(r).__name__}")
  return correct, parseable


def rewards(correct: np.ndarray, parseable: np.ndarray, config: RewardConfig = RewardConfig(), *,
            lengths: Optional[np.ndarray] = None, max_new_tokens: Optional[int] = None) -> np.ndarray:
  """Rewards f32[...] of responses (module docstring); ``lengths`` / ``max_new_tokens`` for length shaping."""
  out = np.where(np.asarray(correct, bool), config.correct_reward, config.wrong_reward).astype(np.float32)
  out = out + np.float32(config.format_reward) * np.asarray(parseable, bool)
  if config.overlong_buffer > 0:
    if lengths is None or max_new_tokens is None:
      raise ValueError("overlong shaping (overlong_buffer > 0) needs lengths and max_new_tokens")
    out = out + overlong_penalty(lengths, max_new_tokens, config.overlong_buffer, config.overlong_penalty)
  return out.astype(np.float32)


# The components of :func:`reward_components`, in order.
REWARD_COMPONENTS = ("correctness", "format")


def reward_components(correct: np.ndarray, parseable: np.ndarray, config: RewardConfig = RewardConfig(), *,
                      lengths: Optional[np.ndarray] = None, max_new_tokens: Optional[int] = None) -> np.ndarray:
  """The reward split into components f32[..., 2] for multi-reward estimators (GDPO, arXiv 2601.05242).

  component 0 (correctness): correct_reward / wrong_reward, plus the overlong shaping when enabled;
  component 1 (format): 1 for a parseable (boxed) answer, 0 otherwise.

  The format component is the indicator, not ``format_reward · indicator``: a multi-reward estimator normalises
  each component within its group, where the scale cancels, so it sees the format signal even when the summed
  reward carries no format bonus (``format_reward = 0``). :func:`rewards` is the summed reward.
  """
  correctness = np.where(np.asarray(correct, bool), config.correct_reward, config.wrong_reward).astype(np.float32)
  if config.overlong_buffer > 0:
    if lengths is None or max_new_tokens is None:
      raise ValueError("overlong shaping (overlong_buffer > 0) needs lengths and max_new_tokens")
    correctness = correctness + overlong_penalty(lengths, max_new_tokens, config.overlong_buffer,
                                                 config.overlong_penalty)
  return np.stack([correctness, np.asarray(parseable, bool).astype(np.float32)], axis=-1).astype(np.float32)


def rewards_from_results(results: Sequence, config: RewardConfig = RewardConfig(), *,
                         lengths: Optional[np.ndarray] = None, max_new_tokens: Optional[int] = None) -> np.ndarray:
  """:func:`rewards` of a grader's results (``verdicts``). Returns f32[N]."""
  correct, parseable = verdicts(results)
  return rewards(correct, parseable, config, lengths=lengths, max_new_tokens=max_new_tokens)


def reward_batch(responses: Sequence[str], golds: Sequence[str], config: RewardConfig = RewardConfig(), *,
                 require_boxed: bool = True, num_workers: int = 2, timeout: float = equivalence.DEFAULT_TIMEOUT,
                 pool: Optional[process_pool.WorkerPool] = None, lengths: Optional[np.ndarray] = None,
                 max_new_tokens: Optional[int] = None, backend: str = "sympy") -> np.ndarray:
  """Verifiable rewards of a flat rollout batch: ``grade_batch`` then :func:`rewards` (responses first).

  Args:
    responses: N model responses (e.g. ``num_groups * G`` rollouts, flattened row-major).
    golds: N gold answers (repeat each problem's gold G times).
    config: the reward (default: 1 correct, 0 wrong, no format bonus, no length shaping).
    require_boxed: only boxed answers can be correct (default True, the usual RL format rule).
    num_workers: worker processes if ``pool`` is None.
    timeout: hard time bound per answer in seconds.
    pool: a reusable ``process_pool.WorkerPool`` (recommended across training steps).
    lengths, max_new_tokens: response lengths and budget, for the overlong shaping.
    backend: grading backend name (``grading.get_backend``): "sympy" (default) or "math_verify".

  Returns:
    float32 array ``[N]``; reshape to ``[num_groups, G]`` for group advantages.
  """
  results = batch.grade_batch(golds, responses, num_workers=num_workers, timeout=timeout,
                              require_boxed=require_boxed, pool=pool, backend=backend)
  return rewards_from_results(results, config, lengths=lengths, max_new_tokens=max_new_tokens)
