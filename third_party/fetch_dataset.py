"""Downloads an external problem set from its source commit and verifies it against its manifest.

Run on a machine with internet, from the repository root:

  python third_party/fetch_dataset.py --set math500 --dest ../shared/data
  python third_party/fetch_dataset.py --all --dest data/

For each set it downloads ``https://raw.githubusercontent.com/<repo>/<commit>/<path>`` (the manifest's
``source``) to ``<dest>/<set>/<original filename>``, checks its SHA-256 and row count, and for JSONL
originals writes ``<dest>/<set>/normalized.jsonl`` with ``ngrpo_jax.data.problems`` and checks it too
(the manifest's hash of the normalized file). A file that is already present and verifies is not
downloaded again. Nothing is written under its final name unless it verifies.
"""
import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ngrpo_jax.data import manifests  # pylint: disable=g-import-not-at-top,wrong-import-position
from ngrpo_jax.data import problems  # pylint: disable=g-import-not-at-top,wrong-import-position


def fetch(manifest: dict, dest: str | os.PathLike, *, base_url: str = manifests.RAW_GITHUB,
          timeout: float = 60.0, log=print) -> pathlib.Path:
  """Downloads and verifies one set; returns its folder ``<dest>/<name>``.

  Args:
    manifest: a validated manifest (``manifests.load_manifest``).
    dest: the data folder (one subfolder per set).
    base_url: raw-file server; ``{base_url}/{repo}/{commit}/{path}`` is fetched (a ``file://``
      mirror works too, which is how the tests exercise this without internet).
    timeout: seconds per download.
    log: a print-like function for progress lines.

  Raises:
    manifests.ManifestError: the downloaded (or derived normalized) file does not match.
  """
  folder = pathlib.Path(dest) / manifest["name"]
  folder.mkdir(parents=True, exist_ok=True)
  entry = manifests.original_entry(manifest)
  target = folder / entry["filename"]
  if target.exists():
    manifests.verify_file(target, entry)
    log(f"{target}: present and verified")
  else:
    url = manifests.source_url(manifest, base_url)
    log(f"downloading {url}")
    with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
      tmp_path = pathlib.Path(tmp.name)
      try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
          shutil.copyfileobj(response, tmp)
      except Exception:
        tmp_path.unlink(missing_ok=True)
        raise
    try:
      manifests.verify_file(tmp_path, entry)
    except manifests.ManifestError as e:
      tmp_path.unlink(missing_ok=True)
      raise manifests.ManifestError(f"download of {url} does not match the manifest: {e}") from None
    tmp_path.replace(target)
    log(f"{target}: verified (sha256 {entry['sha256'][:16]}…, {entry['rows']} rows)")
  _write_normalized(manifest, folder, target, log)
  return folder


def _write_normalized(manifest, folder, original, log):
  normalized = [e for e in manifest["files"] if e["role"] == "normalized"]
  if not normalized:
    return
  entry = normalized[0]
  path = folder / entry["filename"]
  if entry["format"] != "jsonl" or original.suffix != ".jsonl":
    log(f"{path}: not derived here (needs the parquet reader); load the original with pyarrow")
    return
  records = problems.load_jsonl(original, set_name=manifest["name"], verify=False)
  tmp_path = path.with_suffix(".part")
  problems.write_normalized(records, tmp_path)
  try:
    manifests.verify_file(tmp_path, entry)
  except manifests.ManifestError:
    tmp_path.unlink(missing_ok=True)
    raise
  tmp_path.replace(path)
  log(f"{path}: written and verified")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--set", action="append", dest="sets", help="set name (repeatable)")
  group.add_argument("--all", action="store_true", help="every set with a manifest")
  parser.add_argument("--dest", required=True, help="data folder (one subfolder per set)")
  parser.add_argument("--manifest_dir", default=None, help="default: this folder")
  parser.add_argument("--base_url", default=manifests.RAW_GITHUB)
  args = parser.parse_args(argv)
  manifest_dir = args.manifest_dir or pathlib.Path(__file__).resolve().parent
  available = manifests.list_manifests(manifest_dir)
  names = sorted(available) if args.all else args.sets
  for name in names:
    if name not in available:
      parser.error(f"no manifest for set {name!r}; known: {sorted(available)}")
  failures = 0
  for name in names:
    try:
      fetch(available[name], args.dest, base_url=args.base_url)
    except (OSError, manifests.ManifestError) as e:
      failures += 1
      print(f"FAILED {name}: {e}", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
