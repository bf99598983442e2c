"""The checker on the shared labelled case file and on the gold answers of the evaluation sets."""
import json
import random
import re

import pytest

from ngrpo_jax import grading

TARGET_ACCURACY = 0.97
DATASETS = ("math500", "amc23", "aime24", "aime25")


@pytest.fixture(scope="module")
def pool():
  with grading.WorkerPool(2) as p:
    p.warm_up()
    yield p


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def test_public_case_file(shared_dir, pool):
  cases = _read_jsonl(shared_dir / "checker_cases_public.jsonl")
  results = grading.grade_batch([c["gold"] for c in cases], [c["pred"] for c in cases], pool=pool)
  correct = [r.equivalent == c["equivalent"] for c, r in zip(cases, results)]
  misses = [(c["id"], c["kind"], c["gold"], r.pred_answer, r.reason) for c, r, ok in zip(cases, results, correct)
            if not ok]
  assert sum(correct) / len(cases) >= TARGET_ACCURACY, misses
  adversarial_fp = [c["id"] for c, r in zip(cases, results) if c["kind"] == "adversarial" and r.equivalent
                    and not c["equivalent"]]
  assert not adversarial_fp
  assert max(r.seconds for r in results) < 2.5


def _rewritings(gold):
  """Equivalent rewritings of a gold answer that any grader must accept."""
  out = [gold, "\\boxed{" + gold + "}", "The final answer is $\\boxed{" + gold + "}$.", "$" + gold + "$"]
  if "\\frac" in gold:
    out.append(gold.replace("\\frac", "\\dfrac"))
  if re.fullmatch(r"\d+", gold):
    out.append(gold + ".0")
  return out


def _perturbed(gold):
  """A wrong answer: the first integer in the gold plus one (None if the gold has no digits)."""
  m = re.search(r"\d+", gold)
  if not m:
    return None
  return gold[:m.start()] + str(int(m.group()) + 1) + gold[m.end():]


def _dataset_pairs(shared_dir, sample, seed=0):
  golds, responses, labels = [], [], []
  for name in DATASETS:
    rows = _read_jsonl(shared_dir / "data" / name / "normalized.jsonl")
    answers = [row["answer"] for row in rows]
    if sample is not None and len(answers) > sample:
      answers = random.Random(seed).sample(answers, sample)
    for gold in answers:
      for response in _rewritings(gold):
        golds.append(gold)
        responses.append(response)
        labels.append(True)
      wrong = _perturbed(gold)
      if wrong is not None:
        golds.append(gold)
        responses.append("\\boxed{" + wrong + "}")
        labels.append(False)
  return golds, responses, labels


def _check_dataset_pairs(golds, responses, labels, pool):
  results = grading.grade_batch(golds, responses, pool=pool)
  misses = [(g, r, l, x.reason) for g, r, l, x in zip(golds, responses, labels, results) if x.equivalent != l]
  # Self-consistency must be perfect; a perturbed number can only coincide when it sits inside a unit
  # ("cm^2" -> "cm^3"), which the unit policy ignores.
  assert all(not l for _, _, l, _ in misses), misses
  assert len(misses) <= 0.01 * len(labels), misses


def test_dataset_golds_sample(shared_dir, pool):
  _check_dataset_pairs(*_dataset_pairs(shared_dir, sample=60), pool)


@pytest.mark.slow
def test_dataset_golds_exhaustive(shared_dir, pool):
  _check_dataset_pairs(*_dataset_pairs(shared_dir, sample=None), pool)
