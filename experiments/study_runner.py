"""The study runner's machinery (``experiments.study`` is its command line): the study spec (:class:`Study`,
:class:`Arm`, :class:`Tuning`), the plan of runs, the scheduler of child processes and the child's run.

A study file (``experiments/studies/*.py``) imports this module and defines ``get_study(arg) -> Study``.
"""
import dataclasses
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Optional, Sequence

# Metrics of metrics.jsonl kept per step in result.json (training curves of the report).
CURVE_KEYS = ("accuracy", "reward_mean", "policy_entropy", "groups/all_correct_frac", "groups/all_wrong_frac",
              "groups/mixed_frac", "pg/clip_frac", "pg/clip_frac_pos", "pg/clip_frac_neg", "pg/approx_kl_k3",
              "parseable_frac", "response_len_mean", "sampling/draws", "time/step")


TUNING_CRITERIA = {"auc": lambda ev: float(ev["auc"]), "pass@1": lambda ev: float(ev["pass_at_k"]["1"])}


@dataclasses.dataclass(frozen=True)
class Arm:
  """One row of the study.

  Attributes:
    name: the row label (also the run directory name).
    algorithm: an ``algorithms.Algorithm``.
    learning_rates: candidates tuned on the validation split (``Study.tuning``); empty: ``lr_from`` or the
      algorithm's own ``learning_rate``.
    lr_from: take the learning rate tuned for that arm (ablations share their parent's, as in the paper).
    group: the table the arm belongs to (``"table1"``, ``"zhu"``, ``"table2"``, ``"table3"``).
    seeds: this arm's RL seeds when they differ from the study's (e.g. more seeds for the headline rows);
      None: ``Study.seeds``.
  """
  name: str
  algorithm: object
  learning_rates: tuple = ()
  lr_from: Optional[str] = None
  group: str = "table1"
  seeds: Optional[tuple] = None


@dataclasses.dataclass(frozen=True)
class Tuning:
  """The learning-rate search: every candidate of an arm trained ``rl_steps`` with seed ``seed`` and evaluated
  on ``num_problems`` validation problems × ``num_samples``; the highest ``criterion`` wins (ties: the smaller
  rate). ``criterion``: ``"auc"`` (the Pass@k AUC) or ``"pass@1"``."""
  rl_steps: int
  num_problems: int
  num_samples: int
  seed: int = 100
  criterion: str = "auc"

  def __post_init__(self):
    if self.criterion not in TUNING_CRITERIA:
      raise ValueError(f"Tuning.criterion must be one of {sorted(TUNING_CRITERIA)}, got {self.criterion!r}")

  def score(self, result: dict) -> float:
    """The criterion's value of a tuning run's ``result.json``."""
    return TUNING_CRITERIA[self.criterion](result["eval"])


@dataclasses.dataclass(frozen=True)
class Study:
  """A study: see the module docstring.

  Attributes:
    name, description: shown in the report (the description says what was reduced, if anything).
    warm_start: the supervised warm-start run (``rl_steps=0``): its evaluation is the "base" row.
    base: the recipe every arm shares; the runner sets ``algorithm``, ``seed``, the learning rate,
      ``model.init_from`` (the warm-start's export) and ``sft.steps=0``.
    arms: the rows.  seeds: RL seeds of every arm (prompt order and sampling; same test set).
    tuning: the learning-rate search (None: no tuning, every arm's own rate).
    pool_samples: samples per RL-pool problem for the per-problem solve rates after RL (claim C8).
  """
  name: str
  description: str
  warm_start: object
  base: object
  arms: tuple
  seeds: tuple
  tuning: Optional[Tuning] = None
  pool_samples: int = 32

  def arm(self, name: str) -> Arm:
    for a in self.arms:
      if a.name == name:
        return a
    raise KeyError(f"study {self.name!r} has no arm {name!r}; arms: {[a.name for a in self.arms]}")

  def seeds_of(self, arm: Arm) -> tuple:
    """The RL seeds of ``arm``: its own ``seeds`` if set, else the study's."""
    return tuple(arm.seeds) if arm.seeds is not None else tuple(self.seeds)

  @property
  def num_runs(self) -> int:
    """Main runs of the study (arms × their seeds; tuning and the warm-start not counted)."""
    return sum(len(self.seeds_of(a)) for a in self.arms)


def load_study(spec: str) -> Study:
  """``path/to/study.py[:arg]`` → ``get_study(arg)``."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--study={spec!r}: {path!r} is not a file")
  module_spec = importlib.util.spec_from_file_location(f"_study_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_study"):
    raise ValueError(f"--study={spec!r}: {path} defines no get_study(arg)")
  study = module.get_study(arg or None)
  names = [a.name for a in study.arms]
  if len(set(names)) != len(names):
    raise ValueError(f"study {study.name!r}: arm names must be unique, got {names}")
  for a in study.arms:
    if a.lr_from is not None:
      study.arm(a.lr_from)
  return study


# ----------------------------------------------------------------------------------------------------------
# The plan: which runs, in which directories, with which configs, depending on what.


@dataclasses.dataclass
class PlannedRun:
  kind: str                 # "warm_start" | "tune" | "main"
  directory: pathlib.Path
  arm: Optional[str] = None
  seed: Optional[int] = None
  learning_rate: Optional[float] = None
  config: object = None     # the ExperimentConfig (None until its dependencies are done)
  pool_samples: int = 0     # samples per RL-pool problem after training (0: none)

  @property
  def done(self) -> bool:
    return (self.directory / "result.json").exists()

  @property
  def label(self) -> str:
    if self.kind == "warm_start":
      return "warm-start"
    return f"{self.arm} " + (f"lr {self.learning_rate:g} (tuning)" if self.kind == "tune" else f"seed {self.seed}")


def warm_start_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / "warm_start"


def arm_config(study: Study, workdir, arm: Arm, *, seed: int, learning_rate: float, tuning: bool):
  """The ExperimentConfig of one run of ``arm``."""
  from ngrpo_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  base = study.base
  algo = dataclasses.replace(arm.algorithm, learning_rate=float(learning_rate))
  cfg = dataclasses.replace(
      base, name=f"{study.name}/{arm.name}", algorithm=algo, seed=int(seed),
      model=dataclasses.replace(base.model, init_from=str(warm_start_dir(workdir).resolve() / "hf_export")),
      sft=dataclasses.replace(base.sft, steps=0),
      optim=dataclasses.replace(base.optim, learning_rate=None))
  if tuning:
    t = study.tuning
    cfg = dataclasses.replace(
        cfg, name=f"{cfg.name}/tune", rl_steps=t.rl_steps,
        task=dataclasses.replace(cfg.task, eval_split="validation", num_eval_problems=t.num_problems),
        eval=dataclasses.replace(cfg.eval, num_samples=t.num_samples, before=False))
  config_lib.validate_config(cfg)
  return cfg


def tuned_learning_rate(study: Study, workdir, arm: Arm) -> Optional[float]:
  """The rate the arm trains with: its tuning's winner, its ``lr_from`` arm's, or its algorithm's own.
  None while the tuning runs it needs are not finished. (A winner at the edge of its grid is flagged by the
  report; the study file should then extend the grid past it before any test run.)"""
  if arm.lr_from is not None:
    return tuned_learning_rate(study, workdir, study.arm(arm.lr_from))
  if not arm.learning_rates or study.tuning is None:
    return float(arm.algorithm.learning_rate)
  scores = {}
  for lr in arm.learning_rates:
    result = read_result(tune_dir(workdir, arm.name, lr))
    if result is None:
      return None
    scores[lr] = study.tuning.score(result)
  return min(scores, key=lambda lr: (-round(scores[lr], 6), lr))


def tune_dir(workdir, arm_name: str, lr: float) -> pathlib.Path:
  return pathlib.Path(workdir) / "tune" / arm_name / f"lr{lr:g}"


def tune_base_dir(workdir) -> pathlib.Path:
  return pathlib.Path(workdir) / "tune" / "base"


def run_dir(workdir, arm_name: str, seed: int) -> pathlib.Path:
  return pathlib.Path(workdir) / "runs" / arm_name / f"s{seed}"


def plan(study: Study, workdir, only: Optional[Sequence[str]] = None) -> list:
  """Every run of the study (configs filled in where their dependencies are done)."""
  arms = [a for a in study.arms if only is None or a.name in only]
  if only is not None:
    needed = {a.lr_from for a in arms if a.lr_from} - {a.name for a in arms}
    arms = [study.arm(n) for n in sorted(needed)] + arms
  runs = [PlannedRun("warm_start", warm_start_dir(workdir), config=study.warm_start,
                     pool_samples=study.pool_samples)]
  warm_done = runs[0].done
  if study.tuning is not None and any(a.learning_rates for a in arms):
    # The warm-start itself on the validation split (the tuning's reference: what no RL scores there).
    runs.append(PlannedRun("tune", tune_base_dir(workdir), arm="base", seed=study.tuning.seed, learning_rate=0.0,
                           config=dataclasses.replace(
                               arm_config(study, workdir, arms[0], seed=study.tuning.seed,
                                          learning_rate=arms[0].algorithm.learning_rate, tuning=True),
                               rl_steps=0, name=f"{study.name}/base/tune") if warm_done else None))
  for arm in arms:
    if study.tuning is not None:
      for lr in arm.learning_rates:
        runs.append(PlannedRun("tune", tune_dir(workdir, arm.name, lr), arm=arm.name, seed=study.tuning.seed,
                               learning_rate=lr, config=arm_config(study, workdir, arm, seed=study.tuning.seed,
                                                                   learning_rate=lr, tuning=True)
                               if warm_done else None))
  for arm in arms:
    lr = tuned_learning_rate(study, workdir, arm) if warm_done else None
    for seed in study.seeds_of(arm):
      runs.append(PlannedRun("main", run_dir(workdir, arm.name, seed), arm=arm.name, seed=seed, learning_rate=lr,
                             config=None if lr is None else arm_config(study, workdir, arm, seed=seed,
                                                                       learning_rate=lr, tuning=False),
                             pool_samples=study.pool_samples))
  return runs


# ----------------------------------------------------------------------------------------------------------
# Running: a scheduler of child processes, and the child (one run + its post-evaluation).


def run_study(study: Study, workdir, *, parallel: int = 2, only=None, log=print) -> dict:
  """Runs every unfinished run of the study (re-planning as dependencies finish); returns wall times."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t0, running, failed = time.time(), {}, []
  while True:
    runs = [r for r in plan(study, workdir, only) if not r.done and str(r.directory) not in failed]
    ready = [r for r in runs if r.config is not None and str(r.directory) not in running]
    while ready and len(running) < parallel:
      r = ready.pop(0)
      running[str(r.directory)] = (r, _launch(r, parallel), time.time())
      log(f"[study] start {r.label} → {r.directory}")
    if not running:
      break
    time.sleep(2.0)
    for key, (r, proc, started) in list(running.items()):
      if proc.poll() is None:
        continue
      del running[key]
      if proc.returncode == 0 and r.done:
        log(f"[study] done  {r.label} in {time.time() - started:.0f}s")
      else:
        failed.append(key)
        log(f"[study] FAILED {r.label} (exit {proc.returncode}); see {r.directory / 'run.log'}")
  if failed:
    log(f"[study] {len(failed)} run(s) failed; the report covers the finished ones")
  return {"wall_seconds": time.time() - t0, "failed": failed}


def _launch(r: PlannedRun, parallel: int):
  from ngrpo_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  r.directory.mkdir(parents=True, exist_ok=True)
  spec = {"kind": r.kind, "arm": r.arm, "seed": r.seed, "learning_rate": r.learning_rate,
          "pool_samples": r.pool_samples, "config": config_lib.to_dict(r.config)}
  (r.directory / "run_spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
  env = dict(os.environ)
  if parallel > 1:   # one XLA thread per process when several share the cores
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1").strip()
  log_file = open(r.directory / "run.log", "a", encoding="utf-8")
  return subprocess.Popen([sys.executable, "-m", "experiments.study", f"--run_dir={r.directory}"],
                          stdout=log_file, stderr=subprocess.STDOUT, env=env,
                          cwd=str(pathlib.Path(__file__).resolve().parent.parent))


def run_one(directory) -> dict:
  """The child: ``loop.run`` of ``run_spec.json``'s config, then the post-evaluation → ``result.json``."""
  from ngrpo_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import loop  # pylint: disable=g-import-not-at-top

  directory = pathlib.Path(directory)
  spec = json.loads((directory / "run_spec.json").read_text())
  cfg = config_lib.from_dict(spec["config"])
  t0 = time.time()
  summary = loop.run(cfg, directory)
  pool = pool_solve_rates(cfg, directory, int(spec.get("pool_samples", 0)))
  result = {
      "kind": spec["kind"], "arm": spec["arm"], "seed": spec["seed"], "learning_rate": spec["learning_rate"],
      "algorithm": cfg.algorithm.to_dict(),
      "eval": _compact_eval(json.loads((directory / "eval_after.json").read_text())),
      "curves": training_curves(directory / "metrics.jsonl"),
      "first_seen": first_seen_counts(directory / "groups.jsonl"),
      "pool": pool,
      "rl_steps_done": summary["rl_steps_done"],
      "seconds": {"this_invocation": time.time() - t0, **{k: round(v, 1) for k, v in summary["timings_s"].items()}},
  }
  (directory / "result.json").write_text(json.dumps(result, sort_keys=True))
  return result


def _compact_eval(ev: dict) -> dict:
  keep = ("num_problems", "num_samples", "max_k", "pass_at_k", "auc", "auc_ks", "never_solved_share",
          "always_solved_share", "mean_accuracy", "per_problem_correct", "truncated_share", "answered_share",
          "mean_response_tokens")
  out = {k: ev[k] for k in keep if k in ev}
  out["pass_at_k"] = {k: round(float(v), 4) for k, v in out["pass_at_k"].items()}
  out["settings"] = {k: ev["settings"][k] for k in ("temperature", "top_p", "dataset", "policy_step")
                     if k in ev.get("settings", {})}
  return out


def training_curves(metrics_path) -> dict:
  """``{metric: [value per RL step]}`` of :data:`CURVE_KEYS` (a resumed step's last record wins)."""
  by_step = {}
  if pathlib.Path(metrics_path).exists():
    for line in pathlib.Path(metrics_path).read_text().splitlines():
      rec = json.loads(line)
      if rec.get("phase") == "rl":
        by_step[rec["step"]] = rec
  steps = sorted(by_step)
  return {"step": steps, **{k: [_round(by_step[s].get(k)) for s in steps] for k in CURVE_KEYS
                            if any(k in by_step[s] for s in steps)}}


def _round(v):
  return None if v is None else round(float(v), 5)


def first_seen_counts(groups_path) -> dict:
  """``{"problems": [...], "first": [...], "later": [[correct, total], ...]}`` from ``groups.jsonl``: for every
  RL-pool problem the run drew, its number of correct responses the first time it was drawn, and its correct /
  total responses over the later draws (a resumed step's last line wins)."""
  by_step = {}
  path = pathlib.Path(groups_path)
  if path.exists():
    for line in path.read_text().splitlines():
      rec = json.loads(line)
      by_step[rec["step"]] = rec
  first, later = {}, {}
  for step in sorted(by_step):
    rec = by_step[step]
    for p, c in zip(rec["problems"], rec["correct"]):
      if p not in first:
        first[p] = c
      else:
        later.setdefault(p, [0, 0])
        later[p][0] += c
        later[p][1] += 1
  problems = sorted(first)
  return {"problems": problems, "first": [first[p] for p in problems], "later": [later.get(p, [0, 0]) for p in problems]}


def pool_solve_rates(cfg, directory, num_samples: int) -> Optional[dict]:
  """Correct responses out of ``num_samples`` for every RL-pool problem, of the run's final policy (its HF
  export), at the evaluation temperature: the after-RL solve rates of problems by how they looked when first
  drawn (claim C8) and of the warm-start (before)."""
  if num_samples <= 0:
    return None
  from ngrpo_jax import grading  # pylint: disable=g-import-not-at-top
  from ngrpo_jax import models  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import builders  # pylint: disable=g-import-not-at-top
  from ngrpo_jax.training import heldout  # pylint: disable=g-import-not-at-top
  directory = pathlib.Path(directory)
  export = directory / "hf_export"
  tokenizer = builders.build_tokenizer(dataclasses.replace(cfg.model, init_from=str(export)), cfg.task)
  model_config, params = models.load_pretrained(export)
  data = builders.build_data(cfg.task, tokenizer, cfg.seed)
  problems = [{"id": f"rl-{i}", "problem": p["problem"], "answer": p["answer"]} for i, p in enumerate(data["rl"])]
  pcfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, num_samples=num_samples))
  pool = grading.WorkerPool(max(cfg.grading_workers, 1))
  try:
    grader = grading.Grader(require_boxed=True, pool=pool, backend=cfg.grading_backend)
    out = directory / "pool_eval"
    result = heldout.evaluate_heldout(params, model_config, tokenizer, problems, pcfg, out, grade_fn=grader,
                                      policy_step=-1, log=lambda m: None)
  finally:
    pool.close()
  return {"num_samples": num_samples, "correct": result.summary["per_problem_correct"]}


def result_file_name(run: PlannedRun) -> str:
  """The name of a run's committed copy in a results directory's ``runs/`` (see :func:`restore_results`)."""
  if run.kind == "warm_start":
    return "base.json"
  if run.kind == "tune":
    return "tune_base.json" if run.arm == "base" else f"tune_{run.arm}_lr{run.learning_rate:g}.json"
  return f"{run.arm}_s{run.seed}.json"


def restore_results(study: Study, workdir, results_dir) -> list:
  """Copies committed per-run results (``<results_dir>/runs/*.json``, written by the report) into ``workdir``
  as the ``result.json`` of every unfinished tuning and main run that has one, so a study resumes on a machine
  that lost its working directory (a new session, a preempted VM). The warm-start is not restored: later runs
  need its checkpoint, so it is re-run (it is deterministic for a data seed); compare its evaluation with the
  committed ``base.json`` (:func:`warm_start_matches`). Returns the labels of the restored runs."""
  src = pathlib.Path(results_dir) / "runs"
  restored = []
  for r in plan(study, workdir):
    f = src / result_file_name(r)
    if r.kind == "warm_start" or r.done or not f.exists():
      continue
    result = json.loads(f.read_text())
    if "seconds" not in result or "eval" not in result:
      raise ValueError(f"{f} is not a run result written by the study report (no 'eval' / 'seconds')")
    r.directory.mkdir(parents=True, exist_ok=True)
    (r.directory / "result.json").write_text(json.dumps(result, sort_keys=True))
    restored.append(r.label)
  return restored


def warm_start_matches(workdir, results_dir) -> Optional[bool]:
  """Whether this workdir's warm-start evaluation equals the committed one (None if either is missing): the
  restored runs started from the committed warm-start, new runs start from this one."""
  committed = pathlib.Path(results_dir) / "runs" / "base.json"
  here = read_result(warm_start_dir(workdir))
  if here is None or not committed.exists():
    return None
  return json.loads(committed.read_text())["eval"] == here["eval"]


def read_result(directory) -> Optional[dict]:
  """A finished run's ``result.json`` as a dict; None while the run has not finished."""
  path = pathlib.Path(directory) / "result.json"
  return json.loads(path.read_text()) if path.exists() else None
