r"""Compares the RL metrics of two runs step by step (e.g. the same preset before and after a trainer change).

  python -m experiments.compare_runs --reference=runs/old_smoke --candidate=runs/new_smoke

Prints, for every metric both ``metrics.jsonl`` files log (timings, throughput, compile counts, wasted
speculative draws and the sampler / scorer log-prob gap excluded;
``--rename old=new`` maps renamed metrics), the largest absolute and relative difference over the common
RL steps, and exits 1 when a difference exceeds ``--rtol`` / ``--atol``.
"""
import json
import math
import pathlib
import sys

from absl import app
from absl import flags

_REFERENCE = flags.DEFINE_string("reference", None, "Workdir of the reference run.", required=True)
_CANDIDATE = flags.DEFINE_string("candidate", None, "Workdir of the run to compare.", required=True)
_RENAME = flags.DEFINE_multi_string("rename", ["pg_loss=loss/policy_gradient"], "old=new metric names.")
_RTOL = flags.DEFINE_float("rtol", 1e-4, "Relative tolerance.")
_ATOL = flags.DEFINE_float("atol", 1e-5, "Absolute tolerance.")

# Wall-clock dependent (timings, speculation waste) or float noise by definition (logp_gap: the sampler's and
# the scorer's log-probs of the same tokens, two XLA programs, ~1e-5 apart).
_VOLATILE = ("time/", "share/", "tokens_per_sec", "compiles/", "sampling/discarded_draws", "logp_gap/")


def load_rl_metrics(workdir) -> dict:
  """{step: metrics} of the RL phase of a run's ``metrics.jsonl``."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return {r["step"]: r for r in rows if r.get("phase") == "rl"}


def compare(reference: dict, candidate: dict, rename: dict) -> dict:
  """{metric: (max abs diff, max rel diff, steps compared)} over the common steps and metrics."""
  out = {}
  for step in sorted(set(reference) & set(candidate)):
    ref, cand = reference[step], candidate[step]
    for key, value in ref.items():
      new_key = rename.get(key, key)
      if key in ("step", "phase") or key.startswith(_VOLATILE) or new_key not in cand:
        continue
      if not isinstance(value, (int, float)) or not isinstance(cand[new_key], (int, float)):
        continue
      diff = abs(float(cand[new_key]) - float(value))
      rel = diff / max(abs(float(value)), 1e-12)
      a, r, n = out.get(key, (0.0, 0.0, 0))
      out[key] = (max(a, diff), max(r, rel if diff > 0 else 0.0), n + 1)
  return out


def main(argv):
  del argv
  rename = dict(item.split("=", 1) for item in _RENAME.value)
  ref, cand = load_rl_metrics(_REFERENCE.value), load_rl_metrics(_CANDIDATE.value)
  steps = sorted(set(ref) & set(cand))
  if not steps:
    print("no common RL steps", file=sys.stderr)
    return 1
  result = compare(ref, cand, rename)
  bad = {k: v for k, v in result.items() if v[0] > _ATOL.value + _RTOL.value * max(
      abs(float(ref[s][k])) for s in steps if k in ref[s]) or not math.isfinite(v[0])}
  print(f"{len(steps)} common RL steps, {len(result)} metrics compared; "
        f"largest relative difference {max((v[1] for v in result.values()), default=0):.2e} "
        f"({max(result, key=lambda k: result[k][1]) if result else '-'})")
  for key in sorted(bad):
    print(f"  DIFFERS {key}: max abs {bad[key][0]:.3e}, max rel {bad[key][1]:.3e}")
  return 1 if bad else 0


if __name__ == "__main__":
  app.run(main)
