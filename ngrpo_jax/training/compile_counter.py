"""Counts XLA compilations while a scope is open (to check "no recompilation after warm-up").

JAX reports every backend compilation (including a retrieval from the persistent compilation cache) as the
duration event ``/jax/core/compile/backend_compile_duration`` of ``jax.monitoring``, with the compiled
function's name as ``fun_name``.  :class:`CompileCounter` registers one listener for that event when its
scope opens and unregisters it when the scope closes; it owns no other state.  ``jax.jit`` compiles a
function once per distinct (shapes, dtypes, static arguments, shardings) signature, so a counter that keeps
growing after the first steps of a loop points at a shape that is not bucketed (its ``names`` say which).
Eager (un-jitted) ``jax.numpy`` calls compile one small executable per primitive and new shape: they count
too, so a per-step shape change on the host side (e.g. a batch of a data-dependent size) shows up.

    with CompileCounter() as counter:
      f(x)                       # first call: compiles
      mark = counter.count
      f(x)                       # same shapes: no compile
      assert counter.count == mark

Listeners are process-wide: a counter also sees compilations started by other threads while it is open.
"""
import collections
import threading
from typing import List, Optional, Tuple

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """Context manager counting XLA backend compilations (``jax.monitoring`` duration events).

  Attributes (read while open or after closing):
    count: number of compilations seen so far.
    seconds: their total compile time (seconds).
    events: list of ``(fun_name, seconds)`` in order.
  """

  def __init__(self, event: str = BACKEND_COMPILE_EVENT):
    if not isinstance(event, str) or not event:
      raise TypeError(f"event must be a non-empty string, got {event!r}")
    self._event = event
    self._lock = threading.Lock()
    self._events: List[Tuple[str, float]] = []
    self._registered = False

  # jax.monitoring calls this as listener(event, duration_secs, **metadata).
  def _listener(self, event: str, duration_secs: float, **kwargs) -> None:
    if event != self._event:
      return
    with self._lock:
      self._events.append((str(kwargs.get("fun_name", "?")), float(duration_secs)))

  def __enter__(self) -> "CompileCounter":
    if self._registered:
      raise RuntimeError("this CompileCounter is already open")
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    self._registered = True
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Unregisters the listener (idempotent); the counts stay readable."""
    if self._registered:
      jax.monitoring.unregister_event_duration_listener(self._listener)
      self._registered = False

  @property
  def events(self) -> List[Tuple[str, float]]:
    with self._lock:
      return list(self._events)

  @property
  def count(self) -> int:
    with self._lock:
      return len(self._events)

  @property
  def seconds(self) -> float:
    with self._lock:
      return float(sum(s for _, s in self._events))

  def names(self, since: int = 0, until: Optional[int] = None) -> dict:
    """``{fun_name: compilations}`` of the events with index in ``[since, until)``."""
    return dict(collections.Counter(name for name, _ in self.events[since:until]))
