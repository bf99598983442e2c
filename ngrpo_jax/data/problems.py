"""Loaders for MATH-style problem sets: JSONL (normalized or original) and MATH parquet files.

Every loader returns a list of records ``{"id": str, "problem": str, "answer": str, ...}`` (other
fields of the file are kept). Originals' field variants are normalized the same way as the
``normalized.jsonl`` files beside them (``normalize_record``):

* ``problem``: the ``problem`` field, else ``question``.
* ``answer``: strings unchanged (AIME24 keeps ``"025"``, MATH keeps its LaTeX); whole floats as
  integers (AMC23 ``27.0`` → ``"27"``); other numbers with ``str``.
* ``id``: a string ``id`` unchanged; an integer ``id`` as ``f"{set}-{id}"`` (AMC23, AIME24); else
  ``unique_id`` (MATH500); else ``f"{set}-{line}"`` with the 1-based line number (AIME25).

A file whose folder and name a manifest in ``third_party/`` lists (e.g. ``<data>/math500/test.jsonl``)
is checked against it (SHA-256 and row count) before parsing; ``verify="auto"`` does so when a
manifest applies, ``True`` requires one, ``False`` skips the check.
"""
import json
import math
import os
import pathlib
from typing import Any, Iterable

from ngrpo_jax.data import manifests as manifests_lib

NORMALIZED = "normalized.jsonl"
KNOWN_SETS = ("math500", "amc23", "aime24", "aime25", "math_train", "math_test")


class ProblemFileError(ValueError):
  """A problem file (or one of its lines) cannot be read as problems."""


def normalize_answer(answer: Any) -> str:
  """The gold answer as a string: whole floats → int text, other numbers → str, str unchanged."""
  if isinstance(answer, bool) or answer is None:
    raise ValueError(f"answer must be a str or a number, got {answer!r}")
  if isinstance(answer, str):
    return answer
  if isinstance(answer, int):
    return str(answer)
  if isinstance(answer, float):
    if math.isfinite(answer) and answer.is_integer():
      return str(int(answer))
    return str(answer)
  raise ValueError(f"answer must be a str or a number, got {type(answer).__name__}")


def normalize_record(raw: dict, *, set_name: str, line: int) -> dict:
  """One original row → ``{"id", "problem", "answer", **other fields}`` (rules in the module doc).

  Args:
    raw: the parsed JSON object.
    set_name: prefix of generated ids (e.g. ``"amc23"``).
    line: 1-based line (row) number, for ids of files without one.

  Raises:
    ValueError: no ``problem``/``question`` string or no usable ``answer``.
  """
  if not isinstance(raw, dict):
    raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
  problem = raw.get("problem", raw.get("question"))
  if not isinstance(problem, str) or not problem:
    raise ValueError("missing a non-empty 'problem' (or 'question') string")
  if "answer" not in raw:
    raise ValueError("missing 'answer'")
  answer = normalize_answer(raw["answer"])
  raw_id = raw.get("id")
  if isinstance(raw_id, str) and raw_id:
    rid = raw_id
  elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
    rid = f"{set_name}-{raw_id}"
  elif isinstance(raw.get("unique_id"), str):
    rid = raw["unique_id"]
  else:
    rid = f"{set_name}-{line}"
  extra = {k: v for k, v in raw.items() if k not in ("id", "problem", "answer")
           and not (k == "question" and v == problem)}
  return {"id": rid, "problem": problem, "answer": answer, **extra}


def load_jsonl(path: str | os.PathLike, *, set_name: str | None = None, verify: bool | str = "auto",
               manifest_dir: str | os.PathLike | None = None) -> list[dict]:
  """Loads a JSONL problem file (normalized or an original) as records.

  Args:
    path: the ``.jsonl`` file.
    set_name: prefix for generated ids; default the file's folder name.
    verify: ``"auto"`` (check against a manifest when one lists the file), True (require one),
      False (skip).
    manifest_dir: folder of manifests (default the repository's ``third_party/``).

  Returns:
    A list of records, in file order.

  Raises:
    ProblemFileError: malformed line (message names the file and line), duplicate ids, empty file.
    manifests.ManifestError: the file does not match its manifest.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ProblemFileError(f"problem file {path} does not exist")
  _maybe_verify(path, verify, manifest_dir)
  set_name = set_name or path.parent.name or path.stem
  records = []
  with open(path, encoding="utf-8") as f:
    for lineno, text in enumerate(f, start=1):
      if not text.strip():
        continue
      try:
        raw = json.loads(text)
      except json.JSONDecodeError as e:
        raise ProblemFileError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
      try:
        records.append(normalize_record(raw, set_name=set_name, line=lineno))
      except ValueError as e:
        raise ProblemFileError(f"{path}:{lineno}: {e}") from None
  return _check_records(records, path)


def load_parquet(path: str | os.PathLike, *, set_name: str | None = None,
                 verify: bool | str = "auto",
                 manifest_dir: str | os.PathLike | None = None) -> list[dict]:
  """Loads a MATH parquet file in the verl format of the NGRPO repository (needs ``pyarrow``).

  Fields: ``reward_model.ground_truth.{question, target}`` → problem/answer, ``level``, ``type``;
  id ``f"{set}-{extra_info.index}"`` (row number when absent). Prefer the ``normalized.jsonl``
  beside the parquet file, which needs no extra dependency.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ProblemFileError(f"problem file {path} does not exist")
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ProblemFileError(
        f"reading {path} needs pyarrow, which is not installed (pip install pyarrow), or load "
        f"the {NORMALIZED} beside it") from None
  _maybe_verify(path, verify, manifest_dir)
  set_name = set_name or path.parent.name.replace("_", "-")
  records = []
  for row_number, row in enumerate(pq.read_table(path).to_pylist()):
    try:
      truth = (row.get("reward_model") or {}).get("ground_truth") or {}
      index = (row.get("extra_info") or {}).get("index", row_number)
      raw = {"id": f"{set_name}-{index}", "problem": truth.get("question"),
             "answer": truth.get("target"), "level": row.get("level"), "type": row.get("type")}
      records.append(normalize_record(raw, set_name=set_name, line=row_number + 1))
    except ValueError as e:
      raise ProblemFileError(f"{path}: row {row_number}: {e}") from None
  return _check_records(records, path)


def load_problems(path: str | os.PathLike, **kwargs) -> list[dict]:
  """Loads a problem file by extension (``.jsonl`` or ``.parquet``); kwargs as ``load_jsonl``."""
  suffix = pathlib.Path(path).suffix
  if suffix == ".jsonl":
    return load_jsonl(path, **kwargs)
  if suffix == ".parquet":
    return load_parquet(path, **kwargs)
  raise ProblemFileError(f"{path}: unsupported extension {suffix!r} (expected .jsonl or .parquet)")


def load_problem_set(name: str, data_dir: str | os.PathLike, *, original: bool = False,
                     verify: bool | str = "auto",
                     manifest_dir: str | os.PathLike | None = None) -> list[dict]:
  """Loads ``<data_dir>/<name>/normalized.jsonl`` (or the set's original file) as records.

  Args:
    name: a set folder name, e.g. ``"math500"``, ``"amc23"``, ``"aime24"``, ``"aime25"``,
      ``"math_train"``, ``"math_test"`` (see ``KNOWN_SETS``).
    data_dir: the folder holding one subfolder per set (e.g. ``../shared/data``).
    original: load the original file named by the set's manifest instead of the normalized one.
    verify, manifest_dir: as ``load_jsonl``.
  """
  folder = pathlib.Path(data_dir) / name
  if not folder.is_dir():
    raise ProblemFileError(f"no problem set {name!r} in {data_dir} (known sets: {KNOWN_SETS})")
  filename = NORMALIZED
  if original:
    filename = manifests_lib.original_entry(manifests_lib.load_manifest(name, manifest_dir))["filename"]
  return load_problems(folder / filename, verify=verify, manifest_dir=manifest_dir)


def normalized_lines(records: Iterable[dict]) -> list[str]:
  """``normalized.jsonl`` lines (``json.dumps`` of ``{id, problem, answer}``, ASCII-escaped)."""
  return [json.dumps({"id": r["id"], "problem": r["problem"], "answer": r["answer"]}) + "\n"
          for r in records]


def write_normalized(records: Iterable[dict], path: str | os.PathLike) -> None:
  """Writes records as a ``normalized.jsonl`` file (see ``normalized_lines``)."""
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(normalized_lines(records))


def _maybe_verify(path, verify, manifest_dir):
  if verify not in (True, False, "auto"):
    raise ValueError(f"verify must be True, False or 'auto', got {verify!r}")
  if verify is False:
    return
  found = manifests_lib.find_entry(path, manifest_dir)
  if found is None:
    if verify is True:
      raise manifests_lib.ManifestError(
          f"no manifest lists {path} (looked for <set>/<file> = {path.parent.name}/{path.name} in "
          f"{manifest_dir or manifests_lib.default_manifest_dir()})")
    return
  manifests_lib.verify_file(path, found[1])


def _check_records(records, path):
  if not records:
    raise ProblemFileError(f"{path} holds no problems")
  seen = set()
  for r in records:
    if r["id"] in seen:
      raise ProblemFileError(f"{path}: duplicate id {r['id']!r}")
    seen.add(r["id"])
  return records
