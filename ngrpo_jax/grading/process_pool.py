"""Worker processes with a hard per-task time bound (kill and restart on timeout).

SymPy can hang or allocate without bound on adversarial answers (``10^{10^{10}}``, ``9999!!``), and
``signal.alarm`` only works on the main thread of the main process. ``WorkerPool`` instead runs tasks in
child interpreters started with ``subprocess`` (fork+exec, safe from threaded/JAX parents); the parent waits
on a pipe with a timeout and SIGKILLs a worker that overruns, then starts a replacement in the background.
Each worker also caps its address space (``memory_limit_mb`` above its start-up size) so a runaway
allocation fails inside the worker instead of exhausting the machine.

Workers import ``ngrpo_jax.grading`` modules through stub parent packages, so they never import JAX or the
rest of ``ngrpo_jax``; start-up costs about half a second (importing SymPy), several seconds on loaded cores.
``run`` is thread-safe: at most ``num_workers`` tasks run at once and further callers wait for a free worker
(waiting is not counted in the task's timeout). Only functions inside ``ngrpo_jax.grading`` may be called.

Latency: ``warm_up()`` starts every worker before the first check and also idle **spares** (2); a worker
killed on a time-out is replaced by the spare at once (a new spare starts in the background), so a
time-out does not leave its slot empty for the seconds a fresh interpreter needs. When several time-outs
come close together and no spare is idle, the emptied slot takes whichever starting worker is ready first.
A worker that overran is not killed at once: the task already counts as a time-out, and in the background
the worker gets ``grace`` seconds to finish and rejoin as a spare (most overruns on loaded cores are merely
slow parses); only one that is still busy after that is killed and replaced by a fresh interpreter.
"""
import atexit
import dataclasses
import importlib
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import connection
from typing import Any, Optional, Sequence

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
_ALLOWED_PREFIX = "ngrpo_jax.grading."
DEFAULT_PRELOAD = ("ngrpo_jax.grading.symbolic",)

_BOOTSTRAP = """
import sys, types
for name, path in (("ngrpo_jax", sys.argv[1]), ("ngrpo_jax.grading", sys.argv[2])):
  if name not in sys.modules:
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from ngrpo_jax.grading import process_pool
process_pool._child_main(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:])
"""


@dataclasses.dataclass(frozen=True)
class Outcome:
  """Result of one task: ``status`` is "ok", "timeout", "error" or "crashed"; ``value`` is the return value
  (status "ok") or an error message; ``seconds`` is the wall time from submission to answer."""
  status: str
  value: Any
  seconds: float


def _set_memory_limit(extra_mb: int) -> None:
  if extra_mb <= 0:
    return
  try:
    import resource  # pylint: disable=import-outside-toplevel
    with open("/proc/self/statm", encoding="ascii") as f:
      current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = current + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  except Exception:  # pylint: disable=broad-except  (best effort: not every platform has /proc)
    pass


def _child_main(read_fd: int, write_fd: int, memory_limit_mb: int, preload: Sequence[str]) -> None:
  """Worker loop: receive ``(function_path, args)``, reply ``(status, value)``; exit on ``None``/EOF."""
  # Ctrl-C reaches the whole process group: the parent decides (it stops the run and closes the pool), so a
  # worker does not die with a KeyboardInterrupt traceback of its own.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  inbox = connection.Connection(read_fd, writable=False)
  outbox = connection.Connection(write_fd, readable=False)
  for name in preload:
    module = importlib.import_module(name)
    if hasattr(module, "_warm_up"):
      try:
        module._warm_up()  # pylint: disable=protected-access
      except Exception:  # pylint: disable=broad-except
        pass
  _set_memory_limit(memory_limit_mb)
  try:
    outbox.send(("ready", os.getpid()))
  except OSError:  # the parent went away (pool closed during start-up)
    return
  while True:
    try:
      message = inbox.recv()
    except (EOFError, OSError):
      return
    if message is None:
      return
    function_path, args = message
    try:
      module_name, function_name = function_path.split(":")
      if not module_name.startswith(_ALLOWED_PREFIX):
        raise ValueError(f"function {function_path!r} is outside {_ALLOWED_PREFIX}")
      function = getattr(importlib.import_module(module_name), function_name)
      reply = ("ok", function(*args))
    except MemoryError:
      reply = ("error", "MemoryError")
    except BaseException as e:  # pylint: disable=broad-except
      reply = ("error", f"{type(e).__name__}: {e}"[:500])
    try:
      outbox.send(reply)
    except OSError:
      return
    except Exception as e:  # pylint: disable=broad-except  (unpicklable result)
      outbox.send(("error", f"cannot send result: {type(e).__name__}"))


class _Worker:
  """One child interpreter and its two pipe ends."""

  def __init__(self, memory_limit_mb: int, preload: Sequence[str], startup_timeout: float):
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    repo_root = str(_PACKAGE_DIR.parent.parent)
    try:
      self.process = subprocess.Popen(
          [sys.executable, "-c", _BOOTSTRAP, str(_PACKAGE_DIR.parent), str(_PACKAGE_DIR), str(to_child_r),
           str(from_child_w), str(memory_limit_mb), *preload],
          pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
          cwd=repo_root, close_fds=True)
    finally:
      os.close(to_child_r)
      os.close(from_child_w)
    self.outbox = connection.Connection(to_child_w, readable=False)
    self.inbox = connection.Connection(from_child_r, writable=False)
    if not self.inbox.poll(startup_timeout):
      self.kill()
      raise RuntimeError(f"grading worker did not start within {startup_timeout} s")
    try:
      self.inbox.recv()
    except EOFError as e:
      self.kill()
      raise RuntimeError(f"grading worker exited during start-up (code {self.process.poll()})") from e

  def kill(self) -> None:
    try:
      self.process.kill()
      self.process.wait(timeout=5)
    except Exception:  # pylint: disable=broad-except
      pass
    for end in (self.outbox if hasattr(self, "outbox") else None, self.inbox if hasattr(self, "inbox") else None):
      if end is not None:
        try:
          end.close()
        except OSError:
          pass

  def stop(self) -> None:
    try:
      self.outbox.send(None)
      self.process.wait(timeout=2)
    except Exception:  # pylint: disable=broad-except
      pass
    self.kill()


class WorkerPool:
  """A fixed number of worker processes running ``ngrpo_jax.grading`` functions with a hard time bound.

  Args:
    num_workers: number of child processes (>= 1).
    memory_limit_mb: address-space allowance per worker above its start-up size (0 disables the cap).
    preload: modules each worker imports before accepting tasks.
    startup_timeout: seconds allowed for a worker to start.
    spares: idle pre-started workers that replace a killed one at once (started by ``warm_up``).
    grace: seconds a worker that overran its bound may still take to finish in the background (with spares
      only); it is then reused as a spare instead of being killed and restarted (0: kill at once).
  """

  def __init__(self, num_workers: int = 2, *, memory_limit_mb: int = 2048,
               preload: Sequence[str] = DEFAULT_PRELOAD, startup_timeout: float = 120.0, spares: int = 2,
               grace: float = 5.0):
    if not isinstance(num_workers, int) or num_workers < 1:
      raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    self.num_workers = num_workers
    self._memory_limit_mb = int(memory_limit_mb)
    self._preload = tuple(preload)
    self._startup_timeout = float(startup_timeout)
    self._slots: "queue.Queue[Optional[_Worker]]" = queue.Queue()
    self._spares: "queue.Queue[_Worker]" = queue.Queue()
    self._num_spares = max(0, int(spares))
    self._grace = max(0.0, float(grace))
    self._spare_lock = threading.Lock()
    self._spares_starting = 0
    self._lock = threading.Lock()
    self._all = set()
    self._closed = False
    for _ in range(num_workers):
      self._slots.put(None)

  @property
  def preload(self) -> tuple:
    """The modules every worker imports before accepting tasks."""
    return self._preload

  def _start(self) -> _Worker:
    worker = _Worker(self._memory_limit_mb, self._preload, self._startup_timeout)
    with self._lock:
      self._all.add(worker)
      if self._closed:
        worker.stop()
        raise RuntimeError("WorkerPool is closed")
    return worker

  def _retire(self, worker: _Worker) -> None:
    worker.kill()
    with self._lock:
      self._all.discard(worker)

  def _refill(self) -> None:
    try:
      worker = self._start()
    except Exception:  # pylint: disable=broad-except
      worker = None
    self._slots.put(worker)

  def _start_spare(self) -> None:
    try:
      worker = self._start()
    except Exception:  # pylint: disable=broad-except
      worker = None
    with self._spare_lock:
      self._spares_starting -= 1
    if worker is not None:
      self._spares.put(worker)

  def _top_up_spares(self, extra: int = 0) -> None:
    """Starts background spares until ``spares`` (+ ``extra`` for an empty slot) are idle or starting."""
    with self._spare_lock:
      if self._closed:
        return
      missing = self._num_spares + extra - self._spares.qsize() - self._spares_starting
      self._spares_starting += max(0, missing)
    for _ in range(max(0, missing)):
      threading.Thread(target=self._start_spare, daemon=True).start()

  def _replace(self) -> None:
    """Replaces a killed worker: a spare if one is idle; otherwise the slot is left empty and the next task
    on it takes the **first** worker to become ready (``_take_ready``), not one particular cold start."""
    try:
      spare = self._spares.get_nowait()
    except queue.Empty:
      spare = None
    if spare is not None:
      self._slots.put(spare)
      self._top_up_spares()
    elif self._num_spares > 0:
      self._slots.put(None)
      self._top_up_spares(extra=1)
    else:
      threading.Thread(target=self._refill, daemon=True).start()

  def _drain(self, worker: _Worker) -> None:
    """A worker that overran its task's bound: the task's verdict is already "timeout". In the background,
    give it ``grace`` more seconds to finish (it then becomes an idle spare: no interpreter restart, which
    takes seconds on loaded cores); if it does not, kill it and start a fresh spare instead."""
    with self._spare_lock:
      self._spares_starting += 1  # counts as a spare on its way

    def drain():
      reused = False
      try:
        if worker.inbox.poll(self._grace):
          worker.inbox.recv()
          reused = not self._closed
      except (EOFError, OSError):
        reused = False
      if not reused:
        self._retire(worker)
        try:
          fresh = self._start()
        except Exception:  # pylint: disable=broad-except
          fresh = None
      else:
        fresh = worker
      with self._spare_lock:
        self._spares_starting -= 1
      if fresh is not None:
        self._spares.put(fresh)

    threading.Thread(target=drain, daemon=True).start()

  def _take_ready(self) -> _Worker:
    """A worker for an empty slot: an idle spare, else the first spare to finish starting, else a new one."""
    try:
      return self._spares.get_nowait()
    except queue.Empty:
      pass
    with self._spare_lock:
      starting = self._spares_starting
    if starting > 0:
      try:
        worker = self._spares.get(timeout=self._startup_timeout)
        self._top_up_spares()
        return worker
      except queue.Empty:
        pass
    return self._start()

  def warm_up(self) -> None:
    """Starts all workers and spares now, in parallel, and returns when they are ready (otherwise workers
    start on first use)."""
    taken = [self._slots.get() for _ in range(self.num_workers)]
    threads = []
    for k, worker in enumerate(taken):
      if worker is None:
        threads.append(threading.Thread(target=lambda k=k: taken.__setitem__(k, self._start())))
        threads[-1].start()
    with self._spare_lock:
      missing = max(0, self._num_spares - self._spares.qsize() - self._spares_starting)
      self._spares_starting += missing
    for _ in range(missing):
      threads.append(threading.Thread(target=self._start_spare))
      threads[-1].start()
    for t in threads:
      t.join()
    for worker in taken:
      self._slots.put(worker)

  def run(self, function: str, args: tuple, timeout: float) -> Outcome:
    """Runs ``module:function(*args)`` in a worker; kills the worker if it takes longer than ``timeout`` s.

    Args:
      function: "ngrpo_jax.grading.<module>:<function>".
      args: picklable positional arguments.
      timeout: seconds (> 0) from submission to answer.

    Returns:
      An ``Outcome``; never raises for task failures (status "error"/"crashed"/"timeout").
    """
    if self._closed:
      raise RuntimeError("WorkerPool is closed")
    worker = self._slots.get()
    put_back = True
    try:
      if worker is None:
        try:
          worker = self._take_ready() if self._num_spares > 0 else self._start()
        except Exception as e:  # pylint: disable=broad-except
          return Outcome("crashed", f"worker start failed: {e}", 0.0)
      start = time.perf_counter()
      try:
        worker.outbox.send((function, args))
        ready = worker.inbox.poll(max(float(timeout), 1e-3))
        if ready:
          status, value = worker.inbox.recv()
          return Outcome(status, value, time.perf_counter() - start)
      except (EOFError, OSError) as e:
        self._retire(worker)
        worker = None
        put_back = False
        self._replace()
        return Outcome("crashed", f"worker died: {type(e).__name__}", time.perf_counter() - start)
      elapsed = time.perf_counter() - start
      put_back = False
      if self._num_spares > 0 and self._grace > 0:
        self._drain(worker)  # finish (or kill) it off the critical path; the slot takes a spare now
      else:
        self._retire(worker)
      worker = None
      self._replace()
      return Outcome("timeout", f"exceeded {timeout} s", elapsed)
    finally:
      if put_back:
        self._slots.put(worker)

  def close(self) -> None:
    """Stops all workers; the pool cannot be used afterwards."""
    with self._spare_lock:
      self._closed = True
    with self._lock:
      self._closed = True
      workers = list(self._all)
      self._all.clear()
    for worker in workers:
      worker.stop()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


_DEFAULT_POOL: Optional[WorkerPool] = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> WorkerPool:
  """The process-wide pool used when no pool is passed (created and warmed on first use, closed at exit).

  It holds ``min(2, os.cpu_count())`` workers (started before this returns, so the first check does not pay
  for interpreter start-up) and two spares; it is a cache of processes, not state that affects results.
  """
  global _DEFAULT_POOL
  with _DEFAULT_LOCK:
    if _DEFAULT_POOL is None or _DEFAULT_POOL._closed:  # pylint: disable=protected-access
      _DEFAULT_POOL = WorkerPool(max(1, min(2, os.cpu_count() or 1)))
      atexit.register(_DEFAULT_POOL.close)
      _DEFAULT_POOL.warm_up()
    return _DEFAULT_POOL
