r"""Runs an RL experiment: warm-start → RL (NGRPO, GRPO, DAPO, PSR/NSR, PPO, ablations) → evaluation.

With no flags it runs the embedded default experiment on the CPU (tiny Qwen2 from scratch, synthetic
addition task, NGRPO; ≤ 10 minutes on 2 cores) and writes everything to ``--workdir``::

  python -m experiments.train
  python -m experiments.train --config=cpu_grpo --workdir=/tmp/grpo
  python -m experiments.train --config=default --set rl_steps=20 --set algo.learning_rate=1e-4
  python -m experiments.train --config=default --algorithm=ngrpo_ablation --set ablation.virtual_count=2
  python -m experiments.train --list_configs

A rerun with the same ``--workdir`` resumes from the latest checkpoint.
"""
import sys

from absl import app
from absl import flags
from absl import logging

_CONFIG = flags.DEFINE_string("config", "default", "Preset name (see --list_configs).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Output directory (metrics, checkpoints, eval, "
                               "HF export); an existing run there is resumed.")
_SET = flags.DEFINE_multi_string("set", [], "Config override key=value, e.g. rollout.group_size=4, "
                                 "algo.learning_rate=1e-4, ablation.keep_all_wrong=false. Repeatable.")
_ALGORITHM = flags.DEFINE_string("algorithm", None, "Override the preset's algorithm (ngrpo, grpo, dapo, "
                                 "psr_nsr, psr_only, nsr_only, ppo, ngrpo_ablation).")
_STEPS = flags.DEFINE_integer("rl_steps", None, "Override the number of RL steps.")
_SEED = flags.DEFINE_integer("seed", None, "Override the seed.")
_LIST = flags.DEFINE_bool("list_configs", False, "Print the preset names and exit.")


def main(argv):
  logging.set_verbosity(logging.WARNING)   # keep orbax's per-file INFO lines off the console
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments: {argv[1:]} (use --set key=value)")
  import dataclasses  # pylint: disable=g-import-not-at-top
  from experiments import configs  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import algorithms  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  if _LIST.value:
    print("\n".join(sorted(configs.PRESETS)))
    return 0
  try:
    cfg = configs.get_config(_CONFIG.value)
    if _ALGORITHM.value is not None:
      valid = sorted(algorithms.PRESETS) + ["ngrpo_ablation"]
      if _ALGORITHM.value not in valid:
        raise ValueError(f"--algorithm={_ALGORITHM.value!r} is not one of {valid}")
      lr = dict(cfg.algorithm_overrides).get("learning_rate")
      cfg = dataclasses.replace(cfg, algorithm=_ALGORITHM.value,
                                algorithm_overrides=(("learning_rate", lr),) if lr else ())
    if _STEPS.value is not None:
      cfg = dataclasses.replace(cfg, rl_steps=_STEPS.value)
    if _SEED.value is not None:
      cfg = dataclasses.replace(cfg, seed=_SEED.value)
    cfg = loop.apply_overrides(cfg, _SET.value)
    loop.validate_config(cfg)
    if cfg.model.init_from and not __import__("os").path.isdir(cfg.model.init_from):
      raise ValueError(f"model.init_from={cfg.model.init_from!r} is not a directory with a Hugging Face "
                       "checkpoint (paper presets need the real Qwen2.5-Math-7B weights; set "
                       "--set model.init_from=/path/to/checkpoint)")
  except (ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  loop.run(cfg, _WORKDIR.value)
  return 0


if __name__ == "__main__":
  app.run(main)
