"""Experiment config files for ``python -m experiments.train --config=<file>:<arg>`` (absl ``config_flags``).

``cpu.py`` holds the runnable CPU presets (the embedded default demo, a CI smoke run, one per algorithm, the
NGRPO ablations); ``paper.py`` the NGRPO paper's Qwen2.5-Math-7B runs (not runnable on a CPU).
"""
import pathlib

CONFIG_DIR = pathlib.Path(__file__).resolve().parent


def list_configs() -> list:
  """Every ``<file>:<arg>`` the two config files accept (the ablation takes switches after commas)."""
  from experiments.configs import cpu  # pylint: disable=g-import-not-at-top  (imports the trainer)
  from experiments.configs import paper  # pylint: disable=g-import-not-at-top
  rel = "experiments/configs"
  return ([f"{rel}/cpu.py:{name}" for name in cpu.PRESETS]
          + [f"{rel}/cpu.py:<preset>[,{'|'.join(cpu.SWITCHES)}=<registry name>...]",
             f"{rel}/cpu.py:ngrpo_ablation[,switch=value...]"]
          + [f"{rel}/paper.py:{name}" for name in paper.PRESETS])
