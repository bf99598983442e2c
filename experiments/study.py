r"""Runs a study: one warm-start shared by every arm → learning rates tuned per arm on a validation split →
arms × seeds on the test split → tables, paired comparisons, verdicts and figures.

  python -m experiments.study --study=experiments/studies/ngrpo_replication.py:reduced --workdir=runs/study_reduced
  python -m experiments.study --study=experiments/studies/ngrpo_replication.py:full --workdir=runs/study --parallel=2
  python -m experiments.study --study=... --workdir=... --report_only      # tables from the runs that finished
  python -m experiments.study --study=... --workdir=... --compare_to=docs/replication/reduced
  python -m experiments.study --study=... --workdir=... --restore_from=docs/replication/full  # resume elsewhere

A study file defines ``get_study(arg) -> Study`` (:class:`Study`: the warm-start run, the recipe every arm
shares, the arms, the seeds, the tuning budget). The runner is resumable: a run whose ``result.json`` exists
is skipped, an interrupted one resumes from its checkpoints (``training.loop``), so re-running the same
command after an interruption (or with more seeds / arms) only does what is missing. Every run is a separate
process (``--parallel`` at a time) running ``training.loop.run`` — the same code path as
``experiments.train``.

Layout of ``--workdir``::

  warm_start/            the supervised warm-start (``Study.warm_start``), its evaluation (the "base" row) and
                         hf_export/ (the checkpoint every arm starts from)
  tune/<arm>/lr<lr>/     tuning runs (validation split; ``Study.tuning``)      tuning.json: the choices
  runs/<arm>/s<seed>/    the study's runs (test split)
  results/               what ``experiments.study_report`` writes: report.md, figures, study.json and
                         runs/*.json (every finished run's result.json, small; committed, they let
                         ``--restore_from`` resume the study on another machine)
Each run directory holds the trainer's outputs plus ``run_spec.json`` (its config and kind) and, once done,
``result.json`` (the evaluation, the training curves, the per-problem solve rates on the RL pool).
"""
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

_STUDY = flags.DEFINE_string("study", None, "Study file[:arg], e.g. experiments/studies/ngrpo_replication.py:reduced.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the study (runs, checkpoints, results).")
_PARALLEL = flags.DEFINE_integer("parallel", 2, "Runs at a time (each a separate process).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only write the report from the finished runs.")
_RESULTS = flags.DEFINE_string("results", None, "Where the report goes (default <workdir>/results).")
_COMPARE_TO = flags.DEFINE_string("compare_to", None, "A committed results directory of the same study: "
                                  "check that this run's numbers fall within its confidence intervals.")
_RESTORE_FROM = flags.DEFINE_string(
    "restore_from", None, "A results directory of the same study (e.g. docs/replication/full): its committed "
    "per-run results count as finished runs here, so the study resumes on a machine that lost its workdir.")
_ONLY = flags.DEFINE_list("only", None, "Run only these arms (the warm-start and their tuning included).")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Internal: run the one run described by <run_dir>/run_spec.json.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
  from experiments import study_report  # pylint: disable=g-import-not-at-top  (imports JAX)
  from experiments import study_runner  # pylint: disable=g-import-not-at-top
  if _RUN_DIR.value:
    logging.set_verbosity(logging.WARNING)   # orbax's per-file INFO lines stay out of run.log
    study_runner.run_one(_RUN_DIR.value)
    return 0
  if not _STUDY.value or not _WORKDIR.value:
    print("error: --study and --workdir are required", file=sys.stderr)
    return 2
  try:
    study = study_runner.load_study(_STUDY.value)
  except (ValueError, KeyError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  results = pathlib.Path(_RESULTS.value or pathlib.Path(_WORKDIR.value) / "results")
  if _RESTORE_FROM.value:
    try:
      restored = study_runner.restore_results(study, _WORKDIR.value, _RESTORE_FROM.value)
    except ValueError as e:
      print(f"error: --restore_from: {e}", file=sys.stderr)
      return 2
    print(f"[study] restored {len(restored)} finished run(s) from {_RESTORE_FROM.value}")
  if not _REPORT_ONLY.value:
    stats = study_runner.run_study(study, _WORKDIR.value, parallel=_PARALLEL.value, only=_ONLY.value)
    print(f"[study] {study.name}: {stats['wall_seconds'] / 60:.1f} min wall in this invocation")
  if _RESTORE_FROM.value and study_runner.warm_start_matches(_WORKDIR.value, _RESTORE_FROM.value) is False:
    print(f"[study] WARNING: this warm-start's evaluation differs from the one committed in {_RESTORE_FROM.value}:"
          " restored runs started from that one, new runs from this one", file=sys.stderr)
  study_report.write_report(study, _WORKDIR.value, results, study_spec=_STUDY.value)
  print(f"[study] report: {results / 'report.md'}")
  if _COMPARE_TO.value:
    ok, lines = study_report.compare_results(results, pathlib.Path(_COMPARE_TO.value))
    print("\n".join(lines))
    return 0 if ok else 1
  return 0


if __name__ == "__main__":
  app.run(main)
