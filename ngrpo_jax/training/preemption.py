"""Preemption: SIGTERM (what a cluster scheduler sends before it kills a job) and SIGINT (Ctrl-C) stop a run
cleanly instead of losing the work since the last checkpoint.

    with preemption.Guard() as guard:
      ...
        with guard.deferred():            # the RL loop: a signal lets the step in progress finish
        while ...:
          state, metrics = rl_step(state, parts)
          ...write the step's metrics...
          if guard.stop_requested():   # then the loop checkpoints the finished step and raises Preempted
            ...

Rules (one signal = one request):
  * inside ``deferred()`` (the RL loop) the first signal is only recorded; the step in progress finishes, and the loop
    checkpoints it and raises :class:`Preempted` at the step boundary (t5x / orbax's "save at the next step
    after a preemption notice");
  * outside ``deferred()`` (warm-start, evaluation: both restart or resume on their own), or on a second
    signal, :class:`Preempted` is raised at once and the step in progress is abandoned (the last checkpoint
    stays the resume point; orbax writes a checkpoint to a temporary folder and renames it only when
    complete, so an abandoned save leaves no half-written checkpoint behind).

With several processes, :meth:`Guard.stop_requested` is a collective: every process stops at the same step
if any of them was signalled, so no process waits for another in the next step's collectives.
The handlers are installed only in the main thread of the main interpreter and restored on exit.
"""
import contextlib
import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """A run stopped by a signal.

  Attributes:
    signum: the signal number; ``exit_code`` = 128 + signum (the shell's convention).
    where: what was going on ("after RL step 3", "during the warm-start"...).
    saved: the checkpoint written on the way out, or None.
  """

  def __init__(self, signum: int, where: str = "", saved=None):
    self.signum, self.where, self.saved = signum, where, saved
    super().__init__(self.message())

  @property
  def exit_code(self) -> int:
    return 128 + int(self.signum)

  def message(self) -> str:
    name = signal.Signals(self.signum).name
    saved = (f"checkpoint {self.saved} written; rerun the same command to resume from it" if self.saved
             else "rerun the same command to resume from the last checkpoint")
    return f"stopped by {name}{' ' + self.where if self.where else ''}; {saved}"


class Guard:
  """Installs the SIGTERM / SIGINT handlers of the module docstring for the duration of a ``with`` block.

  Args:
    enabled: False installs nothing (``stop_requested`` is then always False).

  Attributes:
    where: what the run is doing, for the message of a signal outside ``deferred()`` (set by the caller).
  """

  def __init__(self, enabled: bool = True):
    self.enabled = enabled and threading.current_thread() is threading.main_thread()
    self.signum = None
    self.where = ""
    self._deferring = False
    self._previous = {}

  def __enter__(self):
    if self.enabled:
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    del frame
    if self._deferring and self.signum is None:
      self.signum = signum
      return
    self.signum = self.signum or signum
    raise Preempted(signum, "by a second signal (the RL step in progress was abandoned)" if self._deferring
                    else self.where)

  @contextlib.contextmanager
  def deferred(self):
    """A block (an RL step) that a first signal lets finish."""
    self._deferring = True
    try:
      yield
    finally:
      self._deferring = False

  def stop_requested(self) -> bool:
    """Whether a signal arrived (on any process: a collective when there are several)."""
    local = self.signum is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    signums = multihost_utils.process_allgather(np.asarray(self.signum or 0, np.int32))
    if self.signum is None and np.any(signums):
      self.signum = int(np.max(signums))
    return bool(np.any(signums))
