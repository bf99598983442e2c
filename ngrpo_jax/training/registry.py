"""Names for functions, so that configs stay data: advantage estimators, group filters, objective terms.

An :class:`~ngrpo_jax.training.algorithms.Algorithm` holds *names* (strings), never callables, so it is
JSON-serialisable (checkpoint metadata, ``config.json``) and every part of it can be set from the command
line. A name is either registered (the built-ins, or your own)::

    from ngrpo_jax.training import registry

    @registry.advantage_estimator("ngrpo_p90")
    def ngrpo_p90(rewards, valid, *, r_max, r_min):
      ...

or an import path ``"my_pkg.my_module:my_function"`` that is imported on first use (the module must be
importable, e.g. a file in the working directory), so a user's function plugs into the shipped trainer
and binaries without editing the library (as tunix's ``function_registry`` and verl's ``register_adv_est``).

Each entry carries the *batch entries* it needs (``needs``) and, for estimators, the batch entries it
provides (``provides``); the trainer builds a reference model or a value head exactly when an entry asks
for ``ref_logp`` or ``values`` / ``old_values``, and refuses an algorithm whose terms need an entry nobody
provides. A function given by import path may declare them as attributes (``fn.needs = ("values",)``); the
decorators below set them.
"""
import dataclasses
import importlib
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered function and what it exchanges with the batch.

  Attributes:
    name: the registry name (or the import path it was loaded from).
    fn: the function.
    needs: batch entries / model outputs the function reads beyond the defaults of its kind.
    provides: batch entries an advantage estimator writes (default ``("advantages",)``).
  """
  name: str
  fn: Callable
  needs: tuple = ()
  provides: tuple = ("advantages",)


class Registry:
  """A name → :class:`Entry` table for one kind of function (``kind`` is used in error messages)."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries = {}

  def register(self, name: str, fn: Callable, *, needs: Sequence[str] = (),
               provides: Sequence[str] = ("advantages",), replace: bool = False) -> Callable:
    """Registers ``fn`` under ``name``; an existing name raises unless ``replace=True``. Returns ``fn``."""
    if not isinstance(name, str) or not name or ":" in name:
      raise ValueError(f"{self.kind} name must be a non-empty string without ':', got {name!r}")
    if not callable(fn):
      raise TypeError(f"{self.kind} {name!r} must be callable, got {type(fn).__name__}")
    old = self._entries.get(name)
    same = old is not None and (getattr(old.fn, "__module__", None), getattr(old.fn, "__qualname__", None)) == (
        getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))
    if old is not None and not (replace or same):     # re-importing the same module re-registers silently
      raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
    fn.needs, fn.provides = tuple(needs), tuple(provides)
    self._entries[name] = Entry(name, fn, tuple(needs), tuple(provides))
    return fn

  def names(self) -> list:
    return sorted(self._entries)

  def get(self, name: str) -> Entry:
    """The entry of a registered name or of an import path ``"package.module:function"``.

    Raises:
      ValueError: an unknown name (the message lists the registered ones) or an import path that does not
        import or has no such attribute.
    """
    if not isinstance(name, str):
      raise TypeError(f"{self.kind} must be given by name (a string), got {type(name).__name__}; register "
                      f"a function with ngrpo_jax.training.registry or pass 'module:function'")
    if name in self._entries:
      return self._entries[name]
    if ":" not in name:
      raise ValueError(f"unknown {self.kind} {name!r}; registered: {self.names()} (or give an import path "
                       f"'package.module:function')")
    fn = _import(name, self.kind)
    return Entry(name, fn, tuple(getattr(fn, "needs", ())), tuple(getattr(fn, "provides", ("advantages",))))


def _import(path: str, kind: str) -> Callable:
  module_name, _, attr = path.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f"{kind} {path!r}: cannot import module {module_name!r} ({e})") from None
  fn = module
  for part in attr.split("."):
    if not hasattr(fn, part):
      raise ValueError(f"{kind} {path!r}: module {module_name!r} has no attribute {attr!r}")
    fn = getattr(fn, part)
  if not callable(fn):
    raise ValueError(f"{kind} {path!r} is not callable")
  return fn


ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
GROUP_FILTERS = Registry("group filter")
OBJECTIVE_TERMS = Registry("objective term")


def _decorator(registry: Registry, name: str, needs, provides, replace: bool):
  def wrap(fn):
    return registry.register(name, fn, needs=needs, provides=provides, replace=replace)
  return wrap


def advantage_estimator(name: str, *, needs: Sequence[str] = (), provides: Sequence[str] = ("advantages",),
                        replace: bool = False):
  """Registers ``fn(rewards f32[N, G], valid bool[N, G], *, r_max, r_min, **kwargs)`` as an estimator.

  It returns ``f32[N, G]`` sequence advantages, ``f32[N, G, T]`` token advantages, or a dict of the batch
  entries in ``provides`` (e.g. GAE's ``{"advantages", "returns"}``, each ``[N, G, T]``). Entries in
  ``needs`` (``"values"``, ``"response_mask"``, ``"lengths"``) are passed as keyword arrays ``[N, G, ...]``.
  """
  return _decorator(ADVANTAGE_ESTIMATORS, name, needs, provides, replace)


def group_filter(name: str, *, replace: bool = False):
  """Registers ``fn(rewards f32[n, G], *, r_max, r_min, **kwargs) -> bool[n]`` (groups to train on)."""
  return _decorator(GROUP_FILTERS, name, (), (), replace)


def objective_term(name: str, *, needs: Sequence[str] = ("logp",), prepare=None, replace: bool = False):
  """Registers ``fn(outputs, batch, agg, **kwargs) -> (loss scalar, diagnostics dict)`` as a loss term.

  ``outputs`` holds the model outputs of the micro-batch (``logp``, ``entropy``, ``values``: ``[B, T]``),
  ``batch`` its entries (``old_logp``, ``advantages``, ``ref_logp``, ``old_values``, ``returns``,
  ``loss_mask``: ``[B, T]``; the scalars ``rng``, a PRNG key of the micro-batch, and the controllers' current
  coefficients, e.g. ``entropy_coef``), ``agg`` an :class:`~ngrpo_jax.training.objective.Aggregator`.
  ``needs`` names the outputs / batch entries read.

  ``prepare(minibatch, key, **kwargs) -> dict`` (optional) computes entries from the *whole minibatch* before
  it is split into micro-batches (e.g. a token selection by a batch-wide quantile); per-row entries
  (``[B, ...]``) are split with the batch, so the selection does not depend on the micro-batch split.
  """
  def wrap(fn):
    fn = OBJECTIVE_TERMS.register(name, fn, needs=needs, provides=(), replace=replace)
    fn.prepare = prepare
    return fn
  return wrap

