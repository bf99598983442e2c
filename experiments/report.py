"""Paper-style tables and figures from several evaluation / training-run directories.

For every dataset found, writes (as in the NGRPO paper's Tables 1–3 and Figure 4):
  * ``tables.md`` (all datasets) and ``table_<dataset>.csv``: rows = methods, columns = pass@k in % for
    k = 1, 2, 4, …, N and the Pass@k AUC; the best value of each column in bold (markdown); below each
    table, paired comparisons of its methods (pass@1 and pass@N differences with 95% paired-bootstrap
    intervals over problems and p-values, ``metrics.paired_bootstrap``);
  * ``pass_at_k_<dataset>.png``: pass@k curves (log-scale k) per method with bootstrap CI bands.
Evaluations are compared only when their settings match (``COMPARED_SETTINGS``: problem count and set,
samples per problem, temperature, top-p, response budget): evaluations of one dataset with different
settings get separate tables (``table_<dataset>_<i>.csv``...), each saying what differs from the others.
From the trainers' metrics JSONL files:
  * ``training_curves.png``: one panel per quantity of ``PANELS`` (reward and accuracy, policy entropy, PPO
    clip fractions by advantage sign, answer format and end-token probability, homogeneous-group shares,
    response length, advantages, gradient-norm share by group kind), one series per quantity and run — for
    whichever of these the files hold (missing ones are skipped).

Usage:
  python -m experiments.report --inputs=<eval_or_run_dir>,<eval_or_run_dir>,... \
      [--labels=NGRPO,GRPO,...] --output_dir=/tmp/report

An input is an evaluation directory (``summary.json``, as written by experiments/evaluate.py) or a run
directory: its ``summary.json`` files are found recursively, and its ``--metrics_file`` (default
``metrics.jsonl``) anywhere below it.
"""
import csv
import io
import json
import math
import pathlib
import re
from typing import NamedTuple, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  """Registers this binary's flags (called only when run as a program, so that importing the module — e.g.
  from tests, next to other binaries — defines no flags)."""
  flags.DEFINE_list("inputs", None, "Evaluation or run directories (comma-separated).")
  flags.DEFINE_list("labels", None, "Method names, one per input (default: each summary's label, "
                    "else the directory name).")
  flags.DEFINE_string("output_dir", None, "Where to write the tables and PNGs.")
  flags.DEFINE_list("ks", None, "Table columns k (default 1, 2, 4, ..., N).")
  flags.DEFINE_bool("ci", False, "Show the bootstrap CIs in the markdown tables.")
  flags.DEFINE_string("metrics_file", "metrics.jsonl", "Name of the trainers' metrics JSONL file.")
  flags.DEFINE_list("train_metrics", None, "Plot exactly these metric keys (one panel each) instead "
                    "of the default panels.")
  flags.DEFINE_integer("smooth", 1, "Moving-average window for training curves (1 = raw).")
  flags.DEFINE_string("phase", "rl", "Plot metrics lines whose 'phase' field is this (lines without a "
                      "phase are always kept); empty = all phases.")


SUMMARY_FILE = "summary.json"

# Default training-curve panels: (title, y label, quantities); a quantity is (legend label, metric keys in
# order of preference): each run draws one series per quantity, from the first of its keys it logged.
PANELS = (
    ("Reward and accuracy", "value", (("accuracy", ("accuracy",)), ("mean reward", ("reward_mean", "reward")))),
    ("Policy entropy", "nats / token", (("entropy", ("policy_entropy", "entropy")),)),
    ("PPO clip fraction by advantage sign", "fraction of tokens",
     (("A > 0 (upper clip)", ("pg/clip_frac_pos",)), ("A < 0 (lower clip)", ("pg/clip_frac_neg",)),
      ("dual clip", ("pg/dual_clip_frac",)))),
    ("Answer format", "probability / fraction", (("parseable answers", ("parseable_frac",)),
                                                 ("p(end token)", ("format/end_token_prob",)))),
    ("Group kinds", "fraction of groups", (("all correct", ("groups/all_correct_frac",)),
                                           ("all wrong", ("groups/all_wrong_frac",)),
                                           ("mixed", ("groups/mixed_frac",)))),
    ("Response length", "tokens", (("mean length", ("response_len_mean",)),)),
    ("Advantage", "advantage", (("mean", ("adv_mean",)), ("std", ("adv_std",)))),
    ("Policy-gradient norm share by group kind", "share of the gradient norm",
     (("all wrong", ("grad_share/all_wrong",)), ("all correct", ("grad_share/all_correct",)),
      ("mixed", ("grad_share/mixed",)))),
)

# Evaluation settings that must be equal for two evaluations to share a table (bold best, paired tests).
COMPARED_SETTINGS = ("num_problems", "num_samples", "temperature", "top_p", "max_new_tokens", "synthetic_seed",
                     "synthetic_difficulty")


class Evaluation(NamedTuple):
  method: str
  dataset: str
  summary: dict
  path: pathlib.Path


# ----------------------------------------------------------------------------------------------------------
# Discovery.


def _read_json(path: pathlib.Path):
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    logging.warning("%s is not valid JSON (%s); skipped", path, e.msg)
    return None


def _is_eval_summary(obj) -> bool:
  return isinstance(obj, dict) and isinstance(obj.get("pass_at_k"), dict)


def _trainer_dataset(run_dir: pathlib.Path) -> str:
  """The held-out set of a trainer workdir, from its config.json (``task.kind`` / ``task.eval_path``)."""
  config = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else None
  task = (config or {}).get("task") or {}
  if task.get("kind") == "synthetic" or not task:
    return "synthetic" if task else "unknown"
  eval_path = pathlib.Path(str(task.get("eval_path") or "unknown"))
  return eval_path.parent.name if eval_path.stem in ("normalized", "test") else eval_path.stem


def trainer_eval_summary(path: pathlib.Path) -> Optional[dict]:
  """An evaluation summary (``ngrpo_jax.evaluation.summarize``) from a trainer's ``eval_<tag>.json``
  (``num_samples`` + ``per_problem_correct``), or None when the file holds no per-problem counts."""
  from ngrpo_jax import evaluation  # pylint: disable=g-import-not-at-top
  obj = _read_json(path)
  if not isinstance(obj, dict) or "per_problem_correct" not in obj or "num_samples" not in obj:
    return None
  c = np.asarray(obj["per_problem_correct"], np.int64)
  summary = evaluation.summarize(int(obj["num_samples"]), c, num_bootstrap=1000)
  config = _read_json(path.parent / "config.json") if (path.parent / "config.json").is_file() else None
  eval_cfg = (config or {}).get("eval") or {}
  summary["settings"] = {k: eval_cfg[k] for k in ("temperature", "top_p", "max_new_tokens") if k in eval_cfg}
  if summary["settings"] and summary["settings"].get("max_new_tokens") is None:
    summary["settings"]["max_new_tokens"] = ((config or {}).get("rollout") or {}).get("max_new_tokens")
  task = (config or {}).get("task") or {}
  if task.get("kind") == "synthetic":   # the held-out set (experiments.evaluate.heldout_spec's seed)
    summary["settings"].update(synthetic_seed=1000 * int(config.get("seed", 0)) + 3,
                               synthetic_difficulty=[float(x) for x in task.get("eval_difficulty", ())])
  summary["dataset"] = _trainer_dataset(path.parent)
  summary["per_problem_correct"] = [int(x) for x in c]
  return summary


def find_evaluations(inputs: Sequence[str], labels: Optional[Sequence[str]] = None) -> list:
  """Evaluation summaries below each input directory, as ``Evaluation`` tuples.

  Found: every ``summary.json`` holding ``pass_at_k`` (experiments/evaluate.py's; other summary files, such
  as a trainer's run summary, are ignored) and the trainer's held-out evaluations ``eval_after.json`` /
  ``eval_before.json`` (the latter as "<method> (before RL)").

  The method is the input's label (if given), else the summary's ``label``, else the directory name; the
  dataset is the summary's ``dataset`` (else "unknown"). A (method, dataset) pair seen twice gets the
  summary directory's name appended so rows stay distinct.
  """
  if labels is not None and len(labels) != len(inputs):
    raise ValueError(f"--labels has {len(labels)} names for {len(inputs)} inputs")
  found, seen = [], set()
  for i, inp in enumerate(inputs):
    root = pathlib.Path(inp)
    if not root.is_dir():
      raise FileNotFoundError(f"input directory {inp} does not exist")
    label = labels[i] if labels else None
    items = []
    for path in sorted(root.rglob(SUMMARY_FILE)):
      summary = _read_json(path)
      if _is_eval_summary(summary):
        items.append((label or summary.get("label") or path.parent.name, summary, path.parent))
    for tag, suffix in (("after", ""), ("before", " (before RL)")):
      for path in sorted(root.rglob(f"eval_{tag}.json")):
        summary = trainer_eval_summary(path)
        if summary is not None:
          items.append(((label or path.parent.name) + suffix, summary, path.parent))
    for method, summary, where in items:
      dataset = str(summary.get("dataset") or "unknown")
      if (method, dataset) in seen:
        method = f"{method} ({where.name})"
      seen.add((method, dataset))
      found.append(Evaluation(method, dataset, summary, where))
  return found


def find_metrics_files(inputs: Sequence[str], filename: str, labels: Optional[Sequence[str]] = None) -> list:
  """[(run name, path)] of the metrics JSONL files below each input directory."""
  runs = []
  for i, inp in enumerate(inputs):
    root = pathlib.Path(inp)
    paths = [root / filename] if (root / filename).is_file() else sorted(root.rglob(filename))
    for path in paths:
      name = (labels[i] if labels else None) or root.name
      if len(paths) > 1:
        name = f"{name} ({path.parent.relative_to(root)})"
      runs.append((name, path))
  return runs


# ----------------------------------------------------------------------------------------------------------
# Tables.


def eval_settings(e: Evaluation) -> dict:
  """The ``COMPARED_SETTINGS`` of an evaluation (None where its summary does not say)."""
  settings = e.summary.get("settings") or {}
  out = {}
  for name in COMPARED_SETTINGS:
    value = e.summary.get(name, settings.get(name))
    out[name] = [float(x) for x in value] if isinstance(value, (list, tuple)) else value
  return out


def comparable_groups(evals: Sequence[Evaluation]) -> list:
  """[(dataset, settings, [Evaluation])]: the evaluations of each dataset split by their ``eval_settings``
  (in order of first appearance); only evaluations of one group are compared with each other."""
  groups = {}
  for e in evals:
    settings = eval_settings(e)
    key = (e.dataset, json.dumps(settings, sort_keys=True))
    groups.setdefault(key, (e.dataset, settings, []))[2].append(e)
  return list(groups.values())


def settings_difference(settings: dict, others: Sequence[dict]) -> str:
  """'temperature 0.6 (vs 1.0), num_problems 30 (vs 48)': how ``settings`` differs from ``others``."""
  parts = []
  for name in COMPARED_SETTINGS:
    theirs = sorted({json.dumps(o.get(name)) for o in others if o.get(name) != settings.get(name)})
    if theirs:
      parts.append(f"{name} {json.dumps(settings.get(name))} (vs {' / '.join(theirs)})")
  return ", ".join(parts)


def table_columns(evals: Sequence[Evaluation], ks: Optional[Sequence[int]] = None) -> list:
  """k columns: the given ks, else 1, 2, 4, … up to the largest N (plus N when N is not a power of two)."""
  if ks:
    return [int(k) for k in ks]
  cols = set()
  for e in evals:
    cols.update(int(k) for k in e.summary.get("auc_ks") or e.summary["pass_at_k"])
  return sorted(cols)


def table_values(evals: Sequence[Evaluation], ks: Sequence[int]) -> np.ndarray:
  """float[M, len(ks) + 1]: pass@k (%) per method and k, then the AUC; NaN where unavailable."""
  out = np.full((len(evals), len(ks) + 1), np.nan)
  for r, e in enumerate(evals):
    for j, k in enumerate(ks):
      v = e.summary["pass_at_k"].get(str(k))
      out[r, j] = np.nan if v is None else float(v)
    if e.summary.get("auc") is not None:
      out[r, -1] = float(e.summary["auc"])
  return out


def _best_mask(values: np.ndarray) -> np.ndarray:
  """True where a value equals its column's maximum at the 2 printed decimals (ties all bold)."""
  rounded = np.round(values, 2)
  with np.errstate(invalid="ignore"):
    col_max = np.nanmax(np.where(np.isnan(rounded), -np.inf, rounded), axis=0)
    return (rounded == col_max[None, :]) & ~np.isnan(rounded)


def _describe(evals: Sequence[Evaluation]) -> str:
  ns = sorted({str(e.summary.get("num_samples")) for e in evals})
  ps = sorted({str(e.summary.get("num_problems")) for e in evals})
  settings = [e.summary.get("settings") or {} for e in evals]
  temps = sorted({str(s.get("temperature")) for s in settings if "temperature" in s})
  top_ps = sorted({str(s.get("top_p")) for s in settings if "top_p" in s})
  text = f"{'/'.join(ps)} problems, N = {'/'.join(ns)} samples per problem"
  if temps:
    text += f", temperature {'/'.join(temps)}"
  if top_ps:
    text += f", top-p {'/'.join(top_ps)}"
  if len(ns) > 1:
    text += " (N differs between methods: AUCs are over different k ranges)"
  return text


def markdown_table(dataset: str, evals: Sequence[Evaluation], ks: Sequence[int], ci: bool = False,
                   note: str = "") -> str:
  """A markdown table: rows = methods, columns = pass@k (%) for ``ks`` and the AUC; column best in bold —
  only when every row has the same ``eval_settings`` (else the table says what differs and bolds nothing).
  Below it, the paired comparisons of :func:`paired_comparisons`. ``note``: an extra line under the title."""
  values = table_values(evals, ks)
  best = _best_mask(values)
  if len({tuple(e.summary.get("auc_ks") or ()) for e in evals}) > 1:
    best[:, -1] = False  # AUCs over different k grids are not comparable: no "best" AUC
  groups = comparable_groups(evals)
  if len(groups) > 1:
    best[:] = False
    note = (note + " " if note else "") + ("**Settings differ between rows, so no value is bold: " + "; ".join(
        f"{', '.join(e.method for e in members)}: {settings_difference(settings, [o for _, o, _ in groups])}"
        for _, settings, members in groups) + ".**")
  names = [f"k={k}" for k in ks] + ["AUC"]
  lines = [f"### {dataset}", "", f"pass@k (%) and Pass@k AUC; {_describe(evals)}.", ""]
  if note:
    lines += [note, ""]
  lines += ["| Method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
  for r, e in enumerate(evals):
    cells = []
    for j, name in enumerate(names):
      v = values[r, j]
      if np.isnan(v):
        cells.append("–")
        continue
      text = f"{v:.2f}"
      if best[r, j] and len(evals) > 1:
        text = f"**{text}**"
      key = "auc" if name == "AUC" else str(ks[j])
      interval = e.summary.get("ci", {}).get(key)
      if ci and interval:
        text += f" [{interval[0]:.1f}, {interval[1]:.1f}]"
      cells.append(text)
    lines.append(f"| {e.method} | " + " | ".join(cells) + " |")
  level = next((e.summary.get("ci_level") for e in evals if e.summary.get("ci_level")), None)
  if ci and level:
    lines += ["", f"Brackets: {100 * level:.0f}% percentile-bootstrap intervals over problems."]
  if len(groups) == 1:
    lines += paired_comparisons(evals)
  return "\n".join(lines) + "\n"


def paired_comparisons(evals: Sequence[Evaluation], num_resamples: int = 10000) -> list:
  """Markdown lines: for every pair of methods with per-problem counts of the same problems, the difference of
  pass@1 and pass@N (percentage points, later method − earlier method) with its 95% paired-bootstrap interval
  and two-sided p-value (``metrics.paired_bootstrap``). Several inputs with the same label are seeds of one
  method: two methods with the same number of seeds are paired seed by seed in input order (a two-way bootstrap
  over problems × seeds); with different numbers of seeds the pair is named and not tested. Empty when fewer
  than two methods qualify."""
  from ngrpo_jax import metrics  # pylint: disable=g-import-not-at-top
  rows = [e for e in evals if e.summary.get("per_problem_correct") and e.summary.get("num_samples")]
  rows = [e for e in rows if len(e.summary["per_problem_correct"]) == len(rows[0].summary["per_problem_correct"])
          and e.summary["num_samples"] == rows[0].summary["num_samples"]]
  methods = list(dict.fromkeys(e.method for e in rows))
  if len(methods) < 2:
    return []
  n = int(rows[0].summary["num_samples"])
  seeds = {m: [e for e in rows if e.method == m] for m in methods}

  def values(m, k):
    v = [100.0 * metrics.pass_at_k(n, np.asarray(e.summary["per_problem_correct"]), k) for e in seeds[m]]
    return np.stack(v) if len(v) > 1 else v[0]

  lines = ["", f"Paired comparisons over the same {len(rows[0].summary['per_problem_correct'])} problems "
           "(difference in points, 95% paired-bootstrap interval over problems — and over seeds where a method "
           "has several inputs, paired in input order — two-sided p):", ""]
  for i in range(len(methods)):
    for j in range(i + 1, len(methods)):
      a, b = methods[i], methods[j]
      if len(seeds[a]) != len(seeds[b]):
        lines.append(f"- {b} − {a}: not tested ({len(seeds[b])} vs {len(seeds[a])} seeds cannot be paired)")
        continue
      cells = []
      for k in sorted({1, n}):
        t = metrics.paired_bootstrap(values(a, k), values(b, k), key_or_seed=0, num_resamples=num_resamples)
        cells.append(f"pass@{k} {t.difference:+.2f} [{t.lower:+.2f}, {t.upper:+.2f}], p = {t.p_value:.3g}")
      tag = f" ({len(seeds[a])} seeds)" if len(seeds[a]) > 1 else ""
      lines.append(f"- {b} − {a}{tag}: " + "; ".join(cells))
  return lines


def csv_table(evals: Sequence[Evaluation], ks: Sequence[int]) -> str:
  """CSV with columns method, num_problems, num_samples, pass@k for ``ks``, auc, auc_ci_low, auc_ci_high."""
  values = table_values(evals, ks)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["method", "num_problems", "num_samples"] + [f"pass@{k}" for k in ks]
                  + ["auc", "auc_ci_low", "auc_ci_high"])
  for r, e in enumerate(evals):
    interval = e.summary.get("ci", {}).get("auc") or ["", ""]
    writer.writerow([e.method, e.summary.get("num_problems", ""), e.summary.get("num_samples", "")]
                    + ["" if np.isnan(v) else f"{v:.4f}" for v in values[r]]
                    + [f"{x:.4f}" if x != "" else "" for x in interval])
  return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# Figures.


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def plot_pass_at_k(dataset: str, evals: Sequence[Evaluation], path) -> None:
  """pass@k (%) against k on a log2 axis, one line per method (label with its AUC), CI bands if present."""
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  max_k = 1
  for e in evals:
    ks = np.array(sorted(int(k) for k in e.summary["pass_at_k"]))
    ys = np.array([e.summary["pass_at_k"][str(k)] for k in ks])
    max_k = max(max_k, int(ks[-1]))
    auc = e.summary.get("auc")
    label = e.method + (f" (AUC {auc:.2f})" if auc is not None else "")
    (line,) = ax.plot(ks, ys, label=label, linewidth=1.8)
    grid = [int(k) for k in e.summary.get("auc_ks", []) if str(k) in e.summary.get("ci", {})]
    if grid:
      lo = [e.summary["ci"][str(k)][0] for k in grid]
      hi = [e.summary["ci"][str(k)][1] for k in grid]
      ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
      ax.plot(grid, [e.summary["pass_at_k"][str(k)] for k in grid], "o", color=line.get_color(), markersize=3.5)
  ax.set_xscale("log", base=2)
  ticks = [1 << i for i in range(max_k.bit_length()) if (1 << i) <= max_k]
  ax.set_xticks(ticks)
  ax.set_xticklabels([str(t) for t in ticks])
  ax.set_xlim(1, max_k)
  ax.set_xlabel("k (samples per problem, log scale)")
  ax.set_ylabel("pass@k (%)")
  ax.set_title(f"{dataset}: pass@k ({_describe(evals).split(',')[0]})")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "/"))
    else:
      out[key] = v
  return out


def read_metrics(path, phase: Optional[str] = "rl") -> dict:
  """{key: (steps float[T], values float[T])} of the numeric entries of a metrics JSONL file.

  The step is each line's ``step`` (else its line index); nested dicts are flattened with "/"; lines that
  are not JSON objects (e.g. a half-written last line of a killed run) are skipped with a warning. Lines
  with a ``phase`` field other than ``phase`` (e.g. the trainer's "sft" warm-start lines, whose steps
  restart at 0) are skipped; ``phase=None`` keeps all.
  """
  series = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        logging.warning("%s:%d: not JSON, skipped", path, lineno)
        continue
      if not isinstance(rec, dict):
        continue
      if phase is not None and "phase" in rec and rec["phase"] != phase:
        continue
      rec = _flatten(rec)
      step = rec.get("step", lineno - 1)
      for key, value in rec.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
          continue
        if math.isfinite(value):
          series.setdefault(key, ([], []))
          series[key][0].append(float(step))
          series[key][1].append(float(value))
  return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in series.items()}


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
  if window <= 1 or y.size < window:
    return y
  kernel = np.ones(window) / window
  head = np.cumsum(y[:window - 1]) / np.arange(1, window)
  return np.concatenate([head, np.convolve(y, kernel, mode="valid")])


def training_panels(runs: Sequence[tuple], keys: Optional[Sequence[str]] = None) -> list:
  """[(title, y label, [(run, key, label)])] for the panels (``PANELS``, or one per key of ``keys``) with data
  in some run: one line per quantity and run (its first logged key), so no quantity is drawn twice."""
  specs = [(k, k, ((k, (k,)),)) for k in keys] if keys else PANELS
  panels = []
  for title, ylabel, quantities in specs:
    lines = []
    for run, series in runs:
      for label, candidates in quantities:
        key = next((k for k in candidates if k in series), None)
        if key is not None:
          lines.append((run, key, label))
    if lines:
      panels.append((title, ylabel, lines))
  return panels


def plot_training(runs: Sequence[tuple], path, keys: Optional[Sequence[str]] = None, smooth: int = 1) -> list:
  """Training-curve panels (see ``PANELS``) for ``runs`` = [(run name, read_metrics(...))].

  Returns the list of panel titles drawn (empty: nothing to plot, no file written).
  """
  panels = training_panels(runs, keys)
  if not panels:
    return []
  ncols = 2 if len(panels) > 1 else 1
  nrows = math.ceil(len(panels) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.6 * nrows), dpi=110, squeeze=False)
  single_run = len({run for run, _ in runs}) == 1
  series_by_run = dict(runs)
  run_names = list(series_by_run)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  styles = ("-", "--", ":", "-.")
  for ax, (title, ylabel, lines) in zip(axes.ravel(), panels):
    panel_labels = list(dict.fromkeys(label for _, _, label in lines))
    for run, key, name in lines:
      steps, values = series_by_run[run][key]
      if single_run:  # one colour per quantity
        color, style, label = colors[panel_labels.index(name) % len(colors)], "-", name
      else:  # one colour per run, one line style per quantity
        color = colors[run_names.index(run) % len(colors)]
        style, label = styles[panel_labels.index(name) % len(styles)], f"{run}: {name}"
      marker = "o" if len(steps) <= 30 else None  # short (or single-point) series stay visible
      ax.plot(steps, _smooth(values, smooth), style, color=color, label=label, linewidth=1.4, marker=marker,
              markersize=3)
    ax.set_title(title)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
  for ax in axes.ravel()[len(panels):]:
    ax.set_visible(False)
  if single_run:
    fig.suptitle(f"Training curves: {runs[0][0]}")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return [title for title, _, _ in panels]


# ----------------------------------------------------------------------------------------------------------
# The binary.


def make_report(inputs: Sequence[str], output_dir, *, labels: Optional[Sequence[str]] = None,
                ks: Optional[Sequence[int]] = None, ci: bool = False, metrics_file: str = "metrics.jsonl",
                train_metrics: Optional[Sequence[str]] = None, smooth: int = 1,
                phase: Optional[str] = "rl") -> dict:
  """Writes every table and figure; returns {"markdown": str, "files": [paths]}."""
  out = pathlib.Path(output_dir)
  evals = find_evaluations(inputs, labels)
  runs = [(name, read_metrics(path, phase or None)) for name, path in find_metrics_files(inputs, metrics_file, labels)]
  runs = [(name, series) for name, series in runs if series]
  if not evals and not runs:
    raise ValueError(f"no evaluation ({SUMMARY_FILE} with pass_at_k, or a trainer's eval_after.json) and no "
                     f"{metrics_file} found under {list(inputs)}")
  out.mkdir(parents=True, exist_ok=True)
  files, sections = [], []
  groups = comparable_groups(evals)
  for dataset in sorted({e.dataset for e in evals}):
    mine = [(settings, group) for d, settings, group in groups if d == dataset]
    for i, (settings, group) in enumerate(mine):
      suffix, note = "", ""
      if len(mine) > 1:   # evaluations with other settings: their own table, saying what differs
        suffix = f"_{i + 1}"
        note = (f"Table {i + 1} of {len(mine)} for {dataset}; not compared with the others, whose settings "
                f"differ: {settings_difference(settings, [s for s, _ in mine])}.")
      cols = table_columns(group, ks)
      sections.append(markdown_table(dataset, group, cols, ci=ci, note=note))
      csv_path = out / f"table_{_safe(dataset)}{suffix}.csv"
      csv_path.write_text(csv_table(group, cols))
      png_path = out / f"pass_at_k_{_safe(dataset)}{suffix}.png"
      plot_pass_at_k(dataset, group, png_path)
      files += [csv_path, png_path]
  markdown = "\n".join(sections)
  if evals:
    (out / "tables.md").write_text(markdown)
    files.append(out / "tables.md")
  if runs:
    train_path = out / "training_curves.png"
    drawn = plot_training(runs, train_path, train_metrics, smooth)
    if drawn:
      files.append(train_path)
    else:
      logging.warning("metrics files hold none of the plotted keys; no training_curves.png")
  return {"markdown": markdown, "files": files}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.inputs:
    raise app.UsageError("--inputs is required (comma-separated evaluation or run directories)")
  if not FLAGS.output_dir:
    raise app.UsageError("--output_dir is required")
  if FLAGS.smooth < 1:
    raise app.UsageError(f"--smooth must be >= 1, got {FLAGS.smooth}")
  try:
    ks = [int(k) for k in FLAGS.ks] if FLAGS.ks else None
  except ValueError:
    raise app.UsageError(f"--ks must be integers, got {FLAGS.ks}") from None
  if ks is not None and any(k < 1 for k in ks):
    raise app.UsageError(f"--ks must be >= 1, got {ks}")
  try:
    result = make_report(FLAGS.inputs, FLAGS.output_dir, labels=FLAGS.labels, ks=ks, ci=FLAGS.ci,
                         metrics_file=FLAGS.metrics_file, train_metrics=FLAGS.train_metrics, smooth=FLAGS.smooth,
                         phase=FLAGS.phase)
  except (FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  print(result["markdown"])
  for path in result["files"]:
    print(f"wrote {path}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
