"""Where an RL step's wall time goes: sampling / grading / scoring / update, their shares, grading overlap.

One RL step of the loop is, on the main thread,

    step = sampling + grading_wait + scoring + update + diagnostics + other

  sampling      sampler calls (prefill + decode loop), every draw of the step;
  grading_wait  time blocked on grades (decode + grade run on a background thread when the rollout's
                ``pipeline_grading`` is on, in line otherwise);
  scoring       old log-probs / entropies (and reference log-probs, values) of the assembled batch;
  update        the jitted train step (all PPO epochs and minibatches);
  diagnostics   the periodic per-group gradient-norm diagnostic;
  other         host glue (batch assembly, placement, advantages, metrics).

``grading`` is the grading work itself wherever it ran; ``grading_overlap = grading − grading_wait`` is the
part hidden behind other work (0 in the sequential path).  Shares are fractions of ``step``.

:class:`BreakdownAccumulator` sums per-step metrics (the ``time/*`` keys the rollout and the loop write) and
the per-step compile counts, separately for warm-up steps and the rest, into a JSON-friendly summary.
"""
from typing import Mapping, Optional

PHASES = ("sampling", "grading_wait", "scoring", "update", "diagnostics", "other")


def step_phases(metrics: Mapping[str, float]) -> dict:
  """Per-step phase seconds from a step's metrics (``time/step`` and the ``time/<phase>`` keys).

  Returns ``{"step", *PHASES, "grading", "grading_overlap"}`` in seconds; ``other`` is what the named
  phases leave of ``time/step`` (never negative).
  """
  if "time/step" not in metrics:
    raise ValueError("metrics need 'time/step' (the step's wall time)")
  out = {"step": float(metrics["time/step"])}
  for phase in PHASES[:-1]:
    out[phase] = float(metrics.get(f"time/{phase}", 0.0))
  out["other"] = max(out["step"] - sum(out[p] for p in PHASES[:-1]), 0.0)
  out["grading"] = float(metrics.get("time/grading", out["grading_wait"]))
  out["grading_overlap"] = max(out["grading"] - out["grading_wait"], 0.0)
  return out


def shares(phases: Mapping[str, float]) -> dict:
  """``{phase: seconds / step seconds}`` for ``PHASES`` (0 when the step time is 0)."""
  total = phases.get("step", 0.0)
  return {p: (phases.get(p, 0.0) / total if total > 0 else 0.0) for p in PHASES}


class BreakdownAccumulator:
  """Sums step phases and compile counts over an RL run (one invocation).

  Args:
    warmup_steps: the first ``warmup_steps`` recorded steps count as warm-up (their compilations are
      expected; any later compilation is a recompilation).
  """

  def __init__(self, warmup_steps: int = 1):
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
      raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    self.warmup_steps = warmup_steps
    self._sums = {"warmup": {}, "steady": {}}
    self._steps = {"warmup": 0, "steady": 0}
    self._compiles = {"warmup": 0, "steady": 0}
    self._compile_s = {"warmup": 0.0, "steady": 0.0}
    self._recompiled = {}

  @property
  def steps(self) -> int:
    return self._steps["warmup"] + self._steps["steady"]

  def is_warmup(self) -> bool:
    """Whether the next recorded step is a warm-up step."""
    return self.steps < self.warmup_steps

  def add(self, metrics: Mapping[str, float], compiles: int = 0, compile_seconds: float = 0.0,
          compiled_names: Optional[Mapping[str, int]] = None) -> dict:
    """Records one step; returns its phases (seconds) and shares as flat metrics
    (``share/<phase>``, ``time/other``, ``time/grading_overlap``)."""
    part = "warmup" if self.is_warmup() else "steady"
    phases = step_phases(metrics)
    sums = self._sums[part]
    for k, v in phases.items():
      sums[k] = sums.get(k, 0.0) + v
    self._steps[part] += 1
    self._compiles[part] += int(compiles)
    self._compile_s[part] += float(compile_seconds)
    if part == "steady":
      for name, n in (compiled_names or {}).items():
        self._recompiled[name] = self._recompiled.get(name, 0) + int(n)
    out = {f"share/{p}": v for p, v in shares(phases).items()}
    out["time/other"] = phases["other"]
    out["time/grading_overlap"] = phases["grading_overlap"]
    return out

  def _part(self, names) -> dict:
    steps = sum(self._steps[n] for n in names)
    sums = {}
    for n in names:
      for k, v in self._sums[n].items():
        sums[k] = sums.get(k, 0.0) + v
    seconds = {k: sums.get(k, 0.0) for k in ("step",) + PHASES + ("grading", "grading_overlap")}
    return {
        "steps": steps,
        "seconds": seconds,
        "seconds_per_step": {k: (v / steps if steps else 0.0) for k, v in seconds.items()},
        "share": shares(seconds),
        "grading_hidden_frac": seconds["grading_overlap"] / seconds["grading"] if seconds["grading"] > 0
                               else 0.0,
    }

  def summary(self) -> dict:
    """``{"all": ..., "after_warmup": ..., "compiles": ...}`` (JSON-friendly)."""
    return {
        "all": self._part(("warmup", "steady")),
        "after_warmup": self._part(("steady",)),
        "compiles": {"warmup_steps": min(self.warmup_steps, self.steps), "warmup": self._compiles["warmup"],
                     "after_warmup": self._compiles["steady"],
                     "warmup_seconds": self._compile_s["warmup"],
                     "after_warmup_seconds": self._compile_s["steady"],
                     "after_warmup_by_function": dict(self._recompiled)},
    }


def format_summary(summary: dict) -> str:
  """One console paragraph of :meth:`BreakdownAccumulator.summary`."""
  c = summary["compiles"]
  part, label = summary["after_warmup"], "after warm-up"
  if part["steps"] == 0:
    part, label = summary["all"], "incl. warm-up"
  sec, per, sh = part["seconds"], part["seconds_per_step"], part["share"]
  names = {"sampling": "sampling", "grading_wait": "grading wait", "scoring": "scoring", "update": "update",
           "diagnostics": "diagnostics", "other": "other"}
  phases = " | ".join(f"{names[p]} {per[p]:.3f}s ({100 * sh[p]:.1f}%)" for p in PHASES)
  recompiled = ", ".join(f"{k}×{v}" for k, v in sorted(c["after_warmup_by_function"].items()))
  return (f"[rl] step breakdown over {part['steps']} steps ({label}), mean {per['step']:.3f}s/step: {phases}; "
          f"grading {per['grading']:.3f}s/step, {per['grading_overlap']:.3f}s of it overlapped "
          f"({100 * part['grading_hidden_frac']:.0f}%, {sec['grading_overlap']:.1f}s in total); "
          f"XLA compilations: {c['warmup']} in {c['warmup_steps']} warm-up step(s) ({c['warmup_seconds']:.1f}s), "
          f"{c['after_warmup']} after" + (f" ({recompiled})" if recompiled else ""))
