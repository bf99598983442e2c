"""ngrpo-jax: pure-functional JAX library for RL with verifiable rewards on LLM reasoning.

The math core (``advantages``, ``passk_credit``, ``losses``, ``policy_objectives``, ``mismatch``, ``controllers``,
``metrics``) is imported eagerly and depends on nothing but JAX.
The heavier layers (``models``, ``sampling``, ``grading``, ``data``, ``training``, ``sharding``,
``evaluation``) are
imported lazily on first attribute access, so ``import ngrpo_jax`` stays cheap.
"""
import importlib

from ngrpo_jax import advantages
from ngrpo_jax import controllers
from ngrpo_jax import losses
from ngrpo_jax import metrics
from ngrpo_jax import mismatch
from ngrpo_jax import passk_credit
from ngrpo_jax import policy_objectives

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("models", "sampling", "grading", "data", "training", "sharding", "evaluation")


def __getattr__(name):
  if name in _LAZY_SUBMODULES:
    module = importlib.import_module(f"ngrpo_jax.{name}")
    globals()[name] = module
    return module
  raise AttributeError(f"module 'ngrpo_jax' has no attribute {name!r}")


__all__ = ["advantages", "controllers", "losses", "metrics", "mismatch", "passk_credit", "policy_objectives",
           *_LAZY_SUBMODULES]
