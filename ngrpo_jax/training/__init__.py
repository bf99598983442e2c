"""The RL trainer: algorithms as data, rollout, the jitted update, warm-start, checkpoints, metrics, the loop.

    from ngrpo_jax.training import algorithms, update, rollout, state
    algo = algorithms.get_algorithm("ngrpo", learning_rate=1e-6)       # or algorithms.ngrpo_ablation(...)
    opt, schedule = state.make_optimizer(state.OptimConfig(), algo.learning_rate)
    train_step = update.make_train_step(model_config, algo, update.UpdateConfig(), opt, schedule)
    new_state, metrics = train_step(train_state, batch)                # pure, jitted

``loop.run(ExperimentConfig, workdir)`` composes everything (``python -m experiments.train``).
"""
from ngrpo_jax.training import algorithms
from ngrpo_jax.training import state
from ngrpo_jax.training import update
from ngrpo_jax.training.algorithms import Algorithm
from ngrpo_jax.training.algorithms import get_algorithm
from ngrpo_jax.training.algorithms import ngrpo_ablation
from ngrpo_jax.training.algorithms import PRESETS
from ngrpo_jax.training.state import create_train_state
from ngrpo_jax.training.state import make_optimizer
from ngrpo_jax.training.state import OptimConfig
from ngrpo_jax.training.state import TrainState
from ngrpo_jax.training.update import make_train_step
from ngrpo_jax.training.update import UpdateConfig

__all__ = [
    "Algorithm", "OptimConfig", "PRESETS", "TrainState", "UpdateConfig", "algorithms", "create_train_state",
    "get_algorithm", "make_optimizer", "make_train_step", "ngrpo_ablation", "state", "update",
]
