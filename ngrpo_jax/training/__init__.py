"""The RL trainer: algorithms composed from named functions, one readable RL step, the jitted update.

    from ngrpo_jax.training import algorithms, objective, registry
    algo = algorithms.get_algorithm("ngrpo", learning_rate=1e-6)          # or algorithms.ngrpo_ablation(...)
    algo = algorithms.with_term(algo, objective.Term("length", 0.01, fn="my_pkg.terms:length_penalty"))

    @registry.advantage_estimator("my_estimator")                         # then advantage="my_estimator"
    def my_estimator(rewards, valid, *, r_max, r_min): ...

``step.rl_step(state, parts)`` is one RL step (draw and grade → filter → pack → score → advantages → update);
``loop.run(config.ExperimentConfig(...), workdir)`` composes a whole experiment (``python -m experiments.train``).
"""
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import estimators
from ngrpo_jax.training import objective
from ngrpo_jax.training import registry
from ngrpo_jax.training import state
from ngrpo_jax.training import update
from ngrpo_jax.training.algorithms import Algorithm
from ngrpo_jax.training.algorithms import get_algorithm
from ngrpo_jax.training.algorithms import ngrpo_ablation
from ngrpo_jax.training.algorithms import PRESETS
from ngrpo_jax.training.objective import Term
from ngrpo_jax.training.state import create_train_state
from ngrpo_jax.training.state import make_optimizer
from ngrpo_jax.training.state import OptimConfig
from ngrpo_jax.training.state import TrainState
from ngrpo_jax.training.update import make_train_step
from ngrpo_jax.training.update import UpdateConfig

__all__ = [
    "Algorithm", "OptimConfig", "PRESETS", "Term", "TrainState", "UpdateConfig", "algorithms", "create_train_state",
    "estimators", "get_algorithm", "make_optimizer", "make_train_step", "ngrpo_ablation", "objective", "registry",
    "state", "update",
]
