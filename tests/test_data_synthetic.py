"""Tests of the embedded synthetic addition task (ngrpo_jax.data.synthetic)."""
import re

import numpy as np
import pytest

from ngrpo_jax.data import synthetic

_LINE = re.compile(r"^(\d)\+(\d)\+([01])=(\d)(\d)$")


def _parse_scratchpad(text):
  """Independent reader: the column lines' (x, y, c, s_tens, s_ones) and the boxed answer."""
  *lines, last = text.split("\n")
  boxed = re.fullmatch(r"\\boxed\{(\d+)\}", last)
  assert boxed, last
  columns = []
  for line in lines:
    m = _LINE.match(line)
    assert m, line
    columns.append(tuple(int(g) for g in m.groups()))
  return columns, boxed.group(1)


def test_scratchpad_matches_arithmetic_for_random_and_edge_operands():
  rng = np.random.default_rng(0)
  pairs = [(0, 0), (9, 1), (999, 1), (1, 999), (5, 5), (10**12, 10**12 - 1)]
  pairs += [(int(rng.integers(0, 10**k)), int(rng.integers(0, 10**j)))
            for k in range(1, 9) for j in range(1, 9)]
  for a, b in pairs:
    columns, boxed = _parse_scratchpad(synthetic.addition_scratchpad(a, b))
    assert boxed == str(a + b)
    assert len(columns) == max(len(str(a)), len(str(b)))
    carry = 0
    for i, (x, y, c, tens, ones) in enumerate(columns):
      assert x == (a // 10**i) % 10 and y == (b // 10**i) % 10
      assert c == carry
      assert 10 * tens + ones == x + y + c
      carry = tens
    # The answer is the ones digits read bottom-up, after the final carry when it is 1.
    digits = ("1" if carry else "") + "".join(str(col[4]) for col in reversed(columns))
    assert digits == str(a + b)
    assert synthetic.count_carries(a, b) == sum(col[3] for col in columns)


def test_make_dataset_is_deterministic_and_seed_dependent():
  a = synthetic.make_dataset(3, 50, (1.0, 5.0))
  b = synthetic.make_dataset(3, 50, (1.0, 5.0))
  c = synthetic.make_dataset(4, 50, (1.0, 5.0))
  assert a == b
  assert [r["problem"] for r in a] != [r["problem"] for r in c]
  for r in a:
    x, y = r["operands"]
    assert r["problem"] == f"{x}+{y}" and r["answer"] == str(x + y)
    assert r["solution"] == synthetic.addition_scratchpad(x, y)
    assert r["solution"].endswith(f"\\boxed{{{x + y}}}")
  assert len({r["id"] for r in a}) == 50


def test_make_problem_uses_only_the_given_generator():
  r1 = synthetic.make_problem(np.random.default_rng(7), 3.3)
  r2 = synthetic.make_problem(np.random.default_rng(7), 3.3)
  assert r1 == r2


@pytest.mark.parametrize("difficulty", [1.0, 2.0, 2.5, 3.25, 4.0])
def test_difficulty_is_the_expected_number_of_digits(difficulty):
  rng = np.random.default_rng(1)
  recs = [synthetic.make_problem(rng, difficulty) for _ in range(2000)]
  digits = np.array([max(len(str(a)), len(str(b))) for a, b in (r["operands"] for r in recs)])
  assert set(np.unique(digits)) <= {int(np.floor(difficulty)), int(np.floor(difficulty)) + 1}
  np.testing.assert_allclose(digits.mean(), difficulty, atol=0.05)
  assert all(r["digits"] == d for r, d in zip(recs, digits))


def test_difficulty_range_is_spread_uniformly():
  recs = synthetic.make_dataset(0, 3000, (1.0, 4.0))
  d = np.array([r["difficulty"] for r in recs])
  assert d.min() >= 1.0 and d.max() <= 4.0
  # Uniform[1, 4]: mean 2.5, variance 9/12.
  np.testing.assert_allclose(d.mean(), 2.5, atol=0.05)
  np.testing.assert_allclose(d.var(), 0.75, atol=0.05)
  digits = np.array([r["digits"] for r in recs])
  counts = np.bincount(digits, minlength=5)[1:]
  # P(n = 1) = P(n = 4) = 1/6, P(n = 2) = P(n = 3) = 1/3 for d ~ U[1, 4].
  np.testing.assert_allclose(counts / counts.sum(), [1 / 6, 1 / 3, 1 / 3, 1 / 6], atol=0.03)
  # Longer problems have more carries on average (difficulty is smooth in a second sense).
  carries = np.array([r["carries"] for r in recs])
  means = [carries[digits == n].mean() for n in range(1, 5)]
  assert all(x < y for x, y in zip(means, means[1:]))


def test_train_and_test_splits_are_disjoint():
  train = synthetic.make_dataset(0, 3000, (1.0, 3.0), split="train")
  test = synthetic.make_dataset(1, 300, (1.0, 3.0), split="test", unique=True)
  key = lambda r: frozenset(r["operands"])
  assert not {key(r) for r in train} & {key(r) for r in test}
  assert len({tuple(r["operands"]) for r in test}) == 300
  assert all(synthetic.split_of(*r["operands"]) == "test" for r in test)
  # Roughly heldout_fraction of all pairs are held out.
  pairs = [(a, b) for a in range(100) for b in range(a, 100)]
  share = np.mean([synthetic.split_of(a, b) == "test" for a, b in pairs])
  assert 0.07 < share < 0.13
  assert synthetic.split_of(12, 34) == synthetic.split_of(34, 12)


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="difficulty"):
    synthetic.make_problem(np.random.default_rng(0), 0.5)
  with pytest.raises(TypeError, match="rng"):
    synthetic.make_problem(0, 2.0)
  with pytest.raises(ValueError, match="lo <= hi"):
    synthetic.make_dataset(0, 3, (3.0, 2.0))
  with pytest.raises(ValueError, match="split"):
    synthetic.make_dataset(0, 3, split="valid")
  with pytest.raises(ValueError, match="too few"):
    synthetic.make_dataset(0, 200, (1.0, 1.0), split="test", unique=True)
  with pytest.raises(ValueError, match="non-negative"):
    synthetic.addition_scratchpad(-1, 2)


def test_max_solution_chars_bounds_generated_solutions():
  for n in range(1, 7):
    recs = synthetic.make_dataset(n, 300, (n, n))
    lengths = [len(r["solution"]) for r in recs]
    assert max(lengths) <= synthetic.max_solution_chars(n)
    assert max(lengths) >= synthetic.max_solution_chars(n) - 1  # the bound is tight
  # The worst case (a final carry) reaches the bound exactly.
  assert len(synthetic.addition_scratchpad(999, 1)) == synthetic.max_solution_chars(3)
