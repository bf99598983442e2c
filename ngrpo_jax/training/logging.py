"""Metric writers: one console line per step, a JSONL file and TensorBoard event files (tensorboardX)."""
import json
import math
import pathlib
import sys
from typing import Mapping, Optional

import numpy as np

# Console line: (metric key, short label, format).
_CONSOLE = (
    ("accuracy", "acc", "{:.3f}"), ("reward_mean", "R", "{:.3f}"), ("parseable_frac", "fmt", "{:.2f}"),
    ("groups/all_wrong_frac", "wrong", "{:.2f}"), ("groups/all_correct_frac", "right", "{:.2f}"),
    ("sampling/refills", "refill", "{:d}"), ("pg/clip_frac_pos", "clip+", "{:.3f}"),
    ("pg/clip_frac_neg", "clip-", "{:.3f}"), ("policy_entropy", "H", "{:.3f}"),
    ("format/end_token_prob", "p_end", "{:.3f}"), ("grad_norm", "|g|", "{:.3f}"),
    ("response_len_mean", "len", "{:.1f}"), ("time/step", "s", "{:.2f}"), ("compiles/step", "jit", "{:d}"),
)


def _scalar(v):
  try:
    f = float(np.asarray(v))
  except (TypeError, ValueError):
    return None
  return f if math.isfinite(f) else f


class MetricsWriter:
  """Writes scalar metrics to ``<workdir>/metrics.jsonl``, TensorBoard (``<workdir>/tb``) and the console.

  Args:
    workdir: output directory (created).
    tensorboard: also write TensorBoard event files (needs tensorboardX).
    stream: console stream (default stdout); None silences the console.
    prefix: label printed at the start of each console line.
  """

  def __init__(self, workdir, *, tensorboard: bool = True, stream=sys.stdout, prefix: str = "rl"):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self.workdir / "metrics.jsonl", "a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top  (only with TensorBoard on)
      self._tb = SummaryWriter(str(self.workdir / "tb"))
    self._stream = stream
    self.prefix = prefix

  def write(self, step: int, metrics: Mapping, *, phase: Optional[str] = None, console: bool = True):
    scalars = {k: _scalar(v) for k, v in metrics.items()}
    scalars = {k: v for k, v in scalars.items() if v is not None}
    record = {"step": int(step), **({"phase": phase} if phase else {}), **scalars}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{phase}/{k}" if phase else k, v, int(step))
      self._tb.flush()
    if console and self._stream is not None:
      self._stream.write(self.format_line(step, scalars, phase) + "\n")
      self._stream.flush()

  def keep_only(self, rl_step: Optional[int]) -> int:
    """Rewrites ``metrics.jsonl`` to the rows of a run resumed at RL step ``rl_step`` (:func:`kept_lines`);
    returns the number of rows dropped. TensorBoard event files are append-only and keep replayed steps."""
    path = self.workdir / "metrics.jsonl"
    self._jsonl.close()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = kept_lines(lines, rl_step)
    if len(kept) != len(lines):
      tmp = path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(kept), encoding="utf-8")
      tmp.replace(path)
    self._jsonl = open(path, "a", encoding="utf-8")
    return len(lines) - len(kept)

  def format_line(self, step, scalars, phase=None) -> str:
    parts = [f"[{phase or self.prefix}] step {int(step):>4d}"]
    known = False
    for key, label, fmt in _CONSOLE:
      if key in scalars:
        known = True
        v = scalars[key]
        parts.append(f"{label} " + (fmt.format(int(v)) if fmt == "{:d}" else fmt.format(v)))
    if not known:
      parts += [f"{k} {v:.4g}" for k, v in list(scalars.items())[:8]]
    return " | ".join(parts)

  def close(self):
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def kept_lines(lines, rl_step: Optional[int]) -> list:
  """The metrics lines a run resumed at RL step ``rl_step`` keeps (None: nothing restored, all dropped).

  Kept: complete JSON lines of the warm-start (any phase but "rl") and RL lines with ``step <= rl_step``;
  dropped: RL lines of steps after the checkpoint (they are replayed, and logged again), and a half-written
  last line of a killed run.
  """
  if rl_step is None:
    return []
  kept = []
  for line in lines:
    try:
      rec = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not line.endswith("\n") or not isinstance(rec, dict):
      continue
    if rec.get("phase") == "rl" and int(rec.get("step", 0)) > rl_step:
      continue
    kept.append(line)
  return kept

