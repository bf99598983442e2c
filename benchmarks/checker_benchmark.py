"""Scores the answer checker on a labelled case file (JSONL or JSONL.gz with gold, pred, equivalent, kind).

    python benchmarks/checker_benchmark.py [--cases PATH] [--split tune|heldout] [--num_workers 2]
        [--timeout 1.0] [--background_load 2] [--compare_math_verify] [--backend sympy|math_verify]
        [--disagreements PATH]

``--cases corpus`` is shorthand for the generated corpus ``benchmarks/data/checker_corpus.jsonl.gz`` (see
``benchmarks/make_checker_corpus.py``); ``--split`` keeps one side of its split. ``--cases heldout_v2`` is the
fresh held-out corpus ``benchmarks/data/checker_heldout_v2.jsonl.gz`` (``benchmarks/make_checker_heldout_v2.py``:
held-out golds only, new rewrite families; measured once before and once after the checker changes, never
used for tuning). ``--background_load N`` runs
N busy-looping processes during the measurement (the load of a real RL step on the same cores).

Reports accuracy overall and per kind, false positives / negatives, timeouts, median / p99 latency per
check (measured inside the batch, i.e. under contention) and throughput of ``grading.grade_batch`` on
``--num_workers`` processes. ``--compare_math_verify`` grades the same cases with HuggingFace Math-Verify
(a test-only dependency, never imported by the library) for a side-by-side comparison.
"""
import argparse
import collections
import gzip
import json
import multiprocessing
import pathlib
import statistics
import sys
import time

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
  sys.path.insert(0, str(_REPO_ROOT))

from ngrpo_jax import grading  # pylint: disable=wrong-import-position


_CORPUS = _REPO_ROOT / "benchmarks" / "data" / "checker_corpus.jsonl.gz"
_HELDOUT_V2 = _REPO_ROOT / "benchmarks" / "data" / "checker_heldout_v2.jsonl.gz"
_NAMED = {"corpus": _CORPUS, "heldout_v2": _HELDOUT_V2}


def load_cases(path, split=""):
  """Cases of a JSONL / JSONL.gz file, optionally one split only. Named files: ``"corpus"`` (the generated
  corpus, tune + held-out) and ``"heldout_v2"`` (the fresh held-out corpus, ``make_checker_heldout_v2.py``)."""
  path = _NAMED[path] if path in _NAMED else pathlib.Path(path)
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    cases = [json.loads(line) for line in f if line.strip()]
  if split:
    cases = [c for c in cases if c.get("split") == split]
  if not cases:
    raise ValueError(f"no cases in {path} (split {split!r})")
  return cases


def _busy_loop(stop):
  x = 0
  while not stop.is_set():
    for _ in range(10000):
      x = (x * 1103515245 + 12345) % 2147483648


class BackgroundLoad:
  """``n`` processes spinning on the CPU while the benchmark runs (context manager)."""

  def __init__(self, n):
    self.n = n
    self._ctx = multiprocessing.get_context("spawn")
    self._stop = self._ctx.Event()
    self._procs = []

  def __enter__(self):
    self._procs = [self._ctx.Process(target=_busy_loop, args=(self._stop,), daemon=True) for _ in range(self.n)]
    for p in self._procs:
      p.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    for p in self._procs:
      p.join(timeout=5)
      if p.is_alive():
        p.kill()


def _percentile(values, q):
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(name, cases, verdicts, latencies, timeouts, wall, timed_out=None):
  """Prints and returns the metrics for one checker (and per split, when the cases have several).

  ``timed_out``: per-case time-out flags (for the per-split counts; default: latency >= 1 s is not assumed,
  the split rows then omit time-outs)."""
  correct = [v == c["equivalent"] for c, v in zip(cases, verdicts)]
  fp = [c["id"] for c, v in zip(cases, verdicts) if v and not c["equivalent"]]
  fn = [c["id"] for c, v in zip(cases, verdicts) if not v and c["equivalent"]]
  per_kind = collections.defaultdict(list)
  for c, ok in zip(cases, correct):
    per_kind[c.get("kind", "?")].append(ok)
  fp_transforms = collections.Counter(c.get("transform", c.get("kind", "?")) for c, v in zip(cases, verdicts)
                                      if v and not c["equivalent"])
  fn_transforms = collections.Counter(c.get("transform", c.get("kind", "?")) for c, v in zip(cases, verdicts)
                                      if not v and c["equivalent"])
  metrics = {
      "checker": name, "cases": len(cases), "accuracy": sum(correct) / len(cases),
      "false_positives": len(fp), "false_negatives": len(fn), "timeouts": timeouts,
      "median_latency_s": statistics.median(latencies), "p99_latency_s": _percentile(latencies, 0.99),
      "max_latency_s": max(latencies), "checks_per_s": len(cases) / wall,
      "adversarial_false_positives": sum(1 for c, v in zip(cases, verdicts)
                                         if v and not c["equivalent"] and c.get("kind") == "adversarial"),
  }
  print(f"== {name}")
  print(f"accuracy {metrics['accuracy']:.4f} ({sum(correct)}/{len(cases)})  FP {len(fp)} {fp[:20]}  "
        f"FN {len(fn)} {fn[:20]}  timeouts {timeouts}")
  if fp_transforms:
    print(f"  FP by transform: {dict(fp_transforms.most_common())}")
  if fn_transforms:
    print(f"  FN by transform: {dict(fn_transforms.most_common())}")
  print(f"latency median {metrics['median_latency_s'] * 1e3:.1f} ms  p99 {metrics['p99_latency_s'] * 1e3:.1f} ms"
        f"  max {metrics['max_latency_s'] * 1e3:.1f} ms  throughput {metrics['checks_per_s']:.1f} checks/s")
  splits = sorted({c.get("split", "") for c in cases})
  if len(splits) > 1:
    metrics["splits"] = {}
    for split in splits:
      idx = [k for k, c in enumerate(cases) if c.get("split", "") == split]
      ok = sum(correct[k] for k in idx)
      s_fp = sum(1 for k in idx if verdicts[k] and not cases[k]["equivalent"])
      s_fn = sum(1 for k in idx if not verdicts[k] and cases[k]["equivalent"])
      s_to = sum(1 for k in idx if timed_out[k]) if timed_out is not None else None
      lat = [latencies[k] for k in idx]
      metrics["splits"][split] = {"cases": len(idx), "accuracy": ok / len(idx), "false_positives": s_fp,
                                  "false_negatives": s_fn, "timeouts": s_to,
                                  "median_latency_s": statistics.median(lat), "p99_latency_s": _percentile(lat, 0.99),
                                  "max_latency_s": max(lat)}
      print(f"  split {split}: accuracy {ok / len(idx):.4f} ({ok}/{len(idx)})  FP {s_fp}  FN {s_fn}  timeouts {s_to}"
            f"  median {statistics.median(lat) * 1e3:.1f} ms  p99 {_percentile(lat, 0.99) * 1e3:.1f} ms"
            f"  max {max(lat) * 1e3:.1f} ms")
  for kind in sorted(per_kind):
    oks = per_kind[kind]
    print(f"  {kind:20s} {sum(oks) / len(oks):7.3f}  ({sum(oks)}/{len(oks)})")
  return metrics


def run_ours(cases, num_workers, timeout, backend="sympy"):
  pool = grading.WorkerPool(num_workers)
  pool.warm_up()
  try:
    start = time.perf_counter()
    results = grading.grade_batch([c["gold"] for c in cases], [c["pred"] for c in cases], timeout=timeout,
                                  pool=pool, backend=backend)
    wall = time.perf_counter() - start
  finally:
    pool.close()
  name = "ngrpo_jax.grading" + ("" if backend == "sympy" else f" (backend {backend})")
  return summarize(name, cases, [r.equivalent for r in results], [r.seconds for r in results],
                   sum(r.timed_out for r in results), wall, [r.timed_out for r in results]), results


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
  metrics = summarize("math_verify", cases, [v for v, _ in out], [s for _, s in out],
                       sum(s >= timeout for _, s in out), wall, [s >= timeout for _, s in out])
  return metrics, [v for v, _ in out]


def print_slowest(cases, results, n, hide_text=False):
  """Lists the ``n`` slowest checks of our checker (the ones a loaded machine turns into time-outs), slowest
  first. Policy: gold and extracted answer are printed only for tune-side cases; for a held-out case (split
  "heldout", or every case of a held-out file when ``hide_text``) only id, kind/transform, seconds and the
  deciding rule, so that finding slow forms never shows held-out answers to whoever tunes the checker."""
  order = sorted(range(len(cases)), key=lambda k: -results[k].seconds)[:n]
  print(f"== {len(order)} slowest checks (ngrpo_jax.grading)")
  for k in order:
    c, r = cases[k], results[k]
    line = (f"  {r.seconds * 1e3:8.1f} ms  id={c.get('id')} split={c.get('split', '')} "
            f"kind={c.get('kind')}/{c.get('transform')} timed_out={r.timed_out} rule={r.rule}")
    if not hide_text and c.get("split", "") != "heldout":
      line += f" gold={c['gold']!r} pred={r.pred_answer!r}"
    print(line)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default=str(_REPO_ROOT.parent / "shared" / "checker_cases_public.jsonl"),
                      help='a JSONL(.gz) case file, "corpus" (generated corpus) or "heldout_v2" (fresh held-out corpus)')
  parser.add_argument("--split", default="", help="keep only cases of this split (tune / heldout)")
  parser.add_argument("--background_load", type=int, default=0, help="busy processes running meanwhile")
  parser.add_argument("--backend", default="sympy", help="grading backend for our checker (sympy / math_verify)")
  parser.add_argument("--disagreements", default="", help="write cases where we and Math-Verify differ (JSONL)")
  parser.add_argument("--num_workers", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=1.0)
  parser.add_argument("--compare_math_verify", action="store_true")
  parser.add_argument("--show_errors", action="store_true", help="print every misgraded case")
  parser.add_argument("--slowest", type=int, default=0,
                      help="list the N slowest checks of our checker (text shown for non-held-out cases only)")
  parser.add_argument("--json_out", default="", help="optional path for the metrics as JSON")
  args = parser.parse_args(argv)
  cases = load_cases(args.cases, args.split)
  print(f"{len(cases)} cases from {args.cases}" + (f" (split {args.split})" if args.split else "")
        + f", {args.num_workers} workers, timeout {args.timeout} s, background load {args.background_load}")
  with BackgroundLoad(args.background_load):
    metrics, results = run_ours(cases, args.num_workers, args.timeout, args.backend)
    all_metrics = [metrics]
    if args.compare_math_verify:
      mv_metrics, mv_verdicts = run_math_verify(cases, args.num_workers, args.timeout)
      all_metrics.append(mv_metrics)
  if args.show_errors:
    for c, r in zip(cases, results):
      if r.timed_out or r.seconds > 0.5:
        print(f"  SLOW {r.seconds:.2f}s id={c['id']} timed_out={r.timed_out} gold={c['gold']!r} "
              f"pred={r.pred_answer!r} rule={r.rule} reason={r.reason}")
      if r.equivalent != c["equivalent"]:
        print(f"  MISS id={c['id']} kind={c.get('kind')}/{c.get('transform')} label={c['equivalent']} "
              f"gold={c['gold']!r} pred={r.pred_answer!r} rule={r.rule} reason={r.reason}")
  if args.slowest > 0:
    print_slowest(cases, results, args.slowest, hide_text=args.cases == "heldout_v2")
  if args.compare_math_verify and args.disagreements:
    with open(args.disagreements, "w", encoding="utf-8") as f:
      for c, r, v in zip(cases, results, mv_verdicts):
        if r.equivalent != v:
          f.write(json.dumps({**c, "ours": r.equivalent, "math_verify": v, "pred_answer": r.pred_answer,
                              "rule": r.rule, "reason": r.reason}) + "\n")
  if args.json_out:
    pathlib.Path(args.json_out).write_text(json.dumps(all_metrics, indent=2))
  return all_metrics


if __name__ == "__main__":
  main()
