"""Experiment presets for ``python -m experiments.train --config=NAME``.

``cpu.py`` holds the runnable CPU presets (the embedded default demo, a CI smoke run, one per algorithm);
``paper.py`` documents the NGRPO paper's Qwen2.5-Math-7B runs (not runnable on a CPU).
"""
from experiments.configs import cpu
from experiments.configs import paper

PRESETS = {**cpu.PRESETS, **paper.PRESETS}


def get_config(name: str):
  """The ``ExperimentConfig`` of a preset; unknown names raise a ValueError listing the choices."""
  if name not in PRESETS:
    raise ValueError(f"unknown --config preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
  return PRESETS[name]()
