"""NGRPO with the virtual sample at the group's 90th reward percentile, plus a log-ratio penalty term.

A config file of your own, run with the shipped binary:

  python -m experiments.train --config=experiments/examples/ngrpo_p90.py --config.rl_steps=20
"""
import dataclasses

import jax.numpy as jnp

from experiments.configs import cpu
from ngrpo_jax.training import algorithms, config, objective, registry


@registry.advantage_estimator("ngrpo_p90")
def ngrpo_p90(rewards, valid, *, r_max, r_min, q=0.9, eps=1e-6):
  """A_i = (r_i − μ') / (σ' + eps) over the group plus one virtual sample at the group's q-quantile reward."""
  v = jnp.quantile(rewards, q, axis=-1, keepdims=True)
  group = jnp.concatenate([rewards, v], axis=-1)
  mu, sigma = group.mean(-1, keepdims=True), group.std(-1, ddof=1, keepdims=True)
  return jnp.where(valid, (rewards - mu) / (sigma + eps), 0.0)


@registry.objective_term("log_ratio_l2", needs=("logp", "old_logp"))
def log_ratio_l2(outputs, batch, agg):
  """½ (log π_θ − log π_old)² per token: a soft trust region beside the clip."""
  return agg(0.5 * (outputs["logp"] - batch["old_logp"]) ** 2, batch["loss_mask"] > 0), {}


def get_config(arg=None):
  cfg = cpu.build(arg or "default")
  algo = dataclasses.replace(cfg.algorithm, name="ngrpo_p90", advantage="ngrpo_p90", advantage_kwargs={"q": 0.9})
  algo = algorithms.with_term(algo, objective.Term("log_ratio_l2", coef=0.1))
  return config.to_config_dict(dataclasses.replace(cfg, name="ngrpo_p90", algorithm=algo))
