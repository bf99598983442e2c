"""Shared pytest set-up.

* Eight virtual CPU devices (``--xla_force_host_platform_device_count=8``) so sharding tests run in the
  same process as everything else; unsharded computations still run on device 0.
* ``variant``: runs a function as written ("eager") and under ``jax.jit`` ("jit"), like ``chex.variants``.
* ``shared_dir`` locates ``../shared`` (beside the repo root) or ``$NGRPO_SHARED_DIR``; tests that need it
  skip with a clear reason when it is absent (a user's fresh clone does not have it).
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _shared_dir():
  env = os.environ.get("NGRPO_SHARED_DIR")
  path = pathlib.Path(env) if env else REPO_ROOT.parent / "shared"
  return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir():
  """Path of ../shared; skips the test when it is not there."""
  path = _shared_dir()
  if path is None:
    pytest.skip("../shared (NGRPO data sets and checker cases) is not present beside the repo; "
                "set NGRPO_SHARED_DIR to run this test")
  return path


_JITTED = {}   # one jax.jit wrapper per (function, static names): its compile cache is shared across tests


@pytest.fixture(params=["eager", "jit"])
def variant(request):
  """``variant(fn, static_argnames=())`` → ``fn`` itself ("eager") or ``jax.jit(fn, static_argnames=...)`` ("jit").

  A test taking this fixture runs twice. Call the result as ``fn`` (arrays and keywords); keyword arguments
  that are Python values (clip widths, mode strings) must be named in ``static_argnames``.
  """
  def wrap(fn, static_argnames=()):
    if request.param == "eager":
      return fn
    key = (fn, tuple(static_argnames))
    if key not in _JITTED:
      _JITTED[key] = jax.jit(fn, static_argnames=tuple(static_argnames))
    return _JITTED[key]
  return wrap
