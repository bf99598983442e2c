"""The experiment: (tiny model + synthetic task | HF checkpoint + JSONL problems) → supervised warm-start →
RL (any algorithm) → held-out evaluation before vs after, with metrics, checkpoints and resume.

Everything a run does is a function of its :class:`~ngrpo_jax.training.config.ExperimentConfig` and its
workdir:

  <workdir>/config.json           the resolved config (``config.to_dict``; the algorithm by names)
  <workdir>/metrics.jsonl, tb/    per-step metrics (console line too)
  <workdir>/groups.jsonl          per RL step, every drawn group: its problem (index in the RL pool) and its
                                  number of correct responses (``{"step", "problems", "correct"}``)
  <workdir>/checkpoints/          orbax train states (keep-last-N, and step 0: the warm-started policy); a rerun
                                  resumes from the newest intact one
  <workdir>/eval_before.json      held-out evaluation of the warm-started (step-0) policy, made once and kept by
                                  resumed runs (``evaluation.evaluate``'s summary: pass@k for every k ≤ N, AUC,
                                  bootstrap CIs, per-problem counts)
  <workdir>/eval_before/          its samples.jsonl, counts.jsonl and plan.json (resumable)
  <workdir>/eval_after.json, eval_after/   the same after RL
  <workdir>/summary.json          before / after, gains (``paired_gain``: paired-bootstrap CIs and p-values), the
                                  time per phase and ``rl_breakdown`` (this invocation's RL step time by phase
                                  and XLA compilations in / after warm-up)
  <workdir>/hf_export/            the final policy as a Hugging Face checkpoint (+ tokenizer; with LoRA the merged
                                  weights)
  <workdir>/peft_adapter/         with LoRA (``model.lora_rank`` > 0): the trained adapters in peft's format
                                  (``adapter_config.json`` + ``adapter_model.safetensors``) for the base model

Sharding (``ExperimentConfig.mesh``, e.g. ``"data=2,fsdp=2,tensor=2"``): the train state is placed with
``sharding.train_state_shardings``, the update jits with explicit in/out shardings and donation, every batch
goes through ``sharding.shard_batch``. Multi-host (after ``sharding.initialize_distributed``): every process
runs the same deterministic loop, orbax saves from every process, only process 0 writes logs, metrics,
evaluations, the summary and the HF export.
"""
import collections
import dataclasses
import functools
import json
import pathlib
import sys
import time
from typing import Any, Optional

import jax
import numpy as np

from ngrpo_jax import grading
from ngrpo_jax import models
from ngrpo_jax import sharding
from ngrpo_jax.training import breakdown as breakdown_lib
from ngrpo_jax.training import builders
from ngrpo_jax.training import checkpoint as checkpoint_lib
from ngrpo_jax.training import compile_counter as compile_counter_lib
from ngrpo_jax.training import config as config_lib
from ngrpo_jax.training import heldout
from ngrpo_jax.training import logging as logging_lib
from ngrpo_jax.training import preemption as preemption_lib
from ngrpo_jax.training import sft as sft_lib
from ngrpo_jax.training import state as state_lib
from ngrpo_jax.training import step as step_lib
from ngrpo_jax.training import update as update_lib

PHASES = ("sampling", "grading", "grading_wait", "grading_overlap", "scoring", "update", "diagnostics")


@dataclasses.dataclass
class Run:
  """What one invocation of :func:`run` sets up (shared by its sections)."""
  cfg: config_lib.ExperimentConfig
  workdir: pathlib.Path
  say: Any
  writer: Any
  ckpt: checkpoint_lib.Checkpointer
  config_dict: dict
  mesh: Any
  tokenizer: Any
  model_config: Any
  init_params: Any
  data: dict
  grader: Any
  timings: dict = dataclasses.field(default_factory=dict)
  pool: Optional[grading.WorkerPool] = None
  t_start: float = dataclasses.field(default_factory=time.perf_counter)


def run(cfg: config_lib.ExperimentConfig, workdir, *, log_stream=None, grade_fn=None,
        handle_signals: bool = True) -> dict:
  """Runs (or resumes) the experiment in ``workdir`` and returns the summary dict.

  Preemption (``handle_signals``, ``training.preemption``): a SIGTERM / SIGINT during an RL step lets the step
  finish, checkpoints it and raises ``preemption.Preempted``; during the warm-start or an evaluation (both
  redone / resumed by a rerun) it raises at once. A rerun resumes with nothing lost: ``metrics.jsonl`` keeps
  only the rows of the restored state (one row per RL step), and "before RL" stays the step-0 evaluation.

  Args:
    cfg: the experiment config.
    workdir: output directory; an existing checkpoint there is resumed (the model and batch shapes must
      match, see ``config.check_resume_compatible``).
    log_stream: console stream (default stdout).
    grade_fn: optional grader ``(golds, responses) -> results`` (``grading.Grader``'s signature; default:
      the SymPy checker in ``cfg.grading_workers`` worker processes).
    handle_signals: install the SIGTERM / SIGINT handlers (main thread only).

  Raises:
    preemption.Preempted: stopped by a signal (its ``message()`` is one line; ``exit_code`` = 128 + signal).
    checkpoint.CheckpointError: no checkpoint in ``workdir`` can be read.
  """
  r = _setup(cfg, pathlib.Path(workdir), log_stream or sys.stdout, grade_fn)
  with preemption_lib.Guard(enabled=handle_signals) as guard:
    try:
      guard.where = "during the set-up or warm-start"
      state, optimizer, schedule, state_sh = _initial_state(r)
      guard.where = "during the before-RL evaluation (it resumes per batch)"
      before = heldout.evaluate_before(r, state) if cfg.eval.before else None
      state, rl_breakdown = _train(r, state, optimizer, schedule, state_sh, guard)
      guard.where = "during the after-RL evaluation (it resumes per batch)"
      after = heldout.evaluate_policy(r, state, "after")
      guard.where = "during the export"
      return _finish(r, state, before, after, rl_breakdown)
    finally:
      _close(r)


# ----------------------------------------------------------------------------------------------------------
# Set-up: config, outputs, model, data, grader.


def _setup(cfg, workdir: pathlib.Path, stream, grade_fn) -> Run:
  main = sharding.is_main_process()
  workdir.mkdir(parents=True, exist_ok=True)
  algo = config_lib.validate_config(cfg)
  config_dict = {**config_lib.to_dict(cfg), "train_state": config_lib.state_structure(algo)}
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=cfg.keep_checkpoints, keep_steps=(0,))
  saved = ckpt.latest_metadata()
  if saved is not None:
    config_lib.check_resume_compatible(saved.get("config") or {}, config_dict,
                                       where=f"{ckpt.directory} (step {saved.get('step')})")
  if main:
    checkpoint_lib.write_json(workdir / "config.json", config_dict)
  writer = logging_lib.MetricsWriter(workdir, tensorboard=cfg.tensorboard, stream=stream) if main else _NullWriter()

  def say(msg):
    if main:
      stream.write(msg + "\n")
      stream.flush()

  mesh = sharding.make_mesh(cfg.mesh) if cfg.mesh is not None else None
  terms = ", ".join(f"{t.coef:g}·{t.fn or t.name}{dict(t.kwargs) or ''}" for t in algo.objective)
  say(f"[setup] experiment {cfg.name!r}: algorithm {algo.name} (advantage={algo.advantage}"
      f"{dict(algo.advantage_kwargs)}, filter={algo.group_filter}, objective={terms}, "
      f"aggregation={algo.aggregation}) → {workdir}" + (
          f"; mesh {sharding.mesh_sizes(mesh)} over {jax.device_count()} devices, {jax.process_count()} "
          f"process(es)" if mesh is not None else ""))
  tokenizer = builders.build_tokenizer(cfg.model, cfg.task)
  model_config, init_params = builders.build_model(cfg.model, tokenizer, cfg.seed)
  if mesh is not None:
    sharding.validate_mesh_for_config(model_config, mesh)
  data = builders.build_data(cfg.task, tokenizer, cfg.seed)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(init_params))
  lora_config = cfg.model.lora_config()
  if lora_config is not None:
    n_lora = models.lora.num_lora_params(jax.eval_shape(
        lambda: models.lora.init_lora_params(init_params, lora_config, jax.random.PRNGKey(0))))
    say(f"[setup] LoRA r={lora_config.rank}, alpha={lora_config.alpha:g}, dropout={lora_config.dropout:g} on "
        f"{', '.join(lora_config.targets)}: {n_lora / 1e6:.3f}M trained params; the base is frozen")
  say(f"[setup] model: {n_params / 1e6:.2f}M params, vocab {model_config.vocab_size}; data: "
      f"{len(data['sft'])} warm-start examples, {len(data['rl'])} RL prompts, {len(data['eval'])} held-out")
  pool = grading.WorkerPool(cfg.grading_workers) if grade_fn is None and cfg.grading_workers > 0 else None
  if grade_fn is None:
    grade_fn = grading.Grader(require_boxed=True, pool=pool, backend=cfg.grading_backend) if pool is not None \
        else functools.partial(_inprocess_grader, grading.get_backend(cfg.grading_backend))
  return Run(cfg, workdir, say, writer, ckpt, config_dict, mesh, tokenizer, model_config, init_params, data,
             grade_fn, pool=pool)


def _inprocess_grader(check, golds, responses):
  """Grades in this process (``grading_workers=0``) with a backend's ``check``."""
  return [check(g, r, require_boxed=True) for g, r in zip(golds, responses)]


# ----------------------------------------------------------------------------------------------------------
# The train state: resumed from the latest checkpoint, or warm-started and saved as step 0.


def _initial_state(r: Run):
  cfg, algo = r.cfg, r.cfg.algorithm
  optimizer, schedule = state_lib.make_optimizer(builders.optimizer_config(cfg), builders.peak_learning_rate(cfg))
  value_params = models.init_value_head(r.model_config, jax.random.PRNGKey(cfg.seed + 17)) if algo.uses_critic \
      else None
  lora_config = cfg.model.lora_config()

  def make(policy):
    # LoRA: fresh adapters (B = 0) on the frozen warm-started policy; only they are trained.
    adapters = None if lora_config is None else models.lora.init_lora_params(
        policy, lora_config, jax.random.PRNGKey(cfg.seed + 23))
    return state_lib.create_train_state(policy, optimizer, jax.random.PRNGKey(cfg.seed), value_params=value_params,
                                        keep_reference=algo.uses_reference, controllers=algo.initial_controllers(),
                                        lora_params=adapters, lora_config=lora_config)

  template = make(r.init_params)
  state_sh = None if r.mesh is None else sharding.train_state_shardings(r.model_config, template, r.mesh)
  state, meta = r.ckpt.restore_latest(template, shardings=state_sh, log=r.say)
  del template
  # metrics.jsonl holds exactly the rows of the state the run continues from: RL rows up to its step (rows of
  # steps replayed after an interruption are dropped), nothing when the warm-start is redone.
  r.writer.keep_only(None if state is None else int(state.step))
  if state is not None:
    done = int(state.step)
    if done >= cfg.rl_steps and (r.workdir / "eval_after.json").exists():
      r.say(f"[resume] {r.workdir} has already finished ({done}/{cfg.rl_steps} RL steps, checkpoint "
            f"{r.ckpt.directory}/{done}); re-using its evaluations (raise --config.rl_steps to train further)")
    else:
      r.say(f"[resume] restored step {done} from {r.ckpt.directory}; continuing to step {cfg.rl_steps}")
    r.timings.update(meta.get("extra", {}).get("timings", {}))
    return state, optimizer, schedule, state_sh
  policy = r.init_params
  if r.data["sft"] and cfg.sft.steps > 0:
    pad_id = builders.token_ids(r.tokenizer)["pad_id"]
    examples = sft_lib.pack_examples([e["prompt_ids"] for e in r.data["sft"]],
                                     [e["completion_ids"] for e in r.data["sft"]], cfg.sft.max_len, pad_id)
    r.say(f"[sft] warm-start: {cfg.sft.steps} steps × {cfg.sft.batch_size} sequences, lr {cfg.sft.learning_rate}")
    policy, s = sft_lib.train_sft(policy, r.model_config, examples, cfg.sft, seed=cfg.seed,
                                  log_fn=lambda i, m: r.writer.write(i, m, phase="sft"),
                                  log_every=max(cfg.sft.steps // 5, 1))
    r.timings["sft"] = s["seconds"]
    r.say(f"[sft] loss {s['loss_first']:.3f} → {s['loss_last']:.3f} in {s['seconds']:.1f}s "
          f"({s['tokens_per_sec']:.0f} tokens/s)")
  state, _ = place_train_state(make(policy), r.model_config, r.mesh)
  r.ckpt.save(state, r.config_dict, extra={"timings": r.timings})
  return state, optimizer, schedule, state_sh


# ----------------------------------------------------------------------------------------------------------
# RL: one `step.rl_step` per iteration, with timing, compile counts, metrics and checkpoints around it.


def _train(r: Run, state, optimizer, schedule, state_sh, guard: preemption_lib.Guard):
  cfg, algo = r.cfg, r.cfg.algorithm
  train_step = update_lib.make_train_step(r.model_config, algo, cfg.learner, optimizer, schedule, mesh=r.mesh,
                                          state_shardings=state_sh)
  parts = builders.make_step_parts(cfg, r.model_config, r.tokenizer, r.data, r.grader, train_step=train_step,
                                   place=lambda b: place_batch(b, r.mesh), diagnose=_diagnose(r, algo))
  groups_log = _GroupsLog(r.workdir / "groups.jsonl") if sharding.is_main_process() else None
  parts.record = groups_log
  t_rl, rl_time = time.perf_counter(), r.timings.get("rl", 0.0)
  phase_time = {f"rl_{k}": r.timings.get(f"rl_{k}", 0.0) for k in PHASES}
  steps_breakdown = breakdown_lib.BreakdownAccumulator(cfg.compile_warmup_steps)
  if int(state.step) < cfg.rl_steps:
    r.say(f"[rl] {algo.name}: {cfg.rl_steps} steps × {cfg.rollout.groups_per_batch} prompts × "
          f"G={cfg.rollout.group_size}, lr {builders.peak_learning_rate(cfg)}, {cfg.learner.ppo_epochs} epoch(s) × "
          f"{cfg.learner.num_minibatches} minibatch(es)")
  # Draws (sampler calls) of the last steps: the next step samples min(recent) draws before the previous
  # draw's grades are in (speed only, never results); a wasted draw costs a sampler call.
  recent_draws = collections.deque(maxlen=4)
  # A SIGTERM / SIGINT during RL lets the step in progress finish; it is then checkpointed and the run stops.
  try:
    with compile_counter_lib.CompileCounter() as compiles, guard.deferred():
      while int(state.step) < cfg.rl_steps:
        if cfg.time_budget_s is not None and time.perf_counter() - r.t_start > cfg.time_budget_s:
          r.say(f"[rl] time budget {cfg.time_budget_s}s reached at step {int(state.step)}; stopping RL early")
          break
        c0, t0, step = compiles.count, time.perf_counter(), int(state.step)
        if groups_log is not None:
          groups_log.step = step + 1
        state, m = step_lib.rl_step(state, parts, lookahead=min(recent_draws, default=1))
        recent_draws.append(int(m["sampling/draws"]))
        m.update({"time/step": time.perf_counter() - t0, "compiles/step": compiles.count - c0,
                  "compiles/seconds": sum(sec for _, sec in compiles.events[c0:])})
        m.update(steps_breakdown.add(m, m["compiles/step"], m["compiles/seconds"], compiles.names(c0)))
        for k in PHASES:
          phase_time[f"rl_{k}"] += m.get(f"time/{k}", 0.0)
        r.writer.write(step + 1, m, phase="rl")
        stop = guard.stop_requested()
        if stop or (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.rl_steps:
          r.timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)
          r.ckpt.save(state, r.config_dict, extra={"timings": r.timings})
        if stop:
          raise preemption_lib.Preempted(guard.signum, f"after RL step {step + 1} of {cfg.rl_steps}",
                                         saved=f"{r.ckpt.directory}/{step + 1}")
  finally:
    if groups_log is not None:
      groups_log.close()
  r.timings.update(phase_time, rl=rl_time + time.perf_counter() - t_rl)
  rl_breakdown = steps_breakdown.summary()
  if steps_breakdown.steps:
    r.say(breakdown_lib.format_summary(rl_breakdown))
  return state, rl_breakdown


class _GroupsLog:
  """``StepParts.record`` writing ``groups.jsonl`` (a resumed run appends; readers keep a step's last line)."""

  def __init__(self, path):
    self.step = 0
    self._file = open(path, "a", encoding="utf-8")

  def __call__(self, problems, correct):
    self._file.write(json.dumps({"step": self.step, "problems": [int(i) for i in problems],
                                 "correct": [int(c) for c in correct]}) + "\n")
    self._file.flush()

  def close(self):
    self._file.close()


def _diagnose(r: Run, algo):
  """Gradient norms by group kind every ``group_grad_norm_every`` steps (``update.make_group_grad_norms``)."""
  every = r.cfg.group_grad_norm_every
  if every <= 0:
    return None
  norms = update_lib.make_group_grad_norms(r.model_config, algo, r.cfg.learner,
                                          lora_config=r.cfg.model.lora_config())

  def diagnose(state, inputs):
    if int(state.step) % every:
      return {}
    t0 = time.perf_counter()
    frozen = state.ref_params if state.lora_config is not None else None
    return {**jax.device_get(norms(state.params, inputs, frozen)), "time/diagnostics": time.perf_counter() - t0}

  return diagnose


def place_train_state(state: state_lib.TrainState, model_config, mesh):
  """(state on the mesh, its shardings) — ``sharding.train_state_shardings``; (state, None) without a mesh."""
  if mesh is None:
    return state, None
  shardings = sharding.train_state_shardings(model_config, state, mesh)
  return sharding.device_put_global(state, shardings), shardings


def place_batch(batch: dict, mesh) -> dict:
  """A batch on the devices: rows split over data × fsdp (``sharding.shard_batch``) with a mesh."""
  if mesh is None:
    return {k: jax.numpy.asarray(v) for k, v in batch.items()}
  return sharding.shard_batch({k: np.asarray(v) for k, v in batch.items()}, mesh)


# ----------------------------------------------------------------------------------------------------------
# After RL: export and summary.


def _finish(r: Run, state, before: dict, after: dict, rl_breakdown: dict) -> dict:
  main = sharding.is_main_process()
  if r.cfg.export_hf:
    policy = sharding.gather_to_host(state_lib.policy_params(state))    # a collective on several processes
    adapters = None if state.lora_config is None else sharding.gather_to_host(state.params["lora"])
    if main:
      checkpoint_lib.export_hf(r.workdir / "hf_export", r.model_config, policy, r.tokenizer)
      if adapters is not None:      # LoRA: the adapters alone, in peft's format, for the base model
        models.lora.save_peft_adapter(r.workdir / "peft_adapter", adapters, state.lora_config,
                                      base_model_name_or_path=r.cfg.model.init_from)
  drop = ("per_problem_correct", "settings", "auc_definition", "label", "tag")
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(r.init_params))
  summary = {
      "algorithm": r.cfg.algorithm.to_dict(), "rl_steps_done": int(state.step), "params_millions": n_params / 1e6,
      "mesh": None if r.mesh is None else sharding.mesh_sizes(r.mesh),
      "before": None if before is None else {k: v for k, v in before.items() if k not in drop},
      "after": {k: v for k, v in after.items() if k not in drop},
      "gain": None if before is None else heldout.summary_gain(before, after),
      "paired_gain": None if before is None else heldout.paired_gain(before, after),   # 95% paired bootstrap
      "timings_s": {**r.timings, "total_this_invocation": time.perf_counter() - r.t_start},
      "rl_breakdown": rl_breakdown,
  }
  if main:
    checkpoint_lib.write_json(r.workdir / "summary.json", summary)
  n = after["max_k"]
  b = before or {"pass_at_k": {}}
  r.say(f"[done] pass@1 {_arrow(b['pass_at_k'].get('1'), after['pass_at_k']['1'])}; pass@{n} "
        f"{_arrow(b['pass_at_k'].get(str(n)), after['pass_at_k'][str(n)])}; never-solved "
        f"{_arrow(b.get('never_solved_share'), after['never_solved_share'])}; times "
        + ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items()))
  return summary


def _close(r: Run) -> None:
  """Closes the run's metrics writer, checkpointer and grading workers (also when it stops on an error)."""
  r.writer.close()
  r.ckpt.close()
  if r.pool is not None:
    r.pool.close()


def _arrow(before, after) -> str:
  return f"{after:.1f}%" if before is None else f"{before:.1f}% → {after:.1f}%"


class _NullWriter:
  """Metrics writer of processes other than 0 (they write nothing)."""

  def write(self, *args, **kwargs):
    del args, kwargs

  def keep_only(self, rl_step):
    del rl_step

  def close(self):
    pass
