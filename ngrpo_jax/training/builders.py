"""Builders of a run's pieces from its config: tokenizer, model, data, and the RL step's functions."""
import dataclasses

import jax
import jax.numpy as jnp

from ngrpo_jax import grading
from ngrpo_jax import models
from ngrpo_jax import sampling
from ngrpo_jax.data import problems as problems_lib
from ngrpo_jax.data import prompts as prompts_lib
from ngrpo_jax.data import synthetic
from ngrpo_jax.data import tokenizer as tokenizer_lib
from ngrpo_jax.training import batch as batch_lib
from ngrpo_jax.training import config as config_lib
from ngrpo_jax.training import registry
from ngrpo_jax.training import rollout as rollout_lib
from ngrpo_jax.training import step as step_lib
from ngrpo_jax.training import update as update_lib

ModelSpec, TaskSpec = config_lib.ModelSpec, config_lib.TaskSpec


def build_tokenizer(spec: ModelSpec, task: TaskSpec = None):
  """The synthetic task's character tokenizer for the synthetic task (a model trained on it, from scratch or
  ``init_from``, reads that vocabulary), else the checkpoint's tokenizer (``init_from``)."""
  if (task is None or task.kind == "synthetic") and (task is not None or not spec.init_from):
    return tokenizer_lib.build_tokenizer()
  if not spec.init_from:
    raise ValueError(f"task.kind={task.kind!r} needs model.init_from (a Hugging Face checkpoint directory)")
  return models.load_tokenizer(spec.init_from)


def _dtype(name):
  return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build_model(spec: ModelSpec, tokenizer, seed: int):
  """(model_config, params): loaded from ``spec.init_from`` or created from scratch for ``tokenizer``."""
  if spec.init_from:
    cfg, params = models.load_pretrained(spec.init_from, compute_dtype=_dtype(spec.dtype))
    if cfg.vocab_size < len(tokenizer):
      raise ValueError(f"model.init_from={spec.init_from!r} has vocab_size {cfg.vocab_size} but the tokenizer "
                       f"has {len(tokenizer)} tokens")
    return cfg, params
  cfg = models.Qwen2Config(
      vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
      num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
      num_key_value_heads=spec.num_key_value_heads, tie_word_embeddings=spec.tie_word_embeddings,
      model_type=spec.model_type, head_dim=spec.head_dim, max_position_embeddings=1024, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
      dtype=_dtype(spec.dtype))
  return cfg, models.init_params(cfg, jax.random.PRNGKey(seed))


def build_data(task: TaskSpec, tokenizer, seed: int) -> dict:
  """Tokenized pools: ``sft`` (prompt_ids, completion_ids), ``rl`` (prompt_ids, problem, answer) and ``eval``
  (id, problem, prompt_ids, answer). Synthetic pools come from ``task.data_seed`` (else ``seed``); the eval
  pool from ``task.eval_split``."""

  def encode(text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]

  def prompt_ids(question):
    return encode(prompts_lib.format_prompt(question, tokenizer, task.template))

  out = {}
  if task.kind == "synthetic":
    seed = seed if task.data_seed is None else task.data_seed
    splits = {"validation_fraction": task.validation_fraction}
    sft = synthetic.make_dataset(seed * 1000 + 1, task.num_sft_examples, task.sft_difficulty, **splits)
    rl = synthetic.make_dataset(seed * 1000 + 2, task.num_rl_prompts, task.rl_difficulty, **splits)
    ev = synthetic.make_dataset(seed * 1000 + 3, task.num_eval_problems, task.eval_difficulty,
                                split=task.eval_split, unique=True, **splits)
    out["sft"] = [{"prompt_ids": prompt_ids(p["problem"]),
                   "completion_ids": encode(prompts_lib.completion_text(p["solution"], tokenizer))} for p in sft]
  elif task.kind == "jsonl":
    if not task.train_path or not task.eval_path:
      raise ValueError("task.kind='jsonl' needs task.train_path and task.eval_path")
    rl = problems_lib.load_problems(task.train_path)[:task.num_rl_prompts]
    ev = problems_lib.load_problems(task.eval_path)[:task.num_eval_problems]
    out["sft"] = []
  else:
    raise ValueError(f"task.kind must be 'synthetic' or 'jsonl', got {task.kind!r}")
  out["rl"] = [{"prompt_ids": prompt_ids(p["problem"]), "problem": p["problem"], "answer": str(p["answer"]),
                "difficulty": p.get("difficulty")} for p in rl]
  out["eval"] = [{"id": str(p.get("id", f"eval-{i}")), "problem": p["problem"],
                  "prompt_ids": prompt_ids(p["problem"]), "answer": str(p["answer"]),
                  "difficulty": p.get("difficulty")} for i, p in enumerate(ev)]
  return out



def token_ids(tokenizer) -> dict:
  """pad id, stop ids and the answer scaffold's ids (``\\boxed{``) of a tokenizer."""
  return {"pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
          "eos_ids": (tokenizer.eos_token_id,),
          "format_token_ids": tuple(tokenizer("\\boxed{", add_special_tokens=False)["input_ids"])}


def group_filter(algo, reward: grading.RewardConfig):
  """``keep(rewards f32[n, G]) -> bool[n]``: the algorithm's group filter at the task's reward range."""
  fn = registry.GROUP_FILTERS.get(algo.group_filter).fn
  return lambda rewards: jax.device_get(fn(jnp.asarray(rewards), r_max=reward.max_reward, r_min=reward.min_reward))


def make_step_parts(cfg: config_lib.ExperimentConfig, model_config, tokenizer, data: dict, grader, *, train_step,
                    place, diagnose=None) -> step_lib.StepParts:
  """The :class:`~ngrpo_jax.training.step.StepParts` of a run (sampler, grader, filter, scorer, estimator)."""
  algo, ro, ids = cfg.algorithm, cfg.rollout, token_ids(tokenizer)
  sampler = sampling.make_sampler(model_config, num_samples=ro.group_size, max_new_tokens=ro.max_new_tokens,
                                  temperature=ro.temperature, top_p=ro.top_p, top_k=ro.top_k, min_p=ro.min_p,
                                  stop_token_ids=ids["eos_ids"], pad_token_id=ids["pad_id"],
                                  return_sampling_logprobs=ro.filters)
  return step_lib.StepParts(
      sample=sampler, grade=grader, decode=lambda t: tokenizer.decode(t, skip_special_tokens=True),
      stream=rollout_lib.PromptStream(data["rl"], seed=cfg.seed), rollout=ro, reward=cfg.reward,
      keep=group_filter(algo, cfg.reward), max_draws=1 + (ro.max_refills if algo.dynamic_sampling else 0),
      score=batch_lib.make_scorer(update_lib.make_scorer(model_config, cfg.learner), algo),
      advantages=batch_lib.make_advantages(algo, cfg.reward, ro.group_size, rollout=ro),
      check_direction=update_lib.make_scorer(model_config, cfg.learner) if cfg.check_direction else None,
      train_step=train_step, place=place, diagnose=diagnose, update_epochs=cfg.learner.ppo_epochs, algorithm=algo,
      **ids)


def peak_learning_rate(cfg: config_lib.ExperimentConfig) -> float:
  """The peak learning rate of a run: ``optim.learning_rate`` or the algorithm's own."""
  return cfg.optim.learning_rate or cfg.algorithm.learning_rate


def optimizer_config(cfg: config_lib.ExperimentConfig):
  """The optimiser settings with ``total_steps`` covering every optimiser step of the run."""
  return dataclasses.replace(cfg.optim, total_steps=max(
      cfg.optim.total_steps, cfg.rl_steps * cfg.learner.ppo_epochs * cfg.learner.num_minibatches))
