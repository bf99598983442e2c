"""Provenance manifests of external problem sets and file verification against them.

Each external set (MATH train/test, MATH500, AMC23, AIME2024, AIME2025) has a JSON manifest in the
repository's ``third_party/`` folder: where the original file comes from (GitHub repo, path, commit),
its licence, and for every file of the set (the original and the derived ``normalized.jsonl``) the
row count and SHA-256. The data itself is never committed; ``third_party/fetch_dataset.py`` downloads
an original on a machine with internet and verifies it, and the loaders in ``problems`` verify any
file they read whose set folder and file name a manifest lists.

Manifest schema::

  {"name": "math500", "title": ..., "license": ..., "notes": ...,
   "source": {"repo": "owner/name", "path": "path/in/repo", "commit": "<40 hex>", ...},
   "files": [{"filename": "test.jsonl", "role": "original", "format": "jsonl",
              "rows": 500, "sha256": "<64 hex>"},
             {"filename": "normalized.jsonl", "role": "normalized", "format": "jsonl",
              "rows": 500, "sha256": "<64 hex>", "derived_from": "test.jsonl"}]}

``rows`` counts problems: non-empty lines of a JSONL file, table rows of a parquet file.
"""
import hashlib
import json
import os
import pathlib
import re
from typing import Any

RAW_GITHUB = "https://raw.githubusercontent.com"
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FORMATS = ("jsonl", "parquet")


class ManifestError(ValueError):
  """A file does not match its manifest, or a manifest is malformed or missing."""


def default_manifest_dir() -> pathlib.Path | None:
  """The repository's ``third_party/`` folder, or None when not running from a checkout."""
  path = pathlib.Path(__file__).resolve().parents[2] / "third_party"
  return path if path.is_dir() else None


def sha256_file(path: str | os.PathLike) -> str:
  """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def count_rows(path: str | os.PathLike, fmt: str | None = None) -> int | None:
  """Problems in a file: non-empty lines (JSONL) or table rows (parquet; None without pyarrow)."""
  path = pathlib.Path(path)
  fmt = fmt or _format_of(path)
  if fmt == "jsonl":
    with open(path, "rb") as f:
      return sum(1 for line in f if line.strip())
  if fmt == "parquet":
    try:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError:
      return None
    return pq.ParquetFile(path).metadata.num_rows
  raise ManifestError(f"unknown file format {fmt!r} of {path} (expected one of {_FORMATS})")


def validate_manifest(manifest: Any, origin: str = "manifest") -> dict:
  """Checks a manifest's schema; returns it, or raises ManifestError naming ``origin``."""
  if not isinstance(manifest, dict):
    raise ManifestError(f"{origin}: a manifest must be a JSON object")
  for key in ("name", "license", "source", "files"):
    if key not in manifest:
      raise ManifestError(f"{origin}: missing key {key!r}")
  source = manifest["source"]
  for key in ("repo", "path", "commit"):
    if not isinstance(source.get(key), str) or not source[key]:
      raise ManifestError(f"{origin}: source.{key} must be a non-empty string")
  if not _HEX40.match(source["commit"]):
    raise ManifestError(f"{origin}: source.commit must be 40 lowercase hex digits")
  if not manifest["files"] or not isinstance(manifest["files"], list):
    raise ManifestError(f"{origin}: files must be a non-empty list")
  originals = 0
  for i, entry in enumerate(manifest["files"]):
    where = f"{origin}: files[{i}]"
    if not isinstance(entry.get("filename"), str) or "/" in entry["filename"]:
      raise ManifestError(f"{where}.filename must be a bare file name")
    if entry.get("format") not in _FORMATS:
      raise ManifestError(f"{where}.format must be one of {_FORMATS}")
    if not isinstance(entry.get("rows"), int) or entry["rows"] < 0:
      raise ManifestError(f"{where}.rows must be a non-negative int")
    if not isinstance(entry.get("sha256"), str) or not _HEX64.match(entry["sha256"]):
      raise ManifestError(f"{where}.sha256 must be 64 lowercase hex digits")
    if entry.get("role") not in ("original", "normalized"):
      raise ManifestError(f"{where}.role must be 'original' or 'normalized'")
    originals += entry["role"] == "original"
  if originals != 1:
    raise ManifestError(f"{origin}: exactly one file must have role 'original', found {originals}")
  return manifest


def load_manifest(name_or_path: str | os.PathLike,
                  manifest_dir: str | os.PathLike | None = None) -> dict:
  """Reads and validates a manifest, by set name (``"math500"``) or by path to a ``.json`` file."""
  path = pathlib.Path(name_or_path)
  if path.suffix != ".json":
    folder = pathlib.Path(manifest_dir) if manifest_dir is not None else default_manifest_dir()
    if folder is None:
      raise ManifestError(f"no manifest folder to look up {name_or_path!r} in (pass manifest_dir)")
    path = folder / f"{name_or_path}.json"
  if not path.is_file():
    raise ManifestError(f"manifest {path} does not exist")
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ManifestError(f"{path}: invalid JSON: {e}") from None
  return validate_manifest(manifest, str(path))


def list_manifests(manifest_dir: str | os.PathLike | None = None) -> dict[str, dict]:
  """All manifests of a folder (default ``third_party/``), keyed by set name."""
  folder = pathlib.Path(manifest_dir) if manifest_dir is not None else default_manifest_dir()
  if folder is None:
    return {}
  manifests = {}
  for path in sorted(folder.glob("*.json")):
    manifest = load_manifest(path)
    manifests[manifest["name"]] = manifest
  return manifests


def file_entry(manifest: dict, filename: str) -> dict:
  """The ``files`` entry named ``filename``; ManifestError when the manifest does not list it."""
  for entry in manifest["files"]:
    if entry["filename"] == filename:
      return entry
  raise ManifestError(f"manifest {manifest['name']!r} lists no file {filename!r} "
                      f"(it lists {[e['filename'] for e in manifest['files']]})")


def original_entry(manifest: dict) -> dict:
  """The ``files`` entry of the original (downloaded) file."""
  return next(e for e in manifest["files"] if e["role"] == "original")


def find_entry(path: str | os.PathLike, manifest_dir: str | os.PathLike | None = None
               ) -> tuple[dict, dict] | None:
  """(manifest, file entry) for a file ``<set name>/<filename>``, or None when none applies."""
  path = pathlib.Path(path)
  manifest = list_manifests(manifest_dir).get(path.parent.name)
  if manifest is None:
    return None
  for entry in manifest["files"]:
    if entry["filename"] == path.name:
      return manifest, entry
  return None


def verify_file(path: str | os.PathLike, entry: dict, *, check_rows: bool = True) -> None:
  """Raises ManifestError unless the file's SHA-256 (and row count) equal the manifest entry's.

  Args:
    path: the file to check.
    entry: a manifest ``files`` entry (``sha256``, ``rows``, ``format``).
    check_rows: also count rows (skipped for parquet when pyarrow is not installed; the hash
      already pins the content).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ManifestError(f"{path} does not exist")
  got = sha256_file(path)
  if got != entry["sha256"]:
    raise ManifestError(
        f"{path}: SHA-256 {got} does not match the manifest's {entry['sha256']} for "
        f"{entry['filename']!r}; the file is corrupted, edited or a different version — "
        f"re-download it with third_party/fetch_dataset.py")
  if check_rows:
    rows = count_rows(path, entry["format"])
    if rows is not None and rows != entry["rows"]:
      raise ManifestError(f"{path}: {rows} rows, the manifest says {entry['rows']}")


def source_url(manifest: dict, base_url: str = RAW_GITHUB) -> str:
  """``{base_url}/{repo}/{commit}/{path}``: the raw URL of the original file at its commit."""
  source = manifest["source"]
  return f"{base_url.rstrip('/')}/{source['repo']}/{source['commit']}/{source['path']}"


def _format_of(path: pathlib.Path) -> str:
  return path.suffix.lstrip(".")
