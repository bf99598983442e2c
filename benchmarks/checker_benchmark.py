"""Scores the answer checker on a labelled case file (JSONL with gold, pred, equivalent, kind).

    python benchmarks/checker_benchmark.py [--cases PATH] [--num_workers 2] [--timeout 1.0]
                                           [--compare_math_verify]

Reports accuracy overall and per kind, false positives / negatives, timeouts, median / p99 latency per
check (measured inside the batch, i.e. under contention) and throughput of ``grading.grade_batch`` on
``--num_workers`` processes. ``--compare_math_verify`` grades the same cases with HuggingFace Math-Verify
(a test-only dependency, never imported by the library) for a side-by-side comparison.
"""
import argparse
import collections
import json
import pathlib
import statistics
import sys
import time

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(_REPO_ROOT))

from ngrpo_jax import grading  # pylint: disable=wrong-import-position


def load_cases(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _percentile(values, q):
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(name, cases, verdicts, latencies, timeouts, wall):
  """Prints and returns the metrics for one checker."""
  correct = [v == c["equivalent"] for c, v in zip(cases, verdicts)]
  fp = [c["id"] for c, v in zip(cases, verdicts) if v and not c["equivalent"]]
  fn = [c["id"] for c, v in zip(cases, verdicts) if not v and c["equivalent"]]
  per_kind = collections.defaultdict(list)
  for c, ok in zip(cases, correct):
    per_kind[c.get("kind", "?")].append(ok)
  metrics = {
      "checker": name, "cases": len(cases), "accuracy": sum(correct) / len(cases),
      "false_positives": len(fp), "false_negatives": len(fn), "timeouts": timeouts,
      "median_latency_s": statistics.median(latencies), "p99_latency_s": _percentile(latencies, 0.99),
      "max_latency_s": max(latencies), "checks_per_s": len(cases) / wall,
      "adversarial_false_positives": sum(1 for c, v in zip(cases, verdicts)
                                         if v and not c["equivalent"] and c.get("kind") == "adversarial"),
  }
  print(f"== {name}")
  print(f"accuracy {metrics['accuracy']:.4f} ({sum(correct)}/{len(cases)})  FP {len(fp)} {fp}  FN {len(fn)} {fn}"
        f"  timeouts {timeouts}")
  print(f"latency median {metrics['median_latency_s'] * 1e3:.1f} ms  p99 {metrics['p99_latency_s'] * 1e3:.1f} ms"
        f"  max {metrics['max_latency_s'] * 1e3:.1f} ms  throughput {metrics['checks_per_s']:.1f} checks/s")
  for kind in sorted(per_kind):
    oks = per_kind[kind]
    print(f"  {kind:20s} {sum(oks) / len(oks):7.3f}  ({sum(oks)}/{len(oks)})")
  return metrics


def run_ours(cases, num_workers, timeout):
  pool = grading.WorkerPool(num_workers)
  pool.warm_up()
  try:
    start = time.perf_counter()
    results = grading.grade_batch([c["gold"] for c in cases], [c["pred"] for c in cases], timeout=timeout,
                                  pool=pool)
    wall = time.perf_counter() - start
  finally:
    pool.close()
  return summarize("ngrpo_jax.grading", cases, [r.equivalent for r in results], [r.seconds for r in results],
                   sum(r.timed_out for r in results), wall), results


def _delimit(text):
  """Math-Verify only reads LaTeX inside delimiters/boxes; wrap bare short answers for a fair comparison."""
  if "$" in text or "\\boxed" in text or "\\(" in text or len(text) > 100:
    return text
  return "$" + text + "$"


def _math_verify_one(gold, pred, timeout):
  from math_verify import parse, verify  # pylint: disable=import-outside-toplevel
  try:
    gold_parsed = parse(_delimit(gold), parsing_timeout=int(max(1, timeout)))
    pred_parsed = parse(_delimit(pred), parsing_timeout=int(max(1, timeout)))
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=int(max(1, timeout))))
  except Exception:  # pylint: disable=broad-except
    return False


def _math_verify_task(args):
  gold, pred, timeout = args
  start = time.perf_counter()
  verdict = _math_verify_one(gold, pred, timeout)
  return verdict, time.perf_counter() - start


def run_math_verify(cases, num_workers, timeout):
  import multiprocessing  # pylint: disable=import-outside-toplevel
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(num_workers) as mp_pool:
    mp_pool.map(_math_verify_task, [("1", "1", timeout)] * num_workers)  # warm up imports
    start = time.perf_counter()
    out = mp_pool.map(_math_verify_task, [(c["gold"], c["pred"], timeout) for c in cases], chunksize=1)
    wall = time.perf_counter() - start
  return summarize("math_verify", cases, [v for v, _ in out], [s for _, s in out], 0, wall)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default=str(_REPO_ROOT.parent / "shared" / "checker_cases_public.jsonl"))
  parser.add_argument("--num_workers", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=1.0)
  parser.add_argument("--compare_math_verify", action="store_true")
  parser.add_argument("--show_errors", action="store_true", help="print every misgraded case")
  parser.add_argument("--json_out", default="", help="optional path for the metrics as JSON")
  args = parser.parse_args(argv)
  cases = load_cases(args.cases)
  metrics, results = run_ours(cases, args.num_workers, args.timeout)
  if args.show_errors:
    for c, r in zip(cases, results):
      if r.equivalent != c["equivalent"]:
        print(f"  MISS id={c['id']} kind={c.get('kind')} label={c['equivalent']} gold={c['gold']!r} "
              f"pred={r.pred_answer!r} rule={r.rule} reason={r.reason}")
  all_metrics = [metrics]
  if args.compare_math_verify:
    all_metrics.append(run_math_verify(cases, args.num_workers, args.timeout))
  if args.json_out:
    pathlib.Path(args.json_out).write_text(json.dumps(all_metrics, indent=2))
  return all_metrics


if __name__ == "__main__":
  main()
