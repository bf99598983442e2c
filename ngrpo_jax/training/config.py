"""The experiment config: typed, validated dataclasses, and their ml_collections form for the command line.

``ExperimentConfig`` is a tree of frozen dataclasses (validated in ``__post_init__`` and by
:func:`validate_config`); the algorithm is an ``algorithms.Algorithm`` (names and numbers only), so the whole
config is JSON-serialisable (``to_dict``) and round-trips (``from_dict``). The binaries work on its
``ml_collections.ConfigDict`` form (:func:`to_config_dict`), which absl's ``config_flags`` loads from a
config file and overrides field by field (``--config.algorithm.objective.policy_gradient.eps_pos=0.3``);
:func:`from_config_dict` turns it back into the typed config, naming unknown keys.
"""
import dataclasses
import typing
from typing import Any, Mapping, Optional

import jax
import ml_collections
import numpy as np

from ngrpo_jax import grading
from ngrpo_jax import sharding
from ngrpo_jax.data import prompts as prompts_lib
from ngrpo_jax.data import synthetic
from ngrpo_jax.models import lora as lora_lib
from ngrpo_jax.training import algorithms as algorithms_lib
from ngrpo_jax.training import rollout as rollout_lib
from ngrpo_jax.training import sft as sft_lib
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update as update_lib


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The policy: a Qwen2 / Qwen3 created from scratch (sizes below) or loaded from a HF directory ``init_from``
  (whose config.json then decides the family and sizes).

  ``model_type``: ``"qwen2"`` or ``"qwen3"`` (per-head q/k RMSNorm, no q/k/v biases); ``head_dim``: per-head
  size, None = hidden_size / num_attention_heads.

  LoRA (``models.lora``; ``lora_rank`` 0 = off, the full model is trained): RL trains only rank-``lora_rank``
  adapters on the ``lora_targets`` projections (scaled by ``lora_alpha / lora_rank``, default alpha = rank;
  input dropout ``lora_dropout``); the warm-started base stays frozen and is the KL reference; the export adds
  a PEFT adapter directory (``<workdir>/peft_adapter``) beside the merged HF weights.
  """
  init_from: Optional[str] = None
  hidden_size: int = 128
  intermediate_size: int = 384
  num_hidden_layers: int = 3
  num_attention_heads: int = 4
  num_key_value_heads: int = 2
  tie_word_embeddings: bool = True
  dtype: str = "float32"
  model_type: str = "qwen2"
  head_dim: Optional[int] = None
  lora_rank: int = 0
  lora_alpha: Optional[float] = None
  lora_dropout: float = 0.0
  lora_targets: tuple = lora_lib.TARGETS

  def __post_init__(self):
    if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
      raise ValueError(f"model.lora_rank must be an int >= 0 (0 = no LoRA), got {self.lora_rank!r}")
    # "q_proj,v_proj" (the command line gives a string, or a 1-tuple of it) or a sequence of names.
    items = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)
    object.__setattr__(self, "lora_targets", tuple(t.strip() for item in items for t in str(item).split(",")
                                                   if t.strip()))
    try:
      self.lora_config()
    except ValueError as e:
      raise ValueError(f"model.lora_*: {e}") from None

  def lora_config(self) -> Optional[lora_lib.LoRAConfig]:
    """The ``lora.LoRAConfig`` of these settings, or None when ``lora_rank`` is 0."""
    if self.lora_rank == 0:
      return None
    return lora_lib.LoRAConfig(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                               targets=self.lora_targets)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The problems.

  Attributes:
    kind: ``"synthetic"`` (the embedded addition task) or ``"jsonl"`` (``train_path`` / ``eval_path``
      with MATH-style ``problem`` / ``answer`` fields; no warm-start data).
    template: prompt template (``"compact"`` or ``"qwen_math"``).
    sft_difficulty, rl_difficulty, eval_difficulty: synthetic difficulty ranges (digits of the longer
      operand, smooth): the warm-start sees easier problems than RL, so long problems are under-trained.
    num_sft_examples, num_rl_prompts, num_eval_problems: pool sizes.
    data_seed: synthetic datasets are generated from this seed instead of the run's ``seed`` (a study's
      seeds then share one test set and one RL pool, and differ in prompt order and sampling only).
    validation_fraction: share of synthetic operand pairs held out as a validation split (for tuning),
      carved out of the train split (``synthetic.split_of``); 0 = none.
    eval_split: the split the held-out problems come from: ``"test"`` or ``"validation"``.
  """
  kind: str = "synthetic"
  train_path: Optional[str] = None
  eval_path: Optional[str] = None
  template: str = "compact"
  sft_difficulty: tuple = (1.0, 3.0)
  rl_difficulty: tuple = (2.0, 4.0)
  eval_difficulty: tuple = (2.0, 4.0)
  num_sft_examples: int = 4000
  num_rl_prompts: int = 2000
  num_eval_problems: int = 64
  data_seed: Optional[int] = None
  validation_fraction: float = 0.0
  eval_split: str = "test"

  def __post_init__(self):
    if self.eval_split not in ("test", "validation"):
      raise ValueError(f"task.eval_split must be 'test' or 'validation', got {self.eval_split!r}")
    if not 0.0 <= self.validation_fraction < 0.9:
      raise ValueError(f"task.validation_fraction must be in [0, 0.9), got {self.validation_fraction!r}")
    if self.eval_split == "validation" and not self.validation_fraction > 0:
      raise ValueError("task.eval_split='validation' needs task.validation_fraction > 0")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """Held-out evaluation: ``num_samples`` per problem at ``temperature`` / ``top_p`` (paper: 256, 0.6, 0.95).

  ``before=False`` skips the evaluation of the starting policy (a study evaluates its shared warm-start
  once); the summary's ``before`` and ``gain`` are then None.
  """
  num_samples: int = 16
  temperature: float = 0.6
  top_p: float = 0.95
  max_new_tokens: Optional[int] = None
  batch_problems: int = 32
  before: bool = True


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A whole run.

  ``algorithm`` is an ``algorithms.Algorithm`` (a preset, an ablation, or your own composition); ``reward``
  the verifiable reward (its ``max_reward`` is the r_max the estimators and filters see). ``mesh`` is a
  ``sharding.make_mesh`` spec (``"data=2,fsdp=2,tensor=2"``; None: a single device).
  ``learner`` (``update.UpdateConfig``): how a rollout batch becomes optimiser steps (not called ``update``:
  that is a method of ``ConfigDict``, so ``--config.update.x`` could not reach it).
  ``grading_backend``: the answer checker of rewards and evaluations by name (``grading.get_backend``):
  ``"sympy"`` (ours) or ``"math_verify"``.
  ``compile_warmup_steps``: the first RL steps of an invocation whose XLA compilations are expected; the
  summary's ``rl_breakdown.compiles.after_warmup`` counts the rest (recompilations).
  ``check_direction``: re-score every batch after its update and log ``update/adv_logp_change`` and
  ``update/sign_agreement`` (whether log-probs moved with the advantages; one extra forward pass per step).
  """
  name: str = "default"
  seed: int = 0
  model: ModelSpec = ModelSpec()
  task: TaskSpec = TaskSpec()
  sft: sft_lib.SFTConfig = sft_lib.SFTConfig()
  algorithm: algorithms_lib.Algorithm = algorithms_lib.PRESETS["ngrpo"]
  reward: grading.RewardConfig = grading.RewardConfig()
  rollout: rollout_lib.RolloutConfig = rollout_lib.RolloutConfig()
  learner: update_lib.UpdateConfig = update_lib.UpdateConfig()
  optim: state_lib.OptimConfig = state_lib.OptimConfig()
  rl_steps: int = 50
  eval: EvalSpec = EvalSpec()
  checkpoint_every: int = 25
  keep_checkpoints: int = 2
  group_grad_norm_every: int = 10
  check_direction: bool = False
  grading_workers: int = 2
  grading_backend: str = "sympy"
  export_hf: bool = True
  tensorboard: bool = True
  time_budget_s: Optional[float] = None
  mesh: Optional[str] = None
  compile_warmup_steps: int = 1


# ----------------------------------------------------------------------------------------------------------
# Dict / ConfigDict forms.


def to_dict(cfg) -> dict:
  """A JSON-friendly dict of a (nested) config dataclass (the algorithm via ``Algorithm.to_dict``)."""
  if isinstance(cfg, algorithms_lib.Algorithm):
    return cfg.to_dict()
  return {f.name: to_dict(getattr(cfg, f.name)) if dataclasses.is_dataclass(getattr(cfg, f.name))
          else getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def from_dict(d: Mapping, cls=ExperimentConfig):
  """The typed config of :func:`to_dict`'s format; unknown keys raise a ValueError naming them."""
  if cls is algorithms_lib.Algorithm:
    return algorithms_lib.from_dict(d)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = set(d) - set(fields)
  if unknown:
    raise ValueError(f"unknown config keys {sorted(unknown)} in {cls.__name__}; known: {sorted(fields)}")
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, value in d.items():
    sub = hints[name]
    if dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
      value = from_dict(value, sub)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[name] = value
  return cls(**kwargs)


def _optional_type(hint):
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else None


def to_config_dict(cfg) -> ml_collections.ConfigDict:
  """The ``ConfigDict`` of a config (``None`` fields typed by their annotation so they can be overridden)."""
  return _to_config_dict(to_dict(cfg), type(cfg))


def _to_config_dict(d: dict, cls) -> ml_collections.ConfigDict:
  hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
  out = {}
  for key, value in d.items():
    hint = hints.get(key)
    if isinstance(value, dict):
      out[key] = _to_config_dict(value, hint if dataclasses.is_dataclass(hint) else None)
    elif value is None and _optional_type(hint) is not None:
      out[key] = ml_collections.config_dict.placeholder(_optional_type(hint))
    else:
      out[key] = value
  return ml_collections.ConfigDict(out)


def from_config_dict(cd) -> ExperimentConfig:
  """The typed ``ExperimentConfig`` of a ``ConfigDict`` (e.g. ``config_flags``' value), validated."""
  cfg = from_dict(cd.to_dict() if hasattr(cd, "to_dict") else dict(cd))
  validate_config(cfg)
  return cfg


# ----------------------------------------------------------------------------------------------------------
# Validation and resume compatibility.


def validate_config(cfg: ExperimentConfig) -> algorithms_lib.Algorithm:
  """Checks cross-field consistency (raises ValueError naming the fields); returns the algorithm."""
  algo = cfg.algorithm
  if not isinstance(algo, algorithms_lib.Algorithm):
    raise TypeError(f"algorithm must be an algorithms.Algorithm, got {type(algo).__name__}")
  grading.get_backend(cfg.grading_backend)          # an unknown backend fails here, naming the known ones
  if cfg.reward.overlong_buffer >= cfg.rollout.max_new_tokens:
    raise ValueError(f"reward.overlong_buffer ({cfg.reward.overlong_buffer}) must be smaller than "
                     f"rollout.max_new_tokens ({cfg.rollout.max_new_tokens})")
  if cfg.rollout.batch_rows % (cfg.learner.num_minibatches * cfg.learner.num_microbatches):
    raise ValueError(f"rollout.group_size * rollout.groups_per_batch = {cfg.rollout.batch_rows} must be "
                     f"divisible by learner.num_minibatches * learner.num_microbatches = "
                     f"{cfg.learner.num_minibatches * cfg.learner.num_microbatches}")
  if cfg.rl_steps < 0:
    raise ValueError(f"rl_steps must be >= 0, got {cfg.rl_steps}")
  if not isinstance(cfg.compile_warmup_steps, int) or cfg.compile_warmup_steps < 0:
    raise ValueError(f"compile_warmup_steps must be an int >= 0, got {cfg.compile_warmup_steps!r}")
  if cfg.eval.num_samples < 1 or cfg.checkpoint_every < 1:
    raise ValueError("eval.num_samples and checkpoint_every must be >= 1")
  _validate_task(cfg.task)
  if cfg.mesh is not None:
    sizes = sharding.parse_mesh_spec(cfg.mesh)
    known = int(np.prod([v for v in sizes.values() if v != -1]))
    n_dev = jax.device_count()
    if -1 in sizes.values():
      sizes = {k: (n_dev // known if v == -1 else v) for k, v in sizes.items()}
    if int(np.prod(list(sizes.values()))) != n_dev:
      raise ValueError(f"mesh={cfg.mesh!r} needs {int(np.prod(list(sizes.values())))} devices but "
                       f"{n_dev} are available")
    div = sizes["data"] * sizes["fsdp"]
    if cfg.rollout.batch_rows % div:
      raise ValueError(f"rollout.group_size * rollout.groups_per_batch = {cfg.rollout.batch_rows} must be "
                       f"divisible by the mesh's data × fsdp = {div} (mesh={cfg.mesh!r})")
  return algo


def _validate_task(task: TaskSpec) -> None:
  """Raises a ValueError naming the ``task.*`` field of a bad value (or of a path the task does not use)."""
  if task.kind not in ("synthetic", "jsonl"):
    raise ValueError(f"task.kind must be 'synthetic' or 'jsonl', got {task.kind!r}")
  if task.template not in prompts_lib.TEMPLATES:
    raise ValueError(f"task.template must be one of {prompts_lib.TEMPLATES}, got {task.template!r}")
  for name in ("num_sft_examples", "num_rl_prompts", "num_eval_problems"):
    value = getattr(task, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_sft_examples" else 1):
      raise ValueError(f"task.{name} must be an int >= {0 if name == 'num_sft_examples' else 1}, got {value!r}")
  if task.kind == "synthetic":
    for name in ("train_path", "eval_path"):
      if getattr(task, name) is not None:
        raise ValueError(f"task.{name}={getattr(task, name)!r} does not apply to task.kind='synthetic' (the "
                         "embedded task generates its problems); set task.kind='jsonl' to train on files")
    for name in ("sft_difficulty", "rl_difficulty", "eval_difficulty"):
      try:
        synthetic.make_dataset(0, 0, tuple(getattr(task, name)))     # validates (lo, hi), generates nothing
      except (ValueError, TypeError) as e:
        raise ValueError(f"task.{name}={getattr(task, name)!r}: {e}") from None
  else:
    for name in ("train_path", "eval_path"):
      if not getattr(task, name):
        raise ValueError(f"task.kind='jsonl' needs task.{name}")
    if task.eval_split != "test":
      raise ValueError(f"task.eval_split={task.eval_split!r} applies to the synthetic task only (a jsonl task "
                       "evaluates task.eval_path)")


def inapplicable_keys(cfg: ExperimentConfig) -> list:
  """Warnings (one line each) for settings the chosen task ignores: the synthetic task's fields and the
  warm-start with ``task.kind='jsonl'`` (no warm-start data) when they differ from the defaults, and a model
  created from scratch without a warm-start (it starts at chance)."""
  out, default = [], TaskSpec()
  if cfg.task.kind == "jsonl":
    ignored = [f"task.{n}" for n in ("sft_difficulty", "rl_difficulty", "eval_difficulty", "num_sft_examples",
                                     "data_seed", "validation_fraction")
               if _as_tuple(getattr(cfg.task, n)) != _as_tuple(getattr(default, n))]
    if cfg.sft.steps > 0:
      ignored.append("sft.*")
    if ignored:
      out.append(f"{', '.join(ignored)} do(es) not apply to task.kind='jsonl' (no synthetic problems, no "
                 "warm-start data) and are ignored")
  elif cfg.model.init_from is None and cfg.sft.steps == 0:
    out.append("sft.steps=0: the model created from scratch is not warm-started and answers at chance; RL will "
               "rarely see a reward")
  return out


def _as_tuple(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value


# Config entries that fix the shapes / structure of the checkpointed train state or of a rollout batch;
# resuming with any of them changed is refused with a message naming them.
_RESUME_KEYS = ("model", "rollout.group_size", "rollout.groups_per_batch", "rollout.max_prompt_len",
                "rollout.max_new_tokens", "train_state.value_head", "train_state.reference",
                "train_state.controllers",
                "optim.max_grad_norm=None")


def _resume_view(config: dict) -> dict:
  """The ``_RESUME_KEYS`` entries of a saved / new ``config.json`` dict (flattened)."""
  out = {}
  for key in _RESUME_KEYS:
    if key == "model":
      for k, v in sorted((config.get("model") or {}).items()):
        out[f"model.{k}"] = list(v) if isinstance(v, tuple) else v
      continue
    if key.endswith("=None"):
      section, name = key[:-5].split(".")
      out[key] = (config.get(section) or {}).get(name) is None
    else:
      section, name = key.split(".")
      out[key] = (config.get(section) or {}).get(name)
  return out


def state_structure(algo: algorithms_lib.Algorithm) -> dict:
  """What the algorithm adds to the train state (saved beside the config for the resume check)."""
  return {"value_head": algo.uses_critic, "reference": algo.uses_reference,
          "controllers": sorted(algo.initial_controllers()) or None}


def check_resume_compatible(saved_config: dict, config: dict, where="") -> None:
  """Raises a ValueError naming every shape-defining config entry (model sizes, batch shape, critic / KL
  reference / gradient clipping, which change the train state's structure) that differs between a saved
  run's config and the new one. Other entries (rl_steps, time budget, logging...) may change on resume."""
  old, new = _resume_view(saved_config), _resume_view(config)
  diffs = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in new if k in old and old[k] != new[k]]
  if diffs:
    raise ValueError(f"cannot resume {where}: the checkpoint was written with a different model / batch shape "
                     f"(" + "; ".join(diffs) + "). Use a new --workdir, or the original settings.")


