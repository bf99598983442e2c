"""Argument checks shared by the math core (``advantages``, ``losses``): one message format for all.

Shape and rank errors name the argument and both shapes; range errors name the argument and the value.
They are plain Python checks on static shapes and Python numbers, so they also run under ``jax.jit``.
(chex's assertions would do the shape part, but their messages say "input 0" rather than the argument's
name, and the math core keeps to jax and numpy at run time.)
"""
import jax.numpy as jnp
import numpy as np


def check_rank(x, rank: int, name: str) -> None:
  """Raises TypeError if ``x`` is not an array, ValueError if its rank is not ``rank``."""
  if not hasattr(x, "ndim"):
    raise TypeError(f"`{name}` must be an array, got {type(x).__name__}.")
  if x.ndim != rank:
    raise ValueError(f"`{name}` must have rank {rank}, got shape {tuple(x.shape)}.")


def check_shape(x, shape, name: str, ref_name: str) -> None:
  """Raises ValueError if ``x.shape != shape``, where ``shape`` is the shape of the argument ``ref_name``."""
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"`{name}` has shape {tuple(x.shape)}, expected {tuple(shape)} (the shape of "
                     f"`{ref_name}`).")


def check_nonnegative(value, name: str) -> None:
  """Raises ValueError unless ``value`` is a finite Python number >= 0 (a static hyper-parameter)."""
  if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
    raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")


def as_float(x):
  """``x`` as a jax array, cast to float32 unless it already has a floating dtype."""
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
