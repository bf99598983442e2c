"""Repository hygiene of the text a user reads: no merge-conflict markers, no links to files that do not exist."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SKIP_DIRS = {".venv", ".git", ".pytest_cache", "__pycache__", "build", "dist"}
_MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.M)


def _text_files(suffixes):
  for path in ROOT.rglob("*"):
    if path.suffix in suffixes and path.is_file() and not _SKIP_DIRS & set(path.relative_to(ROOT).parts):
      yield path


def test_no_merge_conflict_markers_in_code_or_docs():
  bad = [f"{p.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
         for p in _text_files({".py", ".md", ".txt", ".toml", ".cfg"})
         for text in [p.read_text(errors="replace")] for m in _MARKER.finditer(text)]
  assert not bad, f"merge-conflict markers left in: {bad}"


@pytest.mark.parametrize("doc", ["README.md", "BUILD.md"] + sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")))
def test_relative_links_point_to_files_that_exist(doc):
  text = (ROOT / doc).read_text()
  missing = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue                                            # URLs and in-page anchors
    path = (ROOT / doc).parent / target.split("#", 1)[0]
    if not path.exists():
      missing.append(target)
  assert not missing, f"{doc} links to files that do not exist: {missing}"
