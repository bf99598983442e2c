"""The one grader adapter: ``grader(golds, responses) -> [GradeResult]`` with a reusable worker pool.

Training (rewards) and evaluation (pass@k) call graders the same way; anything with this signature that
returns ``GradeResult``-like objects (``.equivalent``, ``.pred_answer``, ``.boxed``) or bools can replace it.
"""
from ngrpo_jax.grading import backends
from ngrpo_jax.grading import batch
from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import process_pool


class Grader:
  """``grader(golds, responses) -> [GradeResult]`` over ``grade_batch`` with one worker pool.

  Use as a context manager (or call ``close()``) so worker processes this grader started are shut down.
  Safe to call from a thread other than the one that made it (the trainer grades on a background thread).

  Args:
    num_workers: worker processes (>= 1; default 2) when ``pool`` is None.
    timeout: seconds per answer (default ``grading.DEFAULT_TIMEOUT``).
    require_boxed: only answers inside ``\\boxed{}`` count (the RL format rule; default False).
    pool: an existing ``WorkerPool`` to share (not closed by ``close()``). Default: a pool owned by this grader.
    backend: the checker by name (``grading.get_backend``): "sympy" (ours, the default) or "math_verify"
      (the peers' choice in TRL and verl; needs the ``math-verify`` package).
  """

  def __init__(self, num_workers: int = 2, timeout: float = equivalence.DEFAULT_TIMEOUT,
               require_boxed: bool = False, pool=None, backend: str = "sympy"):
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
      raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    if not timeout > 0:
      raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    backends.get_backend(backend)               # unknown names fail here, not on the first batch
    self._owns_pool = pool is None
    self._pool = process_pool.WorkerPool(num_workers, preload=backends.preload_for(backend)) if pool is None \
        else pool
    self.timeout = float(timeout)
    self.require_boxed = bool(require_boxed)
    self.backend = backend

  def __call__(self, golds, responses):
    return batch.grade_batch(list(golds), list(responses), timeout=self.timeout, require_boxed=self.require_boxed,
                             pool=self._pool, backend=self.backend)

  def close(self):
    if self._owns_pool:
      self._pool.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
