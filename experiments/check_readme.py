r"""Checks the README's headline table against a run of the default experiment.

The table under "## What the default demonstrates" must hold, row for row and to the printed precision, what
``python -m experiments.report`` computes from that run's ``eval_before.json`` / ``eval_after.json``
(pass@1 … pass@16, the Pass@k AUC, never / always-solved shares)::

  python -m experiments.train --workdir=/tmp/default        # the README's command (make demo)
  python -m experiments.check_readme --workdir=/tmp/default  # exit 0: the README's numbers; 1: the differences

The numbers depend on the machine's float rounding (README), so a run elsewhere may differ by a little;
``tests/test_train_binary.py::test_readme_table_is_what_the_default_run_prints`` (slow) runs both commands.
"""
import pathlib
import re
import sys

from absl import app
from absl import flags

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## What the default demonstrates"
COLUMNS = ("pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "AUC", "never / always solved")


def readme_table(text: str) -> dict:
  """{row label: [cell text]} of the first markdown table after ``SECTION`` (header and rule skipped)."""
  if SECTION not in text:
    raise ValueError(f"the README has no {SECTION!r} section")
  rows, started = {}, False
  for line in text.split(SECTION, 1)[1].splitlines():
    if line.startswith("|"):
      started = True
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if cells[1:] == list(COLUMNS) or set("".join(cells)) <= set("-:"):
        continue
      rows[cells[0]] = cells[1:]
    elif started:
      break
  if not rows:
    raise ValueError(f"no table found under {SECTION!r}")
  return rows


def run_table(workdir) -> dict:
  """The same rows computed from a trainer workdir: "after the SFT warm-start" and "after <n> NGRPO steps"."""
  import json  # pylint: disable=g-import-not-at-top
  from experiments import report  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  steps = json.loads((workdir / "summary.json").read_text())["rl_steps_done"]
  rows = {}
  for e in report.find_evaluations([str(workdir)], labels=["run"]):
    label = "after the SFT warm-start" if e.method.endswith("(before RL)") else f"after {steps} NGRPO steps"
    s = e.summary
    cells = [f"{s['pass_at_k'][str(k)]:.2f}" if str(k) in s["pass_at_k"] else "–" for k in (1, 2, 4, 8, 16)]
    rows[label] = cells + [
        f"{s['auc']:.2f}", f"{s['never_solved_share']:.1f}% / {s['always_solved_share']:.1f}%"]
  return rows


def differences(readme: dict, run: dict) -> list:
  """One line per README cell that the run does not reproduce (and per row missing on either side)."""
  out = []
  for label in sorted(set(readme) | set(run)):
    if label not in run or label not in readme:
      out.append(f"row {label!r}: {'only in the README' if label not in run else 'not in the README'}")
      continue
    for column, want, got in zip(COLUMNS, readme[label], run[label]):
      if re.sub(r"\s+", " ", want) != got:
        out.append(f"{label} / {column}: README {want}, run {got}")
  return out


def main(argv):
  del argv
  diffs = differences(readme_table(README.read_text()), run_table(flags.FLAGS.workdir))
  for line in diffs:
    print(line)
  print("README table reproduced" if not diffs else f"{len(diffs)} README cell(s) not reproduced")
  sys.exit(1 if diffs else 0)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", "runs/default", "A finished run of `python -m experiments.train`.")
  app.run(main)
