"""SymPy-based answer checker: extraction, normalisation, equivalence with a hard time bound, batch rewards.

    grading.is_equivalent(gold, response) -> bool
    grading.check(gold, response, timeout=1.0, require_boxed=False) -> GradeResult
    grading.grade_batch(golds, responses, num_workers=2, timeout=1.0) -> [GradeResult]   (order preserved)
    grading.Grader(require_boxed=True)(golds, responses) -> [GradeResult]   (one pool, reusable)
    grading.rewards_from_results(results, RewardConfig(format_reward=0.1), lengths=..., max_new_tokens=...) -> [N]
    grading.reward_batch(responses, golds, RewardConfig()) -> [N]
    grading.get_backend("sympy" | "math_verify") -> check function   (grade_batch(..., backend=name))
"""
from ngrpo_jax.grading.backends import available_backends
from ngrpo_jax.grading.backends import get_backend
from ngrpo_jax.grading.backends import register_backend
from ngrpo_jax.grading.batch import grade_batch
from ngrpo_jax.grading.equivalence import check
from ngrpo_jax.grading.equivalence import DEFAULT_TIMEOUT
from ngrpo_jax.grading.equivalence import GradeResult
from ngrpo_jax.grading.equivalence import is_equivalent
from ngrpo_jax.grading.extract import extract_answer
from ngrpo_jax.grading.extract import last_boxed
from ngrpo_jax.grading.grader import Grader
from ngrpo_jax.grading.normalize import normalize_answer
from ngrpo_jax.grading.process_pool import default_pool
from ngrpo_jax.grading.process_pool import WorkerPool
from ngrpo_jax.grading.rewards import reward_batch
from ngrpo_jax.grading.rewards import reward_components
from ngrpo_jax.grading.rewards import RewardConfig
from ngrpo_jax.grading.rewards import rewards
from ngrpo_jax.grading.rewards import rewards_from_results
from ngrpo_jax.grading.rewards import verdicts

__all__ = [
    "DEFAULT_TIMEOUT", "GradeResult", "Grader", "RewardConfig", "WorkerPool", "available_backends", "check",
    "default_pool", "extract_answer", "get_backend", "grade_batch", "is_equivalent", "last_boxed",
    "normalize_answer", "register_backend", "reward_batch", "reward_components", "rewards", "rewards_from_results", "verdicts",
]
