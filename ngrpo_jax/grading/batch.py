"""Order-preserving batch grading across worker processes.

``grade_batch`` grades a whole rollout batch: the cheap stages run in ``num_workers`` dispatcher threads of
the caller, each symbolic comparison runs in one of ``num_workers`` worker processes with a hard per-answer
time bound (a worker that overruns is killed and replaced). Results come back in input order.
"""
import concurrent.futures
from typing import List, Optional, Sequence

from ngrpo_jax.grading import backends
from ngrpo_jax.grading import equivalence
from ngrpo_jax.grading import process_pool


def _check_lengths(golds, responses) -> None:
  for name, value in (("golds", golds), ("responses", responses)):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
      raise TypeError(f"{name} must be a sequence of strings, got {type(value).__name__}")
  if len(golds) != len(responses):
    raise ValueError(f"golds and responses must have the same length, got {len(golds)} and {len(responses)}")


def grade_batch(golds: Sequence[str], responses: Sequence[str], *, num_workers: int = 2,
                timeout: float = equivalence.DEFAULT_TIMEOUT, require_boxed: bool = False,
                pool: Optional[process_pool.WorkerPool] = None,
                backend: str = "sympy") -> List[equivalence.GradeResult]:
  """Grades ``responses[i]`` against ``golds[i]`` for all i, in parallel, order preserved.

  Args:
    golds: N reference answers.
    responses: N model responses.
    num_workers: worker processes (and dispatcher threads) when ``pool`` is None; >= 1.
    timeout: seconds per answer (hard bound on the symbolic stage, see ``equivalence.check``).
    require_boxed: only accept boxed answers.
    pool: an existing ``process_pool.WorkerPool`` to reuse across batches (recommended in a training loop);
      if None a pool with ``num_workers`` processes is created and closed for this call.
    backend: name of the grading backend (``backends.get_backend``): "sympy" (default) or "math_verify".

  Returns:
    A list of N ``GradeResult``.
  """
  _check_lengths(golds, responses)
  check_fn = backends.get_backend(backend)
  if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
    raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
  if not golds:
    return []
  own_pool = pool is None
  if own_pool:
    pool = process_pool.WorkerPool(num_workers, spares=0, preload=backends.preload_for(backend))
    pool.warm_up()  # start-up is paid once here, not inside the first checks' time budget
  threads = pool.num_workers if not own_pool else num_workers
  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as executor:
      return list(executor.map(
          lambda pair: check_fn(pair[0], pair[1], timeout=timeout, require_boxed=require_boxed, pool=pool),
          zip(golds, responses)))
  finally:
    if own_pool:
      pool.close()
