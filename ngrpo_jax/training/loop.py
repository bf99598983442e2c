"""The experiment: (tiny model + synthetic task | HF checkpoint + JSONL problems) → supervised warm-start →
RL (any algorithm preset) → held-out evaluation before vs after, with metrics, checkpoints and resume.

Everything a run does is a function of its :class:`ExperimentConfig` and its workdir:

  <workdir>/config.json           the resolved config
  <workdir>/metrics.jsonl, tb/    per-step metrics (console line too)
  <workdir>/checkpoints/          orbax train states (keep-last-N); a rerun resumes from the latest
  <workdir>/eval_before.json      held-out evaluation of the warm-started policy
  <workdir>/eval_after.json       the same after RL
  <workdir>/summary.json          before / after, gains and the time per phase
  <workdir>/hf_export/            the final policy as a Hugging Face checkpoint (+ tokenizer)
"""
import ast
import dataclasses
import json
import pathlib
import time
import typing
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ngrpo_jax import metrics as metrics_lib
from ngrpo_jax.training import algorithms as algorithms_lib
from ngrpo_jax.training import checkpoint as checkpoint_lib
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
  """Tokenized pools: ``sft`` (prompt_ids, completion_ids), ``rl`` and ``eval`` (prompt_ids, answer)."""
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
  out["eval"] = [{"prompt_ids": prompt_ids(p["problem"]), "answer": str(p["answer"]),
                  "difficulty": p.get("difficulty")} for p in ev]
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
# Evaluation.


def evaluate(generate_fn, grade_fn, decode, params, problems, *, num_samples: int, batch_problems: int,
             max_prompt_len: int, pad_id: int, key) -> dict:
  """Held-out evaluation: ``num_samples`` responses per problem → pass@k for k = 1, 2, 4, …, num_samples,
  the pass@k AUC (when num_samples is a power of two), and the shares of never / always solved problems.
  """
  counts, parse = [], []
  t0 = time.perf_counter()
  for start in range(0, len(problems), batch_problems):
    chunk = problems[start:start + batch_problems]
    real = len(chunk)
    chunk = chunk + [chunk[-1]] * (batch_problems - real)          # fixed shape: one compile
    ptoks, pmask = rollout_lib.left_pad([p["prompt_ids"] for p in chunk], max_prompt_len, pad_id)
    samples = generate_fn(params, ptoks, pmask, jax.random.fold_in(key, start))
    texts = [decode(samples.tokens[i, :samples.lengths[i]].tolist()) for i in range(real * num_samples)]
    golds = [chunk[i // num_samples]["answer"] for i in range(len(texts))]
    correct, parseable = grade_fn(texts, golds)
    counts.append(np.asarray(correct).reshape(real, num_samples).sum(-1))
    parse.append(np.asarray(parseable).mean())
  c = np.concatenate(counts)
  ks = [k for k in (2 ** i for i in range(20)) if k <= num_samples]
  passk = {f"pass@{k}": float(np.mean(metrics_lib.pass_at_k(num_samples, c, k))) for k in ks}
  out = {"num_problems": len(c), "num_samples": num_samples, **passk,
         "never_solved": float(np.mean(c == 0)), "always_solved": float(np.mean(c == num_samples)),
         "parseable_frac": float(np.mean(parse)), "seconds": time.perf_counter() - t0,
         "per_problem_correct": c.tolist()}
  if ks[-1] == num_samples and len(ks) > 1:
    out["pass@k_auc"] = float(metrics_lib.pass_at_k_auc([passk[f"pass@{k}"] for k in ks], ks))
  return out


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
  if cfg.eval.num_samples < 1 or cfg.checkpoint_every < 1:
    raise ValueError("eval.num_samples and checkpoint_every must be >= 1")
  if cfg.task.kind == "synthetic" and cfg.model.init_from is None and cfg.sft.steps < 1:
    raise ValueError("a model created from scratch needs a warm-start (sft.steps >= 1)")
  if algo.group_filter == "ngrpo" and cfg.rollout.format_reward < 0:
    raise ValueError("rollout.format_reward must be >= 0")
  return algo


def run(cfg: ExperimentConfig, workdir, *, log_stream=None, grade_fn=None) -> dict:
  """Runs (or resumes) the experiment in ``workdir`` and returns the summary dict.

  Args:
    cfg: the experiment config.
    workdir: output directory; an existing checkpoint there is resumed (config must match in shape).
    log_stream: console stream (default stdout).
    grade_fn: optional ``grade(responses, golds) -> (correct, parseable)`` (default: the SymPy checker in
      worker processes).
  """
  import sys  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  t_start = time.perf_counter()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  stream = log_stream if log_stream is not None else sys.stdout
  algo = validate_config(cfg)
  config_dict = {**to_dict(cfg), "resolved_algorithm": algo.describe()}
  checkpoint_lib.write_json(workdir / "config.json", config_dict)
  writer = logging_lib.MetricsWriter(workdir, tensorboard=cfg.tensorboard, stream=stream)

  def say(msg):
    stream.write(msg + "\n")
    stream.flush()

  say(f"[setup] experiment {cfg.name!r}: algorithm {algo.name} "
      f"(advantage={algo.advantage}{dict(algo.advantage_kwargs)}, filter={algo.group_filter}, "
      f"eps_pos={algo.eps_pos}, eps_neg={algo.eps_neg}, aggregation={algo.aggregation}, kl={algo.kl_coef}) "
      f"→ {workdir}")
  if cfg.model.init_from:
    from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
    tokenizer = models.load_tokenizer(cfg.model.init_from)
  else:
    tokenizer = tokenizer_lib.build_tokenizer()
  model_config, init_params = build_model(cfg.model, tokenizer, cfg.seed)
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

  peak_lr = cfg.optim.learning_rate or algo.learning_rate
  optim_cfg = dataclasses.replace(cfg.optim, total_steps=max(
      cfg.optim.total_steps, cfg.rl_steps * cfg.update.ppo_epochs * cfg.update.num_minibatches))
  optimizer, schedule = state_lib.make_optimizer(optim_cfg, peak_lr)
  value_params = None
  if algo.use_critic:
    from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
    value_params = models.init_value_head(model_config, jax.random.PRNGKey(cfg.seed + 17))
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints)
  timings = {}

  # Resume or warm-start.
  template = state_lib.create_train_state(init_params, optimizer, jax.random.PRNGKey(cfg.seed),
                                          value_params=value_params, keep_reference=algo.kl_coef > 0)
  state, meta = ckpt.restore_latest(template)
  if state is not None:
    say(f"[resume] restored step {int(state.step)} from {ckpt.directory}")
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
    del template
    ckpt.save(state, config_dict, extra={"timings": timings})

  eval_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
  eval_gen = make_generate_fn(model_config, cfg.rollout, eos_ids, pad_id, num_samples=cfg.eval.num_samples,
                              temperature=cfg.eval.temperature, top_p=cfg.eval.top_p, max_new_tokens=eval_new)

  def run_eval(params, tag):
    path = workdir / f"eval_{tag}.json"
    if path.exists():
      return json.loads(path.read_text())
    res = evaluate(eval_gen, grade_fn, decode, params, data["eval"], num_samples=cfg.eval.num_samples,
                   batch_problems=min(cfg.eval.batch_problems, len(data["eval"])),
                   max_prompt_len=cfg.rollout.max_prompt_len, pad_id=pad_id,
                   key=jax.random.PRNGKey(cfg.seed + 99))
    checkpoint_lib.write_json(path, res)
    timings[f"eval_{tag}"] = res["seconds"]
    say(f"[eval:{tag}] pass@1 {res['pass@1']:.3f}  pass@{cfg.eval.num_samples} "
        f"{res[f'pass@{cfg.eval.num_samples}']:.3f}  never {res['never_solved']:.2f}  always "
        f"{res['always_solved']:.2f}  ({res['seconds']:.1f}s)")
    return res

  before = run_eval(state.params["policy"], "before")

  # RL.
  stream_rl = rollout_lib.PromptStream(data["rl"], seed=cfg.seed)
  fns = rollout_lib.RolloutFns(generate=make_generate_fn(model_config, cfg.rollout, eos_ids, pad_id),
                               score=update_lib.make_scorer(model_config, cfg.update), decode=decode,
                               grade=grade_fn)
  train_step = update_lib.make_train_step(model_config, algo, cfg.update, optimizer, schedule)
  grad_norms = update_lib.make_group_grad_norms(model_config, algo, cfg.update) \
      if cfg.group_grad_norm_every > 0 else None
  t_rl = time.perf_counter()
  rl_time = timings.get("rl", 0.0)
  phase_time = {k: timings.get(k, 0.0) for k in ("rl_sampling", "rl_grading", "rl_update", "rl_scoring")}
  say(f"[rl] {algo.name}: {cfg.rl_steps} steps × {cfg.rollout.groups_per_batch} prompts × G={cfg.rollout.group_size}, "
      f"lr {peak_lr}, {cfg.update.ppo_epochs} epoch(s) × {cfg.update.num_minibatches} minibatch(es)")
  while int(state.step) < cfg.rl_steps:
    if cfg.time_budget_s is not None and time.perf_counter() - t_start > cfg.time_budget_s:
      say(f"[rl] time budget {cfg.time_budget_s}s reached at step {int(state.step)}; stopping RL early")
      break
    t0 = time.perf_counter()
    step = int(state.step)
    sample_key, next_rng = jax.random.split(jnp.asarray(state.rng, jnp.uint32))
    batch, m, position = rollout_lib.collect(
        fns, algo, cfg.rollout, stream_rl, int(state.data_position), sample_key,
        policy_params=state.params["policy"], ref_params=state.ref_params,
        value_params=state.params.get("value"), pad_id=pad_id, eos_ids=eos_ids, format_token_ids=format_ids)
    jbatch = {k: jnp.asarray(v) for k, v in batch.items()}
    if grad_norms is not None and step % cfg.group_grad_norm_every == 0:
      m.update(jax.device_get(grad_norms(state.params, jbatch)))
    state = state.replace(rng=next_rng, data_position=jnp.asarray(position, jnp.int32))
    t1 = time.perf_counter()
    state, um = train_step(state, jbatch)
    um = jax.device_get(um)
    t_update = time.perf_counter() - t1
    m.update(um)
    m["time/update"] = t_update
    m["time/step"] = time.perf_counter() - t0
    m["tokens_per_sec/update"] = float(batch["attention_mask"].sum()) * cfg.update.ppo_epochs / max(t_update, 1e-9)
    m["data_position"] = position
    for k, src in (("rl_sampling", "time/sampling"), ("rl_grading", "time/grading"), ("rl_update", "time/update"),
                   ("rl_scoring", "time/scoring")):
      phase_time[k] += m.get(src, 0.0)
    writer.write(step + 1, m, phase="rl")
    if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.rl_steps:
      timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)
      ckpt.save(state, config_dict, extra={"timings": timings})
  timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)

  after = run_eval(state.params["policy"], "after")
  if cfg.export_hf:
    checkpoint_lib.export_hf(workdir / "hf_export", model_config, state.params["policy"], tokenizer)
  summary = {
      "algorithm": algo.describe(), "rl_steps_done": int(state.step), "params_millions": n_params / 1e6,
      "before": {k: v for k, v in before.items() if k != "per_problem_correct"},
      "after": {k: v for k, v in after.items() if k != "per_problem_correct"},
      "gain": {k: after[k] - before[k] for k in before if k.startswith("pass@") or k.endswith("_solved")},
      "timings_s": {**timings, "total_this_invocation": time.perf_counter() - t_start},
  }
  checkpoint_lib.write_json(workdir / "summary.json", summary)
  say(f"[done] pass@1 {before['pass@1']:.3f} → {after['pass@1']:.3f}; "
      f"pass@{cfg.eval.num_samples} {before[f'pass@{cfg.eval.num_samples}']:.3f} → "
      f"{after[f'pass@{cfg.eval.num_samples}']:.3f}; never-solved {before['never_solved']:.2f} → "
      f"{after['never_solved']:.2f}; times " + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))
  writer.close()
  ckpt.close()
  if pool is not None:
    pool.close()
  return summary


def _inprocess_grade_fn():
  """Grades in this process with ``grading.check`` (cheap stages; symbolic stage via the default pool)."""
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top

  def grade(responses, golds):
    res = [grading.check(g, r, require_boxed=True) for g, r in zip(golds, responses)]
    return (np.array([r.equivalent for r in res], bool),
            np.array([r.pred_answer is not None and r.boxed for r in res], bool))

  return grade
