"""The experiment: (tiny model + synthetic task | HF checkpoint + JSONL problems) → supervised warm-start →
RL (any algorithm preset) → held-out evaluation before vs after, with metrics, checkpoints and resume.

Everything a run does is a function of its :class:`ExperimentConfig` and its workdir:

  <workdir>/config.json           the resolved config
  <workdir>/metrics.jsonl, tb/    per-step metrics (console line too)
  <workdir>/checkpoints/          orbax train states (keep-last-N); a rerun resumes from the latest
  <workdir>/eval_before.json      held-out evaluation of the warm-started policy (``evaluation.evaluate``'s
                                  summary: pass@k for every k ≤ N, AUC, bootstrap CIs, never/always-solved
                                  shares, per-problem counts — the format of ``experiments/evaluate.py``)
  <workdir>/eval_before/          its samples.jsonl, counts.jsonl and plan.json (resumable)
  <workdir>/eval_after.json, eval_after/   the same after RL
  <workdir>/summary.json          before / after, gains, the time per phase and ``rl_breakdown``: this
                                  invocation's RL step time by phase (``training.breakdown``: seconds,
                                  shares, grading overlap) and XLA compilations in / after warm-up
  <workdir>/hf_export/            the final policy as a Hugging Face checkpoint (+ tokenizer)

Sharding (``ExperimentConfig.mesh``, e.g. ``"data=2,fsdp=2,tensor=2"``; default None = one device): the
train state is placed with ``sharding.train_state_shardings`` (params by the Qwen2 partition rules, the
optimiser state following them), the update jits with explicit in/out shardings and donation, every
rollout batch goes through ``sharding.shard_batch`` (rows over data × fsdp), and the sampler and the
evaluation run on the sharded params. Multi-host (after ``sharding.initialize_distributed``): every process
builds the same (deterministic) data and runs the same loop — ``shard_batch`` cuts each process's rows out of
the global batch — orbax saves from every process, and only process 0 writes logs, metrics, evaluations,
the summary and the HF export.
"""
import ast
import collections
import dataclasses
import json
import pathlib
import shutil
import tempfile
import time
import typing
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import metrics as metrics_lib
from ngrpo_jax import sampling as sampling_lib
from ngrpo_jax.training import algorithms as algorithms_lib
from ngrpo_jax.training import breakdown as breakdown_lib
from ngrpo_jax.training import checkpoint as checkpoint_lib
from ngrpo_jax.training import compile_counter as compile_counter_lib
from ngrpo_jax.training import logging as logging_lib
from ngrpo_jax.training import rollout as rollout_lib
from ngrpo_jax.training import sft as sft_lib
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import update as update_lib


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """The policy: a Qwen2 created from scratch (sizes below) or loaded from a HF directory ``init_from``."""
  init_from: Optional[str] = None
  hidden_size: int = 128
  intermediate_size: int = 384
  num_hidden_layers: int = 3
  num_attention_heads: int = 4
  num_key_value_heads: int = 2
  tie_word_embeddings: bool = True
  dtype: str = "float32"


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


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """Held-out evaluation: ``num_samples`` per problem at ``temperature`` / ``top_p`` (paper: 256, 0.6, 0.95)."""
  num_samples: int = 16
  temperature: float = 0.6
  top_p: float = 0.95
  max_new_tokens: Optional[int] = None
  batch_problems: int = 32


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """A whole run.  ``algorithm`` names a preset of ``algorithms.PRESETS`` (or ``"ngrpo_ablation"`` with
  ``ablation`` switches); ``algorithm_overrides`` replaces fields of it (e.g. ``(("learning_rate", 1e-4),)``).
  ``mesh`` is a ``sharding.make_mesh`` spec (``"data=2,fsdp=2,tensor=2"``; None: a single device).
  ``compile_warmup_steps``: the first RL steps of an invocation whose XLA compilations are expected; the
  summary's ``rl_breakdown.compiles.after_warmup`` counts the rest (recompilations; 0 when shapes are bucketed).
  """
  name: str = "default"
  seed: int = 0
  model: ModelSpec = ModelSpec()
  task: TaskSpec = TaskSpec()
  sft: sft_lib.SFTConfig = sft_lib.SFTConfig()
  algorithm: str = "ngrpo"
  algorithm_overrides: tuple = ()
  ablation: tuple = ()
  rollout: rollout_lib.RolloutConfig = rollout_lib.RolloutConfig()
  update: update_lib.UpdateConfig = update_lib.UpdateConfig()
  optim: state_lib.OptimConfig = state_lib.OptimConfig()
  rl_steps: int = 50
  eval: EvalSpec = EvalSpec()
  checkpoint_every: int = 25
  keep_checkpoints: int = 2
  group_grad_norm_every: int = 10
  grading_workers: int = 2
  export_hf: bool = True
  tensorboard: bool = True
  time_budget_s: Optional[float] = None
  mesh: Optional[str] = None
  compile_warmup_steps: int = 1

  def build_algorithm(self) -> algorithms_lib.Algorithm:
    if self.algorithm == "ngrpo_ablation":
      algo = algorithms_lib.ngrpo_ablation(**dict(self.ablation))
      return dataclasses.replace(algo, **dict(self.algorithm_overrides))
    if self.ablation:
      raise ValueError("ablation switches need algorithm='ngrpo_ablation'")
    return algorithms_lib.get_algorithm(self.algorithm, **dict(self.algorithm_overrides))


# ----------------------------------------------------------------------------------------------------------
# Config overrides ("rollout.group_size=4").


def to_dict(cfg) -> dict:
  """A JSON-friendly dict of a (nested) config dataclass."""
  out = {}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (dict(v) if f.name in (
        "algorithm_overrides", "ablation") else v)
  return out


def _parse_value(text: str, current: Any, field_type: Any, path: str):
  if text in ("None", "none", "null") and (current is None or "Optional" in str(field_type)):
    return None
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(f"{path}: expected a bool, got {text!r}")
  if isinstance(current, int) or field_type in (int, Optional[int]):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"{path}: expected an int, got {text!r}") from None
  if isinstance(current, float) or field_type in (float, Optional[float]):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"{path}: expected a number, got {text!r}") from None
  if isinstance(current, tuple):
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ValueError(f"{path}: expected a tuple literal like (1.0, 3.0), got {text!r}") from None
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)
  return text


def apply_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
  """Applies ``"a.b=value"`` strings.  ``algo.<field>=v`` sets an algorithm field (``algorithm_overrides``),
  ``ablation.<switch>=v`` an NGRPO ablation switch.  Unknown paths / bad values raise a ValueError."""
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"override {item!r} must look like key=value (e.g. rollout.group_size=4)")
    path, text = item.split("=", 1)
    path = path.strip()
    keys = path.split(".")
    if keys[0] in ("algo", "algorithm_overrides", "ablation"):
      if len(keys) != 2:
        raise ValueError(f"override {path!r}: use algo.<field>=value or ablation.<switch>=value")
      if keys[0] == "ablation":
        defaults = {"calibration": True, "keep_all_wrong": True, "asymmetric_clip": True,
                    "virtual_reward": "max", "virtual_count": 1}
        if keys[1] not in defaults:
          raise ValueError(f"unknown ablation switch {keys[1]!r}; choose from {sorted(defaults)}")
        value = _parse_value(text, defaults[keys[1]], type(defaults[keys[1]]), path)
        cfg = dataclasses.replace(cfg, ablation=tuple({**dict(cfg.ablation), keys[1]: value}.items()))
        continue
      fields = {f.name: f for f in dataclasses.fields(algorithms_lib.Algorithm)}
      if keys[1] not in fields or keys[1] in ("advantage_fn", "loss_fn", "name"):
        raise ValueError(f"unknown algorithm field {keys[1]!r}; choose from "
                         f"{sorted(k for k in fields if k not in ('advantage_fn', 'loss_fn', 'name'))}")
      current = getattr(cfg.build_algorithm(), keys[1])
      if keys[1] == "advantage_kwargs":
        value = tuple(sorted(dict(ast.literal_eval(text)).items()))
      else:
        value = _parse_value(text, current, fields[keys[1]].type, path)
      cfg = dataclasses.replace(cfg, algorithm_overrides=tuple({**dict(cfg.algorithm_overrides),
                                                                keys[1]: value}.items()))
      continue
    cfg = _replace_path(cfg, keys, text, path)
  cfg.build_algorithm()   # validates
  return cfg


def _replace_path(obj, keys, text, path):
  names = {f.name: f for f in dataclasses.fields(obj)}
  if keys[0] not in names:
    raise ValueError(f"unknown config key {path!r} ({keys[0]!r} is not one of {sorted(names)})")
  current = getattr(obj, keys[0])
  if len(keys) > 1:
    if not dataclasses.is_dataclass(current):
      raise ValueError(f"config key {path!r}: {keys[0]!r} has no sub-fields")
    return dataclasses.replace(obj, **{keys[0]: _replace_path(current, keys[1:], text, path)})
  if dataclasses.is_dataclass(current):
    raise ValueError(f"config key {path!r} is a section; set one of its fields ({path}.<field>=...)")
  try:
    hints = typing.get_type_hints(type(obj))
  except Exception:  # pylint: disable=broad-except
    hints = {}
  return dataclasses.replace(obj, **{keys[0]: _parse_value(text, current, hints.get(keys[0]), path)})


# ----------------------------------------------------------------------------------------------------------
# Set-up: tokenizer, model, data.


def _dtype(name):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_model(spec: ModelSpec, tokenizer, seed: int):
  """(model_config, params): loaded from ``spec.init_from`` or created from scratch for ``tokenizer``."""
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  if spec.init_from:
    return models.load_pretrained(spec.init_from, compute_dtype=_dtype(spec.dtype))
  cfg = models.Qwen2Config(
      vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
      num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
      num_key_value_heads=spec.num_key_value_heads, tie_word_embeddings=spec.tie_word_embeddings,
      max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
      dtype=_dtype(spec.dtype))
  return cfg, models.init_params(cfg, jax.random.PRNGKey(seed))


def build_data(task: TaskSpec, tokenizer, seed: int) -> dict:
  """Tokenized pools: ``sft`` (prompt_ids, completion_ids), ``rl`` (prompt_ids, answer) and ``eval``
  (id, problem, prompt_ids, answer)."""
  from ngrpo_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  def encode(text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]

  def prompt_ids(question):
    return encode(prompts_lib.format_prompt(question, tokenizer, task.template))

  out = {}
  if task.kind == "synthetic":
    sft = synthetic.make_dataset(seed * 1000 + 1, task.num_sft_examples, task.sft_difficulty)
    rl = synthetic.make_dataset(seed * 1000 + 2, task.num_rl_prompts, task.rl_difficulty)
    ev = synthetic.make_dataset(seed * 1000 + 3, task.num_eval_problems, task.eval_difficulty,
                                split=synthetic.TEST, unique=True)
    out["sft"] = [{"prompt_ids": prompt_ids(p["problem"]),
                   "completion_ids": encode(prompts_lib.completion_text(p["solution"], tokenizer))} for p in sft]
  elif task.kind == "jsonl":
    from ngrpo_jax.data import problems as problems_lib  # pylint: disable=g-import-not-at-top
    if not task.train_path or not task.eval_path:
      raise ValueError("task.kind='jsonl' needs task.train_path and task.eval_path")
    rl = problems_lib.load_problems(task.train_path)[:task.num_rl_prompts]
    ev = problems_lib.load_problems(task.eval_path)[:task.num_eval_problems]
    out["sft"] = []
  else:
    raise ValueError(f"task.kind must be 'synthetic' or 'jsonl', got {task.kind!r}")
  out["rl"] = [{"prompt_ids": prompt_ids(p["problem"]), "answer": str(p["answer"]),
                "difficulty": p.get("difficulty")} for p in rl]
  out["eval"] = [{"id": str(p.get("id", f"eval-{i}")), "problem": p["problem"],
                  "prompt_ids": prompt_ids(p["problem"]), "answer": str(p["answer"]),
                  "difficulty": p.get("difficulty")} for i, p in enumerate(ev)]
  return out


def make_generate_fn(model_config, cfg: rollout_lib.RolloutConfig, eos_ids, pad_id, *, num_samples=None,
                     temperature=None, top_p=None, max_new_tokens=None):
  """``generate(params, prompt_tokens, prompt_mask, key) -> rollout.Samples`` over ``sampling.generate``."""
  from ngrpo_jax import sampling  # pylint: disable=g-import-not-at-top
  n = num_samples or cfg.group_size
  new = max_new_tokens or cfg.max_new_tokens

  def generate(params, ptoks, pmask, key):
    out = sampling.generate(params, model_config, jnp.asarray(ptoks), jnp.asarray(pmask), key,
                            max_new_tokens=new,
                            temperature=cfg.temperature if temperature is None else temperature,
                            top_p=cfg.top_p if top_p is None else top_p, top_k=cfg.top_k, min_p=cfg.min_p,
                            stop_token_ids=tuple(eos_ids), num_samples=n, pad_token_id=pad_id)
    return rollout_lib.samples_from_generate_output(jax.device_get(out), new)

  return generate


# ----------------------------------------------------------------------------------------------------------
# Evaluation (one code path with experiments/evaluate.py: ngrpo_jax.evaluation).


def eval_settings(cfg: ExperimentConfig, policy_step: int) -> dict:
  """The sampling settings of a held-out evaluation (fingerprinted in its ``plan.json``)."""
  return {"model": f"trainer policy at RL step {policy_step}", "policy_step": int(policy_step),
          "dataset": _dataset_name(cfg.task), "template": cfg.task.template,
          "temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p, "top_k": cfg.rollout.top_k,
          "max_new_tokens": cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, "require_boxed": True,
          "seed": cfg.seed}


def _dataset_name(task: TaskSpec) -> str:
  if task.kind == "synthetic":
    return "synthetic"
  path = pathlib.Path(str(task.eval_path))
  return path.parent.name if path.stem in ("normalized", "test") and path.parent.name else path.stem


def evaluate_heldout(params, model_config, tokenizer, problems: Sequence[dict], cfg: ExperimentConfig, out_dir, *,
                     grade_fn, policy_step: int = 0, summary_path=None, metadata: Optional[dict] = None,
                     eos_ids: Optional[Sequence[int]] = None, log=print):
  """Held-out evaluation of a policy with the evaluation library (``experiments/evaluate.py``'s code path).

  ``cfg.eval.num_samples`` = N responses per problem (``evaluation.make_policy_sample_fn``: sample j of
  problem i uses PRNG stream i·N + j of ``PRNGKey(seed + 99)``; prompts left-padded to
  ``rollout.max_prompt_len`` so one sampler compile serves every batch) → graded by ``grade_fn`` →
  per-problem counts → ``evaluation.summarize``: unbiased pass@k for every k ≤ N, the Pass@k AUC
  (NGRPO §5.1.2), bootstrap CIs, never / always-solved shares. Resumable per batch in ``out_dir``.

  Args:
    params: policy params (may be sharded); model_config: its ``Qwen2Config``; tokenizer: HF tokenizer.
    problems: records with ``id``, ``problem``, ``answer`` (``build_data(...)["eval"]``).
    cfg: the experiment config (``eval``, ``rollout.max_prompt_len`` / ``top_k``, ``task.template``, ``seed``).
    out_dir: directory for samples.jsonl / counts.jsonl / plan.json.
    grade_fn: ``evaluation.GradeFn`` ``(golds, responses) -> verdicts``.
    policy_step: RL step of the policy (part of the settings fingerprint).
    summary_path: where the summary JSON goes (default ``<out_dir>/summary.json``).
    metadata: extra summary fields.
    eos_ids: stop tokens (default the tokenizer's eos).

  Returns:
    ``evaluation.EvalResult``.
  """
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.data import prompts as prompts_lib  # pylint: disable=g-import-not-at-top
  ev = cfg.eval
  settings = eval_settings(cfg, policy_step)
  batch = min(ev.batch_problems, len(problems))
  sample_fn = evaluation.make_policy_sample_fn(
      params, model_config, tokenizer, num_samples=ev.num_samples, max_new_tokens=settings["max_new_tokens"],
      temperature=ev.temperature, top_p=ev.top_p, top_k=cfg.rollout.top_k, pad_batch_to=batch,
      pad_prompts_to=cfg.rollout.max_prompt_len,
      stop_token_ids=tuple(eos_ids) if eos_ids is not None else (tokenizer.eos_token_id,))
  return evaluation.evaluate(
      problems, sample_fn, grade_fn, out_dir, num_samples=ev.num_samples, prompts_per_batch=batch,
      key=jax.random.PRNGKey(cfg.seed + 99),
      prompt_fn=lambda p: prompts_lib.format_prompt(p["problem"], tokenizer, cfg.task.template),
      settings=settings, metadata=metadata, num_bootstrap=1000, log=log, summary_path=summary_path)


def eval_headline(summary: dict) -> str:
  """One console line of an evaluation summary (percentages)."""
  pk, n = summary["pass_at_k"], summary["max_k"]
  auc = "" if summary.get("auc") is None else f"  AUC {summary['auc']:.1f}"
  return (f"pass@1 {pk['1']:.1f}%  pass@{n} {pk[str(n)]:.1f}%{auc}  never-solved "
          f"{summary['never_solved_share']:.1f}%  always-solved {summary['always_solved_share']:.1f}%")


def summary_gain(before: dict, after: dict) -> dict:
  """after − before (percentage points) of pass@k for every k, the AUC and the never/always-solved shares."""
  gain = {f"pass@{k}": after["pass_at_k"][k] - before["pass_at_k"][k] for k in before["pass_at_k"]
          if k in after["pass_at_k"]}
  for key in ("auc", "never_solved_share", "always_solved_share", "mean_accuracy"):
    if before.get(key) is not None and after.get(key) is not None:
      gain[key] = after[key] - before[key]
  return gain


def _eval_grade_fn(rollout_grade_fn):
  """An ``evaluation.GradeFn`` from a rollout ``grade(responses, golds) -> (correct, parseable)``."""

  def grade(golds, responses):
    correct, _ = rollout_grade_fn(list(responses), list(golds))
    return [bool(c) for c in np.asarray(correct)]

  return grade


# ----------------------------------------------------------------------------------------------------------
# The run.


def validate_config(cfg: ExperimentConfig) -> algorithms_lib.Algorithm:
  """Checks cross-field consistency (raises ValueError naming the fields); returns the built algorithm."""
  algo = cfg.build_algorithm()
  if cfg.rollout.batch_rows % (cfg.update.num_minibatches * cfg.update.num_microbatches):
    raise ValueError(f"rollout.group_size * rollout.groups_per_batch = {cfg.rollout.batch_rows} must be "
                     f"divisible by update.num_minibatches * update.num_microbatches = "
                     f"{cfg.update.num_minibatches * cfg.update.num_microbatches}")
  if cfg.rl_steps < 0:
    raise ValueError(f"rl_steps must be >= 0, got {cfg.rl_steps}")
  if not isinstance(cfg.compile_warmup_steps, int) or cfg.compile_warmup_steps < 0:
    raise ValueError(f"compile_warmup_steps must be an int >= 0, got {cfg.compile_warmup_steps!r}")
  if cfg.eval.num_samples < 1 or cfg.checkpoint_every < 1:
    raise ValueError("eval.num_samples and checkpoint_every must be >= 1")
  if cfg.task.kind == "synthetic" and cfg.model.init_from is None and cfg.sft.steps < 1:
    raise ValueError("a model created from scratch needs a warm-start (sft.steps >= 1)")
  if algo.group_filter == "ngrpo" and cfg.rollout.format_reward < 0:
    raise ValueError("rollout.format_reward must be >= 0")
  if cfg.mesh is not None:
    from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
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


# Config entries that fix the shapes / structure of the checkpointed train state or of a rollout batch;
# resuming with any of them changed is refused with a message naming them.
_RESUME_KEYS = ("model", "rollout.group_size", "rollout.groups_per_batch", "rollout.max_prompt_len",
                "rollout.max_new_tokens", "resolved_algorithm.use_critic", "resolved_algorithm.kl_coef>0",
                "optim.max_grad_norm=None")


def _resume_view(config: dict) -> dict:
  """The ``_RESUME_KEYS`` entries of a saved / new ``config.json`` dict (flattened)."""
  out = {}
  for key in _RESUME_KEYS:
    if key == "model":
      for k, v in sorted((config.get("model") or {}).items()):
        out[f"model.{k}"] = list(v) if isinstance(v, tuple) else v
      continue
    if key.endswith(">0"):
      section, name = key[:-2].split(".")
      out[key] = float((config.get(section) or {}).get(name) or 0.0) > 0
    elif key.endswith("=None"):
      section, name = key[:-5].split(".")
      out[key] = (config.get(section) or {}).get(name) is None
    else:
      section, name = key.split(".")
      out[key] = (config.get(section) or {}).get(name)
  return out


def check_resume_compatible(saved_config: dict, config: dict, where="") -> None:
  """Raises a ValueError naming every shape-defining config entry (model sizes, batch shape, critic / KL
  reference / gradient clipping, which change the train state's structure) that differs between a saved
  run's config and the new one. Other entries (rl_steps, time budget, logging...) may change on resume."""
  old, new = _resume_view(saved_config), _resume_view(config)
  diffs = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in new if k in old and old[k] != new[k]]
  if diffs:
    raise ValueError(f"cannot resume {where}: the checkpoint was written with a different model / batch shape "
                     f"(" + "; ".join(diffs) + "). Use a new --workdir, or the original settings.")


class _NullWriter:
  """Metrics writer of processes other than 0 (they write nothing)."""

  def write(self, *args, **kwargs):
    del args, kwargs

  def close(self):
    pass


def place_train_state(state: state_lib.TrainState, model_config, mesh):
  """(state on the mesh, its shardings) — ``sharding.train_state_shardings``; (state, None) without a mesh."""
  if mesh is None:
    return state, None
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  shardings = sharding.train_state_shardings(model_config, state, mesh)
  return sharding.device_put_global(state, shardings), shardings


def place_batch(batch: dict, mesh) -> dict:
  """A rollout batch on the devices: rows split over data × fsdp (``sharding.shard_batch``) with a mesh."""
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  return sharding.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)


def run(cfg: ExperimentConfig, workdir, *, log_stream=None, grade_fn=None) -> dict:
  """Runs (or resumes) the experiment in ``workdir`` and returns the summary dict.

  Args:
    cfg: the experiment config.
    workdir: output directory; an existing checkpoint there is resumed (the model and batch shapes must
      match, see ``check_resume_compatible``).
    log_stream: console stream (default stdout).
    grade_fn: optional ``grade(responses, golds) -> (correct, parseable)`` (default: the SymPy checker in
      worker processes).
  """
  import sys  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  t_start = time.perf_counter()
  main = sharding.is_main_process()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  stream = log_stream if log_stream is not None else sys.stdout
  algo = validate_config(cfg)
  config_dict = {**to_dict(cfg), "resolved_algorithm": algo.describe()}
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
  saved = ckpt.latest_metadata()
  if saved is not None:
    check_resume_compatible(saved.get("config") or {}, json.loads(json.dumps(config_dict, default=str)),
                            where=f"{ckpt.directory} (step {saved.get('step')})")
  if main:
    checkpoint_lib.write_json(workdir / "config.json", config_dict)
  writer = logging_lib.MetricsWriter(workdir, tensorboard=cfg.tensorboard, stream=stream) if main \
      else _NullWriter()

  def say(msg):
    if main:
      stream.write(msg + "\n")
      stream.flush()

  mesh = None
  if cfg.mesh is not None:
    mesh = sharding.make_mesh(cfg.mesh)
  say(f"[setup] experiment {cfg.name!r}: algorithm {algo.name} "
      f"(advantage={algo.advantage}{dict(algo.advantage_kwargs)}, filter={algo.group_filter}, "
      f"eps_pos={algo.eps_pos}, eps_neg={algo.eps_neg}, aggregation={algo.aggregation}, kl={algo.kl_coef}) "
      f"→ {workdir}" + (f"; mesh {sharding.mesh_sizes(mesh)} over {jax.device_count()} devices, "
                        f"{jax.process_count()} process(es)" if mesh is not None else ""))
  if cfg.model.init_from:
    from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
    tokenizer = models.load_tokenizer(cfg.model.init_from)
  else:
    tokenizer = tokenizer_lib.build_tokenizer()
  model_config, init_params = build_model(cfg.model, tokenizer, cfg.seed)
  if mesh is not None:
    sharding.validate_mesh_for_config(model_config, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(init_params))
  data = build_data(cfg.task, tokenizer, cfg.seed)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  eos_ids = (tokenizer.eos_token_id,)
  format_ids = tuple(tokenizer("\\boxed{", add_special_tokens=False)["input_ids"])
  say(f"[setup] model: {n_params / 1e6:.2f}M params, vocab {model_config.vocab_size}; data: "
      f"{len(data['sft'])} warm-start examples, {len(data['rl'])} RL prompts, {len(data['eval'])} held-out")

  def decode(ids):
    return tokenizer.decode(ids, skip_special_tokens=True)

  pool = None
  if grade_fn is None:
    pool = grading.WorkerPool(cfg.grading_workers) if cfg.grading_workers > 0 else None
    grade_fn = rollout_lib.default_grade_fn(pool=pool) if pool is not None else _inprocess_grade_fn()
    eval_grade = evaluation.CheckerGrader(require_boxed=True, pool=pool) if pool is not None \
        else _eval_grade_fn(grade_fn)
  else:
    eval_grade = _eval_grade_fn(grade_fn)

  peak_lr = cfg.optim.learning_rate or algo.learning_rate
  optim_cfg = dataclasses.replace(cfg.optim, total_steps=max(
      cfg.optim.total_steps, cfg.rl_steps * cfg.update.ppo_epochs * cfg.update.num_minibatches))
  optimizer, schedule = state_lib.make_optimizer(optim_cfg, peak_lr)
  value_params = None
  if algo.use_critic:
    from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
    value_params = models.init_value_head(model_config, jax.random.PRNGKey(cfg.seed + 17))
  timings = {}

  # Resume or warm-start.
  template = state_lib.create_train_state(init_params, optimizer, jax.random.PRNGKey(cfg.seed),
                                          value_params=value_params, keep_reference=algo.kl_coef > 0)
  state_sh = None if mesh is None else sharding.train_state_shardings(model_config, template, mesh)
  state, meta = ckpt.restore_latest(template, shardings=state_sh)
  del template
  if state is not None:
    done = int(state.step)
    if done >= cfg.rl_steps and (workdir / "eval_after.json").exists():
      say(f"[resume] {workdir} has already finished ({done}/{cfg.rl_steps} RL steps, checkpoint "
          f"{ckpt.directory}/{done}); re-using its evaluations (raise --rl_steps to train further)")
    else:
      say(f"[resume] restored step {done} from {ckpt.directory}; continuing to step {cfg.rl_steps}")
    timings.update(meta.get("extra", {}).get("timings", {}))
  else:
    policy = init_params
    if data["sft"] and cfg.sft.steps > 0:
      examples = sft_lib.pack_examples([e["prompt_ids"] for e in data["sft"]],
                                       [e["completion_ids"] for e in data["sft"]], cfg.sft.max_len, pad_id)
      say(f"[sft] warm-start: {cfg.sft.steps} steps × {cfg.sft.batch_size} sequences, lr {cfg.sft.learning_rate}")
      policy, sft_summary = sft_lib.train_sft(
          policy, model_config, examples, cfg.sft, seed=cfg.seed,
          log_fn=lambda s, m: writer.write(s, m, phase="sft"), log_every=max(cfg.sft.steps // 5, 1))
      timings["sft"] = sft_summary["seconds"]
      say(f"[sft] loss {sft_summary['loss_first']:.3f} → {sft_summary['loss_last']:.3f} in "
          f"{sft_summary['seconds']:.1f}s ({sft_summary['tokens_per_sec']:.0f} tokens/s)")
    state = state_lib.create_train_state(policy, optimizer, jax.random.PRNGKey(cfg.seed),
                                         value_params=value_params, keep_reference=algo.kl_coef > 0)
    state, _ = place_train_state(state, model_config, mesh)
    ckpt.save(state, config_dict, extra={"timings": timings})

  def run_eval(params, tag):
    path = workdir / f"eval_{tag}.json"
    step = int(state.step)
    if path.exists():
      res = json.loads(path.read_text())
      if (res.get("settings") or {}).get("policy_step") == step and "pass_at_k" in res:
        return res
    out_dir = workdir / f"eval_{tag}"
    plan = out_dir / evaluation.PLAN_FILE
    if plan.exists() and (json.loads(plan.read_text()).get("settings") or {}).get("policy_step") != step:
      if main:
        shutil.rmtree(out_dir)    # an evaluation of an older policy (the run was extended)
    if not main:                  # every process samples (collectives); only process 0 writes
      out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"eval_{tag}_p{jax.process_index()}_"))
    result = evaluate_heldout(params, model_config, tokenizer, data["eval"], cfg, out_dir, grade_fn=eval_grade,
                              policy_step=step, summary_path=path if main else None, eos_ids=eos_ids,
                              metadata={"label": f"{cfg.name} ({tag} RL)", "tag": tag},
                              log=lambda msg: say(f"[eval:{tag}] {msg}"))
    if not main:
      shutil.rmtree(out_dir, ignore_errors=True)
    res = result.summary
    timings[f"eval_{tag}"] = res["seconds"]
    say(f"[eval:{tag}] {eval_headline(res)}  ({res['seconds']:.1f}s)")
    return res

  before = run_eval(state.params["policy"], "before")

  # RL.
  stream_rl = rollout_lib.PromptStream(data["rl"], seed=cfg.seed)
  fns = rollout_lib.RolloutFns(generate=make_generate_fn(model_config, cfg.rollout, eos_ids, pad_id),
                               score=update_lib.make_scorer(model_config, cfg.update), decode=decode,
                               grade=grade_fn)
  train_step = update_lib.make_train_step(model_config, algo, cfg.update, optimizer, schedule, mesh=mesh,
                                          state_shardings=state_sh)
  grad_norms = update_lib.make_group_grad_norms(model_config, algo, cfg.update) \
      if cfg.group_grad_norm_every > 0 else None
  t_rl = time.perf_counter()
  rl_time = timings.get("rl", 0.0)
  phase_keys = ("sampling", "grading", "grading_wait", "grading_overlap", "scoring", "update", "diagnostics")
  phase_time = {f"rl_{k}": timings.get(f"rl_{k}", 0.0) for k in phase_keys}
  steps_breakdown = breakdown_lib.BreakdownAccumulator(cfg.compile_warmup_steps)
  if int(state.step) < cfg.rl_steps:
    say(f"[rl] {algo.name}: {cfg.rl_steps} steps × {cfg.rollout.groups_per_batch} prompts × "
        f"G={cfg.rollout.group_size}, lr {peak_lr}, {cfg.update.ppo_epochs} epoch(s) × "
        f"{cfg.update.num_minibatches} minibatch(es)")
  # Sampler calls (draws) of the last steps: the next step samples min(recent) draws without waiting for the
  # previous draw's grades (rollout.collect's speculation; it only changes speed, never results). A wasted
  # draw costs a sampler call, a right one saves a grading wait, so speculate only what every recent step used.
  recent_draws = collections.deque(maxlen=4)
  with compile_counter_lib.CompileCounter() as compiles:
    while int(state.step) < cfg.rl_steps:
      if cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s:
        say(f"[rl] time budget {cfg.time_budget_s}s reached at step {int(state.step)}; stopping RL early")
        break
      c0 = compiles.count
      t0 = time.perf_counter()
      step = int(state.step)
      sample_key, next_rng = jax.random.split(jnp.asarray(state.rng, jnp.uint32))
      # The sampler's decode layout (per-layer weights), made once per step for all of its sampler calls;
      # otherwise models > 64 MiB would slice their stacked weights inside every decode step.
      batch, m, position = rollout_lib.collect(
          fns, algo, cfg.rollout, stream_rl, int(state.data_position), sample_key,
          policy_params=state.params["policy"], ref_params=state.ref_params,
          value_params=state.params.get("value"), pad_id=pad_id, eos_ids=eos_ids, format_token_ids=format_ids,
          expected_draws=min(recent_draws, default=1),
          generate_params=sampling_lib.prepare_params(state.params["policy"]))
      recent_draws.append(int(m["sampling/draws"]))
      jbatch = place_batch(batch, mesh)
      if grad_norms is not None and step % cfg.group_grad_norm_every == 0:
        t1 = time.perf_counter()
        m.update(jax.device_get(grad_norms(state.params, jbatch)))
        m["time/diagnostics"] = time.perf_counter() - t1
      state = state.replace(rng=_like(next_rng, state.rng),
                            data_position=_like(jnp.asarray(position, jnp.int32), state.data_position))
      t1 = time.perf_counter()
      state, um = train_step(state, jbatch)
      um = jax.device_get(um)
      t_update = time.perf_counter() - t1
      m.update(um)
      m["time/update"] = t_update
      m["time/step"] = time.perf_counter() - t0
      m["tokens_per_sec/update"] = float(batch["attention_mask"].sum()) * cfg.update.ppo_epochs / max(t_update,
                                                                                                       1e-9)
      m["data_position"] = position
      m["compiles/step"] = compiles.count - c0
      m["compiles/seconds"] = sum(sec for _, sec in compiles.events[c0:])
      m.update(steps_breakdown.add(m, m["compiles/step"], m["compiles/seconds"], compiles.names(c0)))
      for k in phase_keys:
        phase_time[f"rl_{k}"] += m.get(f"time/{k}", 0.0)
      writer.write(step + 1, m, phase="rl")
      if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.rl_steps:
        timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)
        ckpt.save(state, config_dict, extra={"timings": timings})
  timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)
  rl_breakdown = steps_breakdown.summary()
  if steps_breakdown.steps:
    say(breakdown_lib.format_summary(rl_breakdown))

  after = run_eval(state.params["policy"], "after")
  if cfg.export_hf:
    policy = sharding.gather_to_host(state.params["policy"])    # a collective on several processes
    if main:
      checkpoint_lib.export_hf(workdir / "hf_export", model_config, policy, tokenizer)
  drop = ("per_problem_correct", "settings", "auc_definition", "label", "tag")
  summary = {
      "algorithm": algo.describe(), "rl_steps_done": int(state.step), "params_millions": n_params / 1e6,
      "mesh": None if mesh is None else sharding.mesh_sizes(mesh),
      "before": {k: v for k, v in before.items() if k not in drop},
      "after": {k: v for k, v in after.items() if k not in drop},
      "gain": summary_gain(before, after),
      "timings_s": {**timings, "total_this_invocation": time.perf_counter() - t_start},
      "rl_breakdown": rl_breakdown,
  }
  if main:
    checkpoint_lib.write_json(workdir / "summary.json", summary)
  n = after["max_k"]
  say(f"[done] pass@1 {before['pass_at_k']['1']:.1f}% → {after['pass_at_k']['1']:.1f}%; "
      f"pass@{n} {before['pass_at_k'][str(n)]:.1f}% → {after['pass_at_k'][str(n)]:.1f}%; never-solved "
      f"{before['never_solved_share']:.1f}% → {after['never_solved_share']:.1f}%; times "
      + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))
  writer.close()
  ckpt.close()
  if pool is not None:
    pool.close()
  return summary


def _like(value, like):
  """``value`` with the sharding of ``like`` (a replicated scalar of a sharded state stays replicated)."""
  sh = getattr(like, "sharding", None)
  if sh is None or jax.process_count() == 1 and len(sh.device_set) == 1:
    return value
  from ngrpo_jax import sharding  # pylint: disable=g-import-not-at-top
  return sharding.device_put_global(np.asarray(jax.device_get(value)), sh)


def _inprocess_grade_fn():
  """Grades in this process with ``grading.check`` (cheap stages; symbolic stage via the default pool)."""
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top

  def grade(responses, golds):
    res = [grading.check(g, r, require_boxed=True) for g, r in zip(golds, responses)]
    return (np.array([r.equivalent for r in res], bool),
            np.array([r.pred_answer is not None and r.boxed for r in res], bool))

  return grade
