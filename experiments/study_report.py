"""The report of a study (``experiments.study``): paper-style tables with 95% CIs over seeds, paired
comparisons for each claim, verdicts, figures, and the regime the study ran in.

Statistics (fixed before any result was seen):
* a run is one RL seed; an arm's number is the mean over its seeds with a two-sided 95% Student-t interval
  (mean ± t_{0.975, n−1} · sd / √n);
* a claim "A beats B" is decided on the paired differences A − B of the same seed (same prompt stream, same
  test problems): **reproduced** if the 95% t-interval of the mean difference lies above 0, **contradicted**
  if it lies below 0, **inconclusive** otherwise; "A matches or beats B" is reproduced when the interval's
  lower end is above −1 AUC point (the equivalence margin) and contradicted when its upper end is below 0;
* a claim made of several comparisons is reproduced when all of them are, contradicted when any is, and
  inconclusive otherwise;
* the base model is one evaluation: comparisons with it use the per-seed differences arm − base.
"""
import json
import math
import pathlib
from typing import Optional

import numpy as np
from scipy import stats as scipy_stats

EQUIVALENCE_MARGIN = 1.0   # AUC points: "matches" means the CI of the difference is above −1


# ----------------------------------------------------------------------------------------------------------
# Loading.


def load_results(study, workdir) -> dict:
  """``{"base": result | None, "tuning": {arm: {lr: (criterion, auc, pass@1)}}, "tuning_base": result | None,
  "runs": {arm: {seed: result}}}``."""
  from experiments import study_runner as study_lib  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  out = {"base": study_lib.read_result(study_lib.warm_start_dir(workdir)), "tuning": {}, "runs": {},
         "tuning_base": study_lib.read_result(study_lib.tune_base_dir(workdir))}
  for arm in study.arms:
    if study.tuning is not None and arm.learning_rates:
      scores = {}
      for lr in arm.learning_rates:
        r = study_lib.read_result(study_lib.tune_dir(workdir, arm.name, lr))
        if r is not None:
          scores[lr] = (study.tuning.score(r), r["eval"]["auc"], r["eval"]["pass_at_k"]["1"])
      out["tuning"][arm.name] = scores
    for seed in study.seeds_of(arm):
      r = study_lib.read_result(study_lib.run_dir(workdir, arm.name, seed))
      if r is not None:
        out["runs"].setdefault(arm.name, {})[seed] = r
  return out


# ----------------------------------------------------------------------------------------------------------
# Statistics.


def mean_ci(values) -> tuple:
  """(mean, half-width of the 95% t-interval) of the values (half-width None for fewer than 2)."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return (float("nan"), None)
  if v.size < 2:
    return (float(v.mean()), None)
  return (float(v.mean()), float(scipy_stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)))


def fmt(mean, hw, digits=2) -> str:
  if mean is None or (isinstance(mean, float) and math.isnan(mean)):
    return "—"
  return f"{mean:.{digits}f}" + ("" if hw is None else f" ± {hw:.{digits}f}")


def pass_curve(result) -> dict:
  """``{k: pass@k %}`` of a result's evaluation."""
  return {int(k): float(v) for k, v in result["eval"]["pass_at_k"].items()}


def powers_of_two(n: int) -> list:
  return [2 ** i for i in range(int(math.log2(n)) + 1)]


def paired(res: dict, a: str, b: str, value) -> Optional[dict]:
  """Paired differences value(a) − value(b) over the seeds both arms finished (b = "base": the base model)."""
  ra = res["runs"].get(a, {})
  if b == "base":
    if res["base"] is None:
      return None
    seeds = sorted(ra)
    diffs = [value(ra[s]) - value(res["base"]) for s in seeds]
  else:
    rb = res["runs"].get(b, {})
    seeds = sorted(set(ra) & set(rb))
    diffs = [value(ra[s]) - value(rb[s]) for s in seeds]
  if not seeds:
    return None
  m, hw = mean_ci(diffs)
  return {"a": a, "b": b, "seeds": seeds, "diffs": diffs, "mean": m, "hw": hw}


def decide(cmp: Optional[dict], kind: str = "beats") -> str:
  """reproduced / contradicted / inconclusive / missing for one paired comparison (see the module docstring)."""
  if cmp is None:
    return "missing"
  if cmp["hw"] is None:
    return "inconclusive"
  lo, hi = cmp["mean"] - cmp["hw"], cmp["mean"] + cmp["hw"]
  if kind == "beats":
    return "reproduced" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
  if kind == "loses":
    return "reproduced" if hi < 0 else "contradicted" if lo > 0 else "inconclusive"
  if kind == "matches_or_beats":
    return "reproduced" if lo > -EQUIVALENCE_MARGIN else "contradicted" if hi < 0 else "inconclusive"
  raise ValueError(kind)


def combine(verdicts) -> str:
  verdicts = list(verdicts)
  if not verdicts or "missing" in verdicts:
    return "not run" if all(v == "missing" for v in verdicts) else "incomplete"
  if all(v == "reproduced" for v in verdicts):
    return "reproduced"
  if "contradicted" in verdicts:
    return "not reproduced"
  return "inconclusive"


def _auc(r):
  return r["eval"]["auc"]


def _pass(k):
  return lambda r: pass_curve(r)[k]


def _window_mean(curve, frac, last):
  v = [x for x in curve if x is not None]
  if not v:
    return None
  n = max(1, int(round(len(v) * frac)))
  return float(np.mean(v[-n:] if last else v[:n]))


def _change(key, frac=0.25):
  """Training-curve change: mean of the last quarter of steps − mean of the first quarter."""
  return lambda r: _window_mean(r["curves"].get(key, []), frac, True) - _window_mean(r["curves"].get(key, []),
                                                                                      frac, False)


def _log_ratio(key, frac=0.25):
  return lambda r: math.log(_window_mean(r["curves"][key], frac, True) / _window_mean(r["curves"][key], frac, False))


def first_seen_all_wrong_solve_rate(result, problems=None) -> Optional[float]:
  """Mean after-RL solve rate (pool evaluation) of the RL problems whose first drawn group was all wrong."""
  fs, pool = result.get("first_seen"), result.get("pool")
  if not fs or not pool:
    return None
  chosen = [p for p, c in zip(fs["problems"], fs["first"]) if c == 0]
  if problems is not None:
    chosen = [p for p in chosen if p in problems]
  if not chosen:
    return None
  return float(np.mean([pool["correct"][p] / pool["num_samples"] for p in chosen]))


# ----------------------------------------------------------------------------------------------------------
# Claims.


def claims(res: dict) -> list:
  """[(claim id, statement, overall verdict, [(comparison label, paired dict, verdict, unit)])]."""
  out = []

  def cmp(label, a, b, value, kind="beats", unit="AUC"):
    c = paired(res, a, b, value)
    return (label, c, decide(c, kind), unit)

  n = _max_k(res)
  c1 = [cmp(f"NGRPO − {b.upper()} (AUC)", "ngrpo", b, _auc) for b in ("ppo", "grpo", "dapo", "psr_nsr")]
  c1_large = [cmp(f"NGRPO − {b.upper()} (pass@{n})", "ngrpo", b, _pass(n), unit="pts") for b in
              ("ppo", "grpo", "dapo", "psr_nsr")]
  out.append(("C1", "Table 1: NGRPO's Pass@k AUC above PPO, GRPO, DAPO and PSR-NSR (and at the largest k)",
              combine(v for _, _, v, _ in c1), c1 + c1_large))
  c2 = [cmp("+calibration − +asym clip", "abl_calib", "abl_asym", _auc),
        cmp("calibration+asym − +calibration", "abl_calib_asym", "abl_calib", _auc),
        cmp("calibration+asym − +asym clip", "abl_calib_asym", "abl_asym", _auc),
        cmp("NGRPO (keeps all-wrong) − calibration+asym", "ngrpo", "abl_calib_asym", _auc),
        cmp("+asym clip − ablation base", "abl_asym", "abl_grpo", _auc),
        cmp("+calibration − ablation base", "abl_calib", "abl_grpo", _auc)]
  out.append(("C2", "Table 2: calibration helps more than asymmetric clipping, both more than either, keeping "
              "all-wrong groups helps on top", combine(v for _, _, v, _ in c2[:4]), c2))
  c3 = [cmp("max − medium", "ngrpo", "vr_medium", _auc), cmp("medium − min", "vr_medium", "vr_min", _auc),
        cmp("count 1 − count 2", "ngrpo", "vc2", _auc), cmp("count 2 − count 4", "vc2", "vc4", _auc)]
  out.append(("C3", "Table 3: virtual reward max > medium > min; count 1 > 2 > 4", combine(v for _, _, v, _ in c3),
              c3))
  c4 = [_change_cmp(res, "psr_nsr", "groups/all_correct_frac", "loses",
                    "PSR-NSR: fully-solved group share, last − first quarter of steps"),
        _change_cmp(res, "psr_nsr", "accuracy", "loses",
                    "PSR-NSR: training accuracy (1 − wrong share), last − first quarter of steps"),
        _change_cmp(res, "ngrpo", "groups/all_correct_frac", "beats",
                    "(contrast) NGRPO: fully-solved group share, last − first quarter")]
  out.append(("C4", "Figure 2: PSR-NSR's fixed negative advantage can collapse (fully-solved count falls, wrong "
              "responses surge)", combine(v for _, _, v, _ in c4[:2]), c4))
  c5 = [cmp(f"NGRPO − {b.upper()}: log(entropy last / first quarter)", "ngrpo", b, _log_ratio("policy_entropy"),
            unit="log") for b in ("grpo", "dapo", "ppo")]
  c5 += [_change_cmp(res, b, "policy_entropy", "loses", f"{b.upper()}: entropy, last − first quarter")
         for b in ("grpo", "dapo", "ppo")]
  c5 += [cmp("PSR-NSR − NGRPO: entropy in the last quarter", "psr_nsr", "ngrpo",
             lambda r: _window_mean(r["curves"]["policy_entropy"], 0.25, True), unit="nats")]
  out.append(("C5", "Figure 5: NGRPO's entropy stays stable while GRPO / DAPO / PPO's declines; PSR-NSR's stays "
              "high", combine(v for _, _, v, _ in c5), c5))
  ks = [k for k in (1, 4, 16, 64, n) if k <= n]
  c6 = [cmp(f"NSR-only − base, pass@{k}", "nsr_only", "base", _pass(k), unit="pts") for k in sorted(set(ks))]
  c6 += [cmp("PSR-only − base, pass@1", "psr_only", "base", _pass(1), unit="pts"),
         cmp(f"PSR-only − base, pass@{n}", "psr_only", "base", _pass(n), "loses", unit="pts")]
  out.append(("C6", "Zhu et al.: NSR-only improves pass@k over the base model at every k; PSR-only improves pass@1 "
              f"but loses at large k", combine(v for _, _, v, _ in c6), c6))
  c7 = [cmp(f"W-REINFORCE − {b.upper()} (AUC, matches or beats: CI above −{EQUIVALENCE_MARGIN:g})", "psr_nsr", b,
            _auc, "matches_or_beats") for b in ("ppo", "grpo")]
  out.append(("C7", "Zhu et al.: W-REINFORCE (λ = 0.1) matches or beats PPO and GRPO", combine(v for _, _, v, _ in c7),
              c7))
  c8 = [_c8_cmp(res, "ngrpo", "grpo")]
  out.append(("C8", "Problems whose first sampled group was all wrong are solved more often after RL under NGRPO "
              "than under GRPO", combine(v for _, _, v, _ in c8), c8))
  return out


def _change_cmp(res, arm, key, kind, label):
  runs = res["runs"].get(arm, {})
  if not runs:
    return (label, None, "missing", "")
  diffs = [_change(key)(runs[s]) for s in sorted(runs)]
  m, hw = mean_ci(diffs)
  c = {"a": arm, "b": None, "seeds": sorted(runs), "diffs": diffs, "mean": m, "hw": hw}
  return (label, c, decide(c, kind), "")


def _c8_cmp(res, a, b):
  label = (f"{a.upper()} − {b.upper()}: after-RL solve rate (%) of RL problems first drawn all-wrong in both runs "
           "of a seed")
  ra, rb = res["runs"].get(a, {}), res["runs"].get(b, {})
  seeds = sorted(set(ra) & set(rb))
  diffs = []
  for s in seeds:
    both = _first_wrong(ra[s]) & _first_wrong(rb[s])
    va, vb = first_seen_all_wrong_solve_rate(ra[s], both), first_seen_all_wrong_solve_rate(rb[s], both)
    if va is not None and vb is not None:
      diffs.append(100 * (va - vb))
  if not diffs:
    return (label, None, "missing", "pts")
  m, hw = mean_ci(diffs)
  c = {"a": a, "b": b, "seeds": seeds, "diffs": diffs, "mean": m, "hw": hw}
  return (label, c, decide(c, "beats"), "pts")


def _first_wrong(result) -> set:
  fs = result.get("first_seen") or {"problems": [], "first": []}
  return {p for p, c in zip(fs["problems"], fs["first"]) if c == 0}


def _max_k(res) -> int:
  for runs in res["runs"].values():
    for r in runs.values():
      return int(r["eval"]["max_k"])
  return int(res["base"]["eval"]["max_k"]) if res["base"] else 1


# ----------------------------------------------------------------------------------------------------------
# The regime.


def regime(res: dict, workdir, group_size: int = 8) -> dict:
  """Numbers that show whether the study ran in the regime it aims at (before RL)."""
  base = res["base"]
  if base is None:
    return {}
  c = np.asarray(base["eval"]["per_problem_correct"])
  n = int(base["eval"]["num_samples"])
  all_wrong = np.array([math.comb(n - x, group_size) / math.comb(n, group_size) for x in c])
  hard = all_wrong > 0.5
  step1 = [r["curves"]["groups/all_wrong_frac"][0] for runs in res["runs"].values() for r in runs.values()
           if r["curves"].get("groups/all_wrong_frac")]
  out = {"num_problems": int(c.size), "num_samples": n, "solve_rates": (c / n).tolist(),
         "expected_all_wrong_share": float(all_wrong.mean()),
         "never_solved_share": float(np.mean(c == 0)), "always_solved_share": float(np.mean(c == n)),
         "hard_share": float(hard.mean()),
         "hard_solved_at_least_once_share": float(np.mean(c[hard] > 0)) if hard.any() else None,
         "observed_all_wrong_share_step1": mean_ci(step1)}
  pool = base.get("pool")
  if pool:
    pc = np.asarray(pool["correct"])
    pn = int(pool["num_samples"])
    out["pool_expected_all_wrong_share"] = float(np.mean([math.comb(pn - x, group_size) / math.comb(pn, group_size)
                                                          if pn >= group_size else float(x == 0) for x in pc]))
  out.update(near_misses(pathlib.Path(workdir) / "warm_start" / "eval_after" / "samples.jsonl"))
  return out


def near_misses(samples_path) -> dict:
  """Of the warm-start's wrong answers: the share with the gold's length and one wrong digit, two or more, another
  length, no answer (golds from the ``counts.jsonl`` beside ``samples.jsonl``)."""
  path = pathlib.Path(samples_path)
  counts = path.parent / "counts.jsonl"
  if not path.exists() or not counts.exists():
    return {}
  golds = {}
  for line in counts.read_text().splitlines():
    rec = json.loads(line)
    golds[rec["id"]] = str(rec["answer"])
  one = more = other = unparsed = 0
  for line in path.read_text().splitlines():
    row = json.loads(line)
    if row.get("correct"):
      continue
    pred, gold = row.get("pred_answer"), golds.get(row["id"])
    if pred is None:
      unparsed += 1
    elif gold is None or len(pred) != len(gold):
      other += 1
    else:
      d = sum(a != b for a, b in zip(pred, gold))
      one, more = one + (d == 1), more + (d > 1)
  wrong = one + more + other + unparsed
  return {"wrong_answers": wrong, "wrong_one_digit_share": one / wrong if wrong else None,
          "wrong_more_digits_share": more / wrong if wrong else None,
          "wrong_other_length_share": other / wrong if wrong else None,
          "wrong_unparsed_share": unparsed / wrong if wrong else None}


# ----------------------------------------------------------------------------------------------------------
# Writing.


GROUP_TITLES = {"table1": "Table 1 — the algorithms (paper Table 1)",
                "zhu": "PSR-only / NSR-only (Zhu et al.)",
                "table2": "Table 2 — NGRPO's components (the ablation's rows; NGRPO is the full method)",
                "table3": "Table 3 — the virtual sample's reward and count",
                "rivals": "NGRPO's rivals (LENS, RL-ZVP), at NGRPO's learning rate"}


def write_report(study, workdir, out_dir, study_spec: str = "") -> dict:
  """Writes ``report.md``, ``study.json``, ``runs/*.json`` and the figures into ``out_dir``; returns study.json."""
  out_dir = pathlib.Path(out_dir)
  (out_dir / "runs").mkdir(parents=True, exist_ok=True)
  res = load_results(study, workdir)
  from experiments import study_runner as study_lib  # pylint: disable=g-import-not-at-top
  for r in study_lib.plan(study, workdir):   # every finished run, verbatim: the study can resume from these
    result = study_lib.read_result(r.directory)
    if result is not None:
      (out_dir / "runs" / study_lib.result_file_name(r)).write_text(json.dumps(result, sort_keys=True))
  table = arm_table(study, res)
  verdicts = claims(res)
  reg = regime(res, workdir, study.base.rollout.group_size)
  cost = compute_cost(study, workdir)
  summary = {"study": study.name, "spec": study_spec, "description": study.description, "arms": table,
             "tuning": {a: {f"{lr:g}": v for lr, v in s.items()} for a, s in res["tuning"].items()},
             "verdicts": [{"claim": cid, "statement": st, "verdict": v,
                           "comparisons": [{"label": lab, "verdict": cv, "unit": unit,
                                            **({} if c is None else {"mean": c["mean"], "hw": c["hw"],
                                                                     "diffs": c["diffs"], "seeds": c["seeds"]})}
                                           for lab, c, cv, unit in comps]}
                          for cid, st, v, comps in verdicts],
             "regime": {k: v for k, v in reg.items() if k != "solve_rates"}, "cost": cost}
  (out_dir / "study.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
  figures = write_figures(study, res, reg, out_dir)
  (out_dir / "report.md").write_text(_markdown(study, res, table, verdicts, reg, cost, figures, study_spec))
  return summary


def arm_table(study, res) -> dict:
  """Per arm: seeds, learning rate, pass@k mean / CI for every k, AUC mean / CI, clip fractions."""
  out = {}
  if res["base"] is not None:
    b = res["base"]
    out["base"] = {"seeds": [], "learning_rate": None, "group": "base",
                   "pass_at_k": {k: (v, None) for k, v in pass_curve(b).items()}, "auc": (b["eval"]["auc"], None)}
  for arm in study.arms:
    runs = res["runs"].get(arm.name, {})
    if not runs:
      continue
    curves = [pass_curve(r) for r in runs.values()]
    ks = sorted(curves[0])
    row = {"seeds": sorted(runs), "learning_rate": next(iter(runs.values()))["learning_rate"], "group": arm.group,
           "pass_at_k": {k: mean_ci([c[k] for c in curves]) for k in ks},
           "auc": mean_ci([_auc(r) for r in runs.values()])}
    for key in ("pg/clip_frac", "pg/clip_frac_pos", "pg/clip_frac_neg", "groups/all_wrong_frac",
                "groups/all_correct_frac", "policy_entropy"):
      vals = [np.mean([x for x in r["curves"].get(key, []) if x is not None]) for r in runs.values()
              if r["curves"].get(key)]
      row[key] = mean_ci(vals) if vals else (None, None)
    out[arm.name] = row
  return out


def compute_cost(study, workdir) -> dict:
  """Wall seconds by kind of run (from each run's result.json)."""
  from experiments import study_runner as study_lib  # pylint: disable=g-import-not-at-top
  total = {}
  for r in study_lib.plan(study, workdir):
    res = study_lib.read_result(r.directory)
    if res is not None:
      total.setdefault(r.kind, [0.0, 0])
      total[r.kind][0] += res["seconds"].get("this_invocation", 0.0)
      total[r.kind][1] += 1
  return {k: {"runs": n, "seconds": round(s, 1)} for k, (s, n) in total.items()}


def write_figures(study, res, reg, out_dir) -> list:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  out_dir = pathlib.Path(out_dir)
  figures = []
  groups = {}
  for arm in study.arms:
    if arm.name in res["runs"]:
      groups.setdefault(arm.group, []).append(arm.name)
  # Pass@k curves (paper Figure 4): one panel per table, the base model in each.
  if groups:
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (group, names) in zip(axes[0], groups.items()):
      for name in (["base"] if res["base"] else []) + names:
        curves = [pass_curve(res["base"])] if name == "base" else [pass_curve(r) for r in res["runs"][name].values()]
        ks = sorted(curves[0])
        m = np.array([np.mean([c[k] for c in curves]) for k in ks])
        ax.plot(np.log2(ks), m, label=name, ls="--" if name == "base" else "-")
        if len(curves) > 1:
          hw = np.array([mean_ci([c[k] for c in curves])[1] for k in ks])
          ax.fill_between(np.log2(ks), m - hw, m + hw, alpha=0.15)
      ax.set_xlabel("log2 k")
      ax.set_ylabel("pass@k (%)")
      ax.set_title(group)
      ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "pass_at_k.png", dpi=110)
    plt.close(fig)
    figures.append(("Pass@k curves (mean over seeds, 95% CI bands; paper Figure 4)", "pass_at_k.png"))
  # Training curves: entropy (Figure 5), fully-solved / wrong (Figure 2), homogeneous groups, clip fractions.
  panels = [("policy_entropy", "policy entropy (nats/token)"), ("groups/all_correct_frac", "fully-solved groups"),
            ("accuracy", "training accuracy (1 − wrong share)"), ("groups/all_wrong_frac", "all-wrong groups"),
            ("pg/clip_frac", "clip fraction")]
  shown = [n for n in ("ppo", "grpo", "dapo", "psr_nsr", "ngrpo", "psr_only", "nsr_only") if n in res["runs"]]
  if shown:
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
      for name in shown:
        runs = [r for r in res["runs"][name].values() if r["curves"].get(key)]
        if not runs:
          continue
        steps = runs[0]["curves"]["step"]
        length = min(len(r["curves"][key]) for r in runs)
        m = np.nanmean(np.array([[np.nan if x is None else x for x in r["curves"][key][:length]] for r in runs]), 0)
        ax.plot(steps[:length], m, label=name)
      ax.set_title(title, fontsize=9)
      ax.set_xlabel("RL step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png", dpi=110)
    plt.close(fig)
    figures.append(("Training curves, mean over seeds (entropy: paper Figure 5; fully-solved groups and accuracy: "
                    "Figure 2)", "training_curves.png"))
  # C8: after-RL solve rate of problems first drawn all-wrong.
  c8 = {n: [first_seen_all_wrong_solve_rate(r) for r in res["runs"][n].values()] for n in shown}
  c8 = {n: [100 * v for v in vals if v is not None] for n, vals in c8.items()}
  c8 = {n: v for n, v in c8.items() if v}
  if c8:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(c8)
    ms = [mean_ci(c8[n]) for n in names]
    ax.bar(names, [m for m, _ in ms], yerr=[hw or 0 for _, hw in ms], capsize=3)
    if res["base"] and res["base"].get("pool"):
      ax.axhline(np.mean([_base_rate_on_first_wrong(res, n) for n in names]), color="k", ls="--",
                 label="warm-start on the same problems")
      ax.legend(fontsize=7)
    ax.set_ylabel("after-RL solve rate (%)")
    ax.set_title("RL problems whose first drawn group was all wrong", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "first_seen_all_wrong.png", dpi=110)
    plt.close(fig)
    figures.append(("Claim C8: after-RL solve rate of RL problems whose first drawn group was all wrong (each run "
                    "its own problems; mean ± 95% CI over seeds)", "first_seen_all_wrong.png"))
  if reg.get("solve_rates"):
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(reg["solve_rates"], bins=np.linspace(0, 1, 21))
    ax.set_xlabel(f"per-problem solve rate of the warm-start ({reg['num_samples']} samples)")
    ax.set_ylabel("test problems")
    fig.tight_layout()
    fig.savefig(out_dir / "regime_solve_rates.png", dpi=110)
    plt.close(fig)
    figures.append(("The regime: per-problem solve rates of the warm-started model on the test set before RL",
                    "regime_solve_rates.png"))
  return figures


def _base_rate_on_first_wrong(res, name) -> float:
  pool = res["base"]["pool"]
  vals = []
  for r in res["runs"][name].values():
    chosen = _first_wrong(r)
    if chosen:
      vals.append(100 * np.mean([pool["correct"][p] / pool["num_samples"] for p in chosen]))
  return float(np.mean(vals)) if vals else float("nan")


def _seed_exceptions(study) -> str:
  """" (arms with other seeds: name [seeds], ...)" or ""."""
  other = [f"{a.name} {list(study.seeds_of(a))}" for a in study.arms if study.seeds_of(a) != tuple(study.seeds)]
  return f" (except {', '.join(other)})" if other else ""


def _markdown(study, res, table, verdicts, reg, cost, figures, study_spec) -> str:
  lines = [f"# Study `{study.name}`", "", study.description, "",
           f"Command: `python -m experiments.study --study={study_spec} --workdir=<dir>` (this report: "
           f"`--report_only`). Seeds: {list(study.seeds)}{_seed_exceptions(study)}; arms: {len(study.arms)}; "
           f"finished runs: {sum(len(v) for v in res['runs'].values())} of {study.num_runs}.", ""]
  n = _max_k(res)
  ks = powers_of_two(n)
  lines += ["## Verdicts", "", "| claim | statement | verdict |", "|---|---|---|"]
  lines += [f"| {cid} | {st} | **{v}** |" for cid, st, v, _ in verdicts]
  lines += ["", "Each comparison: paired over seeds (mean difference ± 95% t-interval; per-seed differences).", ""]
  for cid, _, v, comps in verdicts:
    lines.append(f"- **{cid}** ({v})")
    for label, c, cv, unit in comps:
      if c is None:
        lines.append(f"  - {label}: not run")
      else:
        lines.append(f"  - {label}: {fmt(c['mean'], c['hw'], 3 if unit in ('log', 'nats', '') else 2)} "
                     f"{unit} (seeds {c['seeds']}: {', '.join(f'{d:+.3g}' for d in c['diffs'])}) → {cv}")
  lines += ["", "## Pass@k (%) and the Pass@k AUC, mean ± 95% CI over seeds", ""]
  header = "| arm | lr | seeds | " + " | ".join(f"k={k}" for k in ks) + " | AUC | clip frac (A≥0 / A<0) |"
  for group in ("base", "table1", "zhu", "table2", "table3", "rivals"):
    rows = [(name, row) for name, row in table.items() if row["group"] == group]
    if not rows:
      continue
    lines += ["", f"**{GROUP_TITLES.get(group, 'Base model (the warm-start, before RL)')}**", "", header,
              "|" + "---|" * (len(ks) + 5)]
    for name, row in rows:
      clip = "—" if row.get("pg/clip_frac_pos", (None,))[0] is None else (
          f"{100 * row['pg/clip_frac_pos'][0]:.2f}% / {100 * row['pg/clip_frac_neg'][0]:.2f}%")
      lines.append(f"| {name} | {row['learning_rate'] or '—'} | {len(row['seeds']) or '—'} | "
                   + " | ".join(fmt(*row["pass_at_k"][k], 1) if k in row["pass_at_k"] else "—" for k in ks)
                   + f" | {fmt(*row['auc'])} | {clip} |")
  if res["tuning"]:
    grid = sorted({lr for a in study.arms for lr in a.learning_rates})
    t = study.tuning
    lines += ["", f"## Learning-rate tuning (validation split, {t.num_problems} problems × {t.num_samples} samples, "
              f"{t.rl_steps} RL steps, seed {t.seed}; criterion: {t.criterion})", "",
              "Each cell: validation Pass@k AUC / pass@1 (%).", "",
              "| arm | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | chosen |", "|---|" + "---|" * (len(grid) + 1)]
    if res.get("tuning_base") is not None:
      ev = res["tuning_base"]["eval"]
      lines.append("| base (no RL, rate 0) | " + " | ".join("" for _ in grid)
                   + f" | {ev['auc']:.2f} / {ev['pass_at_k']['1']:.2f} |")
    for arm, scores in res["tuning"].items():
      lrs = study.arm(arm).learning_rates
      best = min(scores, key=lambda lr: (-round(scores[lr][0], 6), lr)) if len(scores) == len(lrs) else None
      # A winner at the top of the grid is unbracketed; at the bottom it is bracketed by the base model (rate 0)
      # when the base scores lower.
      base_score = None if res.get("tuning_base") is None else study.tuning.score(res["tuning_base"])
      edge = best is not None and (best == max(lrs) or best == min(lrs) and (
          base_score is None or base_score >= scores[best][0]))
      lines.append(f"| {arm} | " + " | ".join(f"{scores[lr][1]:.2f} / {scores[lr][2]:.2f}" if lr in scores else "—"
                                             for lr in grid)
                   + f" | {'(unfinished)' if best is None else f'{best:g}' + (' (grid edge)' if edge else '')} |")
  if reg:
    obs = reg["observed_all_wrong_share_step1"]
    lines += ["", "## The regime (before RL)", "",
              f"- warm-start on the test set ({reg['num_problems']} problems × {reg['num_samples']} samples): "
              f"never solved {100 * reg['never_solved_share']:.1f}%, always solved "
              f"{100 * reg['always_solved_share']:.1f}%;",
              f"- expected share of all-wrong groups of G = {study.base.rollout.group_size}: "
              f"{100 * reg['expected_all_wrong_share']:.1f}% (test)"
              + (f", {100 * reg['pool_expected_all_wrong_share']:.1f}% (RL pool)" if 'pool_expected_all_wrong_share'
                 in reg else "") + (f"; observed at the first RL step: {fmt(100 * obs[0], None if obs[1] is None else 100 * obs[1], 1)}%"
                                    if obs[0] == obs[0] else "") + ";",
              f"- problems more likely than not to give an all-wrong group: {100 * reg['hard_share']:.1f}%, of which "
              f"{100 * (reg['hard_solved_at_least_once_share'] or 0):.1f}% are solved at least once in "
              f"{reg['num_samples']} samples (learnable);"]
    if reg.get("wrong_answers"):
      lines.append(f"- the warm-start's wrong answers ({reg['wrong_answers']}): one digit off "
                   f"{100 * reg['wrong_one_digit_share']:.1f}%, several digits {100 * reg['wrong_more_digits_share']:.1f}%, "
                   f"another length {100 * reg['wrong_other_length_share']:.1f}%, no answer "
                   f"{100 * reg['wrong_unparsed_share']:.1f}%.")
  if cost:
    lines += ["", "## Compute", "", "| runs | count | wall (min) |", "|---|---|---|"]
    lines += [f"| {k} | {v['runs']} | {v['seconds'] / 60:.1f} |" for k, v in cost.items()]
    lines.append(f"| total | {sum(v['runs'] for v in cost.values())} | "
                 f"{sum(v['seconds'] for v in cost.values()) / 60:.1f} |")
    lines.append("")
    lines.append("Wall minutes of each run's own process, summed (runs in parallel overlap).")
  for title, path in figures:
    lines += ["", f"### {title}", "", f"![{title}]({path})"]
  return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Re-running a committed study.


def compare_results(new_dir, committed_dir) -> tuple:
  """Does a re-run reproduce committed results? Every arm's AUC and pass@1 / pass@N mean must lie within the
  committed 95% CI (or, for a single seed / the base row, within 2 points). Returns (ok, report lines)."""
  new = json.loads((pathlib.Path(new_dir) / "study.json").read_text())
  old = json.loads((pathlib.Path(committed_dir) / "study.json").read_text())
  ok, lines = True, [f"[compare] {new_dir} vs committed {committed_dir}"]
  for arm, row in old["arms"].items():
    if arm not in new["arms"]:
      ok = False
      lines.append(f"[compare] {arm}: missing in the re-run")
      continue
    ks = sorted(int(k) for k in row["pass_at_k"])
    for label, (om, ohw), (nm, _) in [("AUC", row["auc"], new["arms"][arm]["auc"])] + [
        (f"pass@{k}", row["pass_at_k"][str(k)], new["arms"][arm]["pass_at_k"][str(k)]) for k in (ks[0], ks[-1])]:
      tol = ohw if ohw is not None else 2.0
      within = abs(nm - om) <= tol
      ok &= within
      lines.append(f"[compare] {arm} {label}: re-run {nm:.2f} vs committed {om:.2f} ± {tol:.2f} → "
                   f"{'within' if within else 'OUTSIDE'}")
  return ok, lines
