r"""Runs an RL experiment: warm-start → RL (NGRPO, GRPO, DAPO, PSR/NSR, PPO, ablations, yours) → evaluation.

With no flags it runs the embedded default experiment on the CPU (tiny Qwen2 from scratch, synthetic
addition task, NGRPO; ≤ 10 minutes on 2 cores) and writes everything to ``--workdir``. Experiments are absl
config files (``experiments/configs/*.py`` with ``get_config(arg)``, big_vision's convention), overridable
field by field::

  python -m experiments.train
  python -m experiments.train --config=experiments/configs/cpu.py:grpo --workdir=/tmp/grpo
  python -m experiments.train --config.rl_steps=20 --config.algorithm.learning_rate=1e-4
  python -m experiments.train --config.algorithm.objective.policy_gradient.eps_pos=0.3
  python -m experiments.train --config=experiments/configs/cpu.py:ngrpo_ablation,virtual_count=2
  python -m experiments.train --config.algorithm.advantage=my_module:my_advantage   # your own function
  python -m experiments.train --config=my_experiment.py                               # your own config file
  python -m experiments.train --list_configs
  # After RL, '[rl] step breakdown ...' prints the mean RL step split into sampling / grading wait /
  # scoring / update / diagnostics / other (seconds, %) and the XLA compilations (summary.json: rl_breakdown).
  # Sharded over 8 devices (params FSDP × tensor parallel, batch over data × fsdp):
  python -m experiments.train --config.mesh=data=2,fsdp=2,tensor=2
  # Several hosts (run on each; flags or NGRPO_COORDINATOR_ADDRESS / NGRPO_NUM_PROCESSES / NGRPO_PROCESS_ID):
  python -m experiments.train --config.mesh=fsdp=-1 --coordinator_address=host0:1234 --num_processes=2 --process_id=0

A rerun with the same ``--workdir`` resumes from the newest intact checkpoint (a changed model or batch shape
is refused with a message naming what changed; a damaged checkpoint is named and the previous one used).
SIGTERM / SIGINT during RL let the current step finish, checkpoint it and exit with 128 + the signal number
and one ``error:`` line; a rerun continues from that step with each step logged once. With several processes
they all stop after the same step, and when one dies the others exit at once with one ``error:`` line (code 3)
(``tests/test_multiprocess_loop.py``).  Multi-host: only process 0 writes logs, metrics, evaluations
and the HF export; every process takes part in the orbax checkpoints (the workdir must be shared).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import configs

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(configs.CONFIG_DIR / "cpu.py"),
    "Experiment config file[:arg], e.g. experiments/configs/cpu.py:grpo (see --list_configs); fields are "
    "overridden with --config.<path>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Output directory (metrics, checkpoints, eval, "
                               "HF export); an existing run there is resumed.")
_LIST = flags.DEFINE_bool("list_configs", False, "Print the config files and arguments, and exit.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 "
                                   "(default $NGRPO_COORDINATOR_ADDRESS / $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes (default "
                                      "$NGRPO_NUM_PROCESSES, else 1).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id (default "
                                   "$NGRPO_PROCESS_ID).")


def main(argv):
  logging.set_verbosity(logging.WARNING)   # keep orbax's per-file INFO lines off the console
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments: {argv[1:]} (use --config.<path>=<value>)")
  if _LIST.value:
    print("\n".join(configs.list_configs()))
    return 0
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top  (after flag parsing: JAX starts here)
  try:   # before any JAX computation
    sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from ngrpo_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import config  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import preemption  # pylint: disable=g-import-not-at-top
  try:
    cfg = config.from_config_dict(_CONFIG.value)
    if cfg.model.init_from and not os.path.isdir(cfg.model.init_from):
      raise ValueError(f"model.init_from={cfg.model.init_from!r} is not a directory with a Hugging Face "
                       "checkpoint (paper presets need the real Qwen2.5-Math-7B weights; set "
                       "--config.model.init_from=/path/to/checkpoint)")
    for name in ("train_path", "eval_path"):
      path = getattr(cfg.task, name)
      if cfg.task.kind == "jsonl" and not os.path.isfile(path):
        raise ValueError(f"task.{name}={path!r} is not a file (a JSONL / parquet file of problem / answer records)")
    if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
      raise ValueError(f"--workdir={_WORKDIR.value} is a file, not a directory")
    for warning in config.inapplicable_keys(cfg):
      print(f"warning: {warning}", file=sys.stderr)
  except (ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    loop.run(cfg, _WORKDIR.value)
  except preemption.Preempted as e:       # SIGTERM / SIGINT: the finished step is checkpointed
    print(f"error: {e.message()}", file=sys.stderr)
    return e.exit_code
  except FileNotFoundError as e:          # a missing checkpoint / problem file named by the loaders
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ValueError as e:
    if not isinstance(e, checkpoint.CheckpointError) and not any(m in str(e) for m in _USER_ERRORS):
      raise                                # a bug: keep its traceback
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except
    if not sharding.is_peer_failure(e):
      raise
    # Another process of a multi-process run died: say so in one line and leave at once (jax.distributed's
    # shutdown barrier would wait for the dead process's heartbeat to time out, then abort with a stack dump).
    import jax  # pylint: disable=g-import-not-at-top
    print(f"error: process {jax.process_index()} of {jax.process_count()}: another process of "
          f"this run stopped ({str(e).splitlines()[0][:200]}); rerun every process to resume from the last "
          "checkpoint", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(3)  # pylint: disable=protected-access
  return 0


# ValueErrors of ``loop.run`` that describe the user's files or settings (printed as one line, exit 2).
_USER_ERRORS = ("cannot resume", "does not match the train state", "step-0 policy", "not a valid safetensors file",
                "does not reload as itself", "is missing tensor", "unexpected tensor", "has shape")


def parse_flags(argv):
  """absl flag parsing with ``--config.<path>`` errors (unknown keys, bad values) as one clear line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError, ValueError, TypeError, flags.Error) as e:
    message = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if "Traceback" in message:                       # an error raised inside the config file: its last line
      message = [line for line in message.splitlines() if line.strip()][-1]
    message = message.replace("\\n", " ").replace("\\'", "'").strip("'").replace("' Did you mean", " does not exist; did you mean")
    config_args = " ".join(a for a in argv[1:] if a.startswith("--config"))
    print(f"error: {message} (in {config_args})", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
