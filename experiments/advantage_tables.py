"""Prints NGRPO vs GRPO advantages for the group cases of the NGRPO paper's Figure 3 (G = 8, 0/1 rewards).

Usage: python -m experiments.advantage_tables [--group_size=8] [--r_virtual=1.0] [--num_virtual=1]

For each number of correct responses the table shows the advantage of a correct and of a wrong response and
the group's advantage sum, for GRPO and NGRPO, with the unbiased std (ddof=1: the paper's Figure 3 numbers
and the authors' code) and the population std (ddof=0: the paper's Eq. 6 written literally).
"""
from absl import app
from absl import flags
import numpy as np

from ngrpo_jax import advantages

_GROUP_SIZE = flags.DEFINE_integer("group_size", 8, "Responses per group (G).")
_R_VIRTUAL = flags.DEFINE_float("r_virtual", 1.0, "NGRPO virtual reward magnitude (r_max = 1.0).")
_NUM_VIRTUAL = flags.DEFINE_integer("num_virtual", 1, "Number of NGRPO virtual samples.")
_EPS = flags.DEFINE_float("eps", 1e-6, "Added to the std.")
_NUM_CORRECT = flags.DEFINE_list("num_correct", None, "Cases (numbers of correct responses); default "
                                 "0, 1, G/2, G-1, G (Figure 3's cases for G = 8).")


def _fmt(x):
  return "   -  " if x is None else f"{round(x, 4) + 0.0:+6.2f}"


def build_rows(group_size, cases, ddof, r_virtual, num_virtual, eps):
  """Returns [(num_correct, grpo_pos, grpo_neg, grpo_sum, ngrpo_pos, ngrpo_neg, ngrpo_sum)] per case."""
  rewards = np.zeros((len(cases), group_size), np.float32)
  for row, c in enumerate(cases):
    rewards[row, :c] = 1.0
  a_grpo = np.asarray(advantages.grpo(rewards, ddof=ddof, eps=eps))
  a_ngrpo = np.asarray(advantages.ngrpo(rewards, r_virtual=r_virtual, num_virtual=num_virtual, ddof=ddof,
                                        eps=eps))
  rows = []
  for row, c in enumerate(cases):
    pos = lambda a: float(a[row, 0]) if c > 0 else None
    neg = lambda a: float(a[row, -1]) if c < group_size else None
    rows.append((c, pos(a_grpo), neg(a_grpo), float(a_grpo[row].sum()),
                 pos(a_ngrpo), neg(a_ngrpo), float(a_ngrpo[row].sum())))
  return rows


def main(argv):
  del argv
  g = _GROUP_SIZE.value
  if g < 2:
    raise app.UsageError("--group_size must be >= 2.")
  cases = ([int(c) for c in _NUM_CORRECT.value] if _NUM_CORRECT.value
           else sorted({0, 1, g // 2, g - 1, g}))
  if any(not 0 <= c <= g for c in cases):
    raise app.UsageError(f"--num_correct values must lie in [0, {g}].")
  print(f"NGRPO vs GRPO advantages, G = {g}, rewards 0/1, virtual reward {_R_VIRTUAL.value} x "
        f"{_NUM_VIRTUAL.value}, eps = {_EPS.value:g} (paper: arXiv 2509.18851, Figure 3)")
  for ddof, label in ((1, "ddof=1 (unbiased std; Figure 3 and the authors' code)"),
                      (0, "ddof=0 (population std; Eq. 6 read literally)")):
    print(f"\n{label}")
    print("correct |  GRPO A+  GRPO A-  GRPO sum |  NGRPO A+  NGRPO A-  NGRPO sum")
    for c, gp, gn, gs, npos, nneg, ns in build_rows(g, cases, ddof, _R_VIRTUAL.value, _NUM_VIRTUAL.value,
                                                     _EPS.value):
      print(f"  {c:2d}/{g:<2d} |  {_fmt(gp)}   {_fmt(gn)}   {_fmt(gs)}   |  {_fmt(npos)}    {_fmt(nneg)}    "
            f"{_fmt(ns)}")
  print("\nA+ / A-: advantage of a correct / wrong response ('-': no such response in the group).")


if __name__ == "__main__":
  app.run(main)
