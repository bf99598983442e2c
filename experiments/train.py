r"""Runs an RL experiment: warm-start → RL (NGRPO, GRPO, DAPO, PSR/NSR, PPO, ablations) → evaluation.

With no flags it runs the embedded default experiment on the CPU (tiny Qwen2 from scratch, synthetic
addition task, NGRPO; ≤ 10 minutes on 2 cores) and writes everything to ``--workdir``::

  python -m experiments.train
  python -m experiments.train --config=cpu_grpo --workdir=/tmp/grpo
  python -m experiments.train --config=default --set rl_steps=20 --set algo.learning_rate=1e-4
  python -m experiments.train --config=default --algorithm=ngrpo_ablation --set ablation.virtual_count=2
  python -m experiments.train --list_configs
  # After RL, '[rl] step breakdown ...' prints the mean RL step split into sampling / grading wait /
  # scoring / update / diagnostics / other (seconds, %), the grading hidden behind other work and the
  # XLA compilations in / after the warm-up step (summary.json: rl_breakdown). To time RL steps again
  # without redoing the warm-start: run once with --rl_steps=0, copy that workdir (minus eval_after*), and
  # rerun the copy with --rl_steps=N: it resumes from the warm-started checkpoint.
  # Sharded over 8 devices (params FSDP × tensor parallel, batch over data × fsdp):
  python -m experiments.train --mesh=data=2,fsdp=2,tensor=2          # same as --set mesh=...
  # Several hosts (run on each; flags or NGRPO_COORDINATOR_ADDRESS / NGRPO_NUM_PROCESSES / NGRPO_PROCESS_ID):
  python -m experiments.train --mesh=fsdp=-1 --coordinator_address=host0:1234 --num_processes=2 --process_id=0

A rerun with the same ``--workdir`` resumes from the latest checkpoint (a changed model or batch shape is
refused with a message naming what changed).  Multi-host: only process 0 writes logs, metrics, evaluations
and the HF export; every process takes part in the orbax checkpoints (the workdir must be shared).
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
_MESH = flags.DEFINE_string("mesh", None, "Device mesh spec, e.g. data=2,fsdp=2,tensor=2 (overrides the "
                            "preset's mesh; default: one device).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 "
                                   "(default $NGRPO_COORDINATOR_ADDRESS / $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (default "
                                      "$NGRPO_NUM_PROCESSES, else 1).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id (default "
                                   "$NGRPO_PROCESS_ID).")


def main(argv):
  logging.set_verbosity(logging.WARNING)   # keep orbax's per-file INFO lines off the console
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments: {argv[1:]} (use --set key=value)")
  import dataclasses  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  try:   # before any JAX computation
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
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
    if _MESH.value is not None:
      cfg = dataclasses.replace(cfg, mesh=_MESH.value or None)
    loop.validate_config(cfg)
    if cfg.model.init_from and not __import__("os").path.isdir(cfg.model.init_from):
      raise ValueError(f"model.init_from={cfg.model.init_from!r} is not a directory with a Hugging Face "
                       "checkpoint (paper presets need the real Qwen2.5-Math-7B weights; set "
                       "--set model.init_from=/path/to/checkpoint)")
  except (ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    loop.run(cfg, _WORKDIR.value)
  except ValueError as e:
    if "cannot resume" not in str(e) and "does not match the train state" not in str(e):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  app.run(main)
