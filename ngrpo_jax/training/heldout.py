"""Held-out evaluation glue of a training run: one code path with ``experiments/evaluate.py``."""
import json
import pathlib
import shutil
import tempfile
from typing import Optional, Sequence

import jax
import numpy as np

from ngrpo_jax import evaluation
from ngrpo_jax import metrics
from ngrpo_jax import sharding
from ngrpo_jax.data import prompts as prompts_lib
from ngrpo_jax.training import config as config_lib
from ngrpo_jax.training import state as state_lib

ExperimentConfig, TaskSpec = config_lib.ExperimentConfig, config_lib.TaskSpec


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




def paired_gain(before: dict, after: dict, num_resamples: int = 10000) -> dict:
  """after − before of pass@1 and pass@N (percentage points) on the same held-out problems, each with a 95%
  paired-bootstrap interval over problems and a two-sided p-value (``metrics.paired_bootstrap``); {} when
  the two evaluations do not hold per-problem counts of the same problems and sample count."""
  ca, cb = before.get("per_problem_correct"), after.get("per_problem_correct")
  n = before.get("num_samples")
  if ca is None or cb is None or len(ca) != len(cb) or not ca or n != after.get("num_samples"):
    return {}
  out = {}
  for k in sorted({1, int(n)}):
    a, b = (100.0 * metrics.pass_at_k(n, np.asarray(c), k) for c in (ca, cb))
    test = metrics.paired_bootstrap(a, b, key_or_seed=0, num_resamples=num_resamples)
    out[f"pass@{k}"] = {"difference": test.difference, "ci95": [test.lower, test.upper], "p_value": test.p_value}
  return out


def evaluate_before(r, state) -> dict:
  """The "before RL" evaluation ``eval_before.json``: of the step-0 (warm-started) policy, done once.

  A resumed run (``state`` past step 0) re-uses it; should it be missing (or hold another policy's
  evaluation), the step-0 policy is restored from the checkpoint the trainer keeps for it and evaluated.

  Raises:
    ValueError: neither a step-0 evaluation nor the step-0 checkpoint exists (names both).
  """
  path = r.workdir / "eval_before.json"
  if path.exists():
    res = json.loads(path.read_text())
    if (res.get("settings") or {}).get("policy_step") == 0 and "pass_at_k" in res:
      return res
  if int(state.step) != 0:
    if 0 not in r.ckpt.all_steps():
      raise ValueError(f"the run in {r.workdir} is at RL step {int(state.step)} but has no evaluation of its "
                       f"step-0 policy ({path} is missing or of another step) and no step-0 checkpoint in "
                       f"{r.ckpt.directory} to make one: use a new --workdir to measure the before-RL baseline")
    r.say(f"[eval:before] {path.name} is missing: evaluating the step-0 policy of {r.ckpt.directory}/0")
    state, _ = r.ckpt.restore(0, state)
  return evaluate_policy(r, state, "before")


def evaluate_policy(r, state, tag: str) -> dict:
  """The held-out evaluation ``eval_<tag>.json`` of the run ``r`` (``loop.Run``) at ``state``'s policy.

  Re-uses an existing evaluation of the same policy step; an evaluation of an older policy (a run that was
  extended) is redone. Every process samples (collectives); only process 0 writes.
  """
  main, step = sharding.is_main_process(), int(state.step)
  path, out_dir = r.workdir / f"eval_{tag}.json", r.workdir / f"eval_{tag}"
  if path.exists():
    res = json.loads(path.read_text())
    if (res.get("settings") or {}).get("policy_step") == step and "pass_at_k" in res:
      return res
  plan = out_dir / evaluation.PLAN_FILE
  if main and plan.exists() and (json.loads(plan.read_text()).get("settings") or {}).get("policy_step") != step:
    shutil.rmtree(out_dir)
  if not main:
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"eval_{tag}_p{jax.process_index()}_"))
  result = evaluate_heldout(state_lib.policy_params(state), r.model_config, r.tokenizer, r.data["eval"], r.cfg, out_dir,
                            grade_fn=r.grader, policy_step=step, summary_path=path if main else None,
                            metadata={"label": f"{r.cfg.name} ({tag} RL)", "tag": tag},
                            log=lambda msg: r.say(f"[eval:{tag}] {msg}"))
  if not main:
    shutil.rmtree(out_dir, ignore_errors=True)
  res = result.summary
  r.timings[f"eval_{tag}"] = res["seconds"]
  r.say(f"[eval:{tag}] {eval_headline(res)}  ({res['seconds']:.1f}s)")
  return res
