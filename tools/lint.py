"""Lint the patch series: complete, described, signed off, and focused.

    python3 -m tools.lint

Each patch declares the files it may touch with `Fork-Touches:` trailers
(one path each). They are fork bookkeeping, not upstream prose: strip them
with `git interpret-trailers` before opening the upstream pull request.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from pathlib import Path

from tools import series
from tools.common import PATCHES, ROOT, main_wrapper, read_json, read_series, say

REQUIRED_SECTIONS = ("## Purpose", "## Test Plan", "## Test Result")
# The CUDA build stays upstream's: a patch touching these would change what
# GPU users compile.
BUILD_FILES = re.compile(r"^(CMakeLists\.txt|setup\.py|csrc/|cmake/|requirements/)")
TRAILER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): (.+)$")


@dataclass
class Patch:
    name: str
    author: str = ""
    subject: str = ""
    body: str = ""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    added_lines: list[tuple[str, str]] = field(default_factory=list)


def split_message(message: str) -> tuple[str, list[tuple[str, str]]]:
    """A commit message body (without subject) as (prose, trailers)."""
    paragraphs = message.strip().split("\n\n")
    last_par = paragraphs[-1].splitlines() if paragraphs else []
    trailers = []
    if last_par and all(TRAILER.match(line) for line in last_par):
        trailers = [TRAILER.match(line).groups() for line in last_par]
        paragraphs = paragraphs[:-1]
    return "\n\n".join(paragraphs), trailers


class NotUtf8(ValueError):
    pass


# git quotes a path with unusual characters: diff --git "a/sp ace\303\251" "b/..."
DIFF_HEADER = re.compile(r'^diff --git ("a/(?:[^"\\]|\\.)*"|a/\S+) ("b/(?:[^"\\]|\\.)*"|b/\S+)$')


def unquote_path(token: str) -> str:
    """A path from a diff header, without its a/ or b/ and git's C quoting."""
    if token.startswith('"'):
        raw = token[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        token = raw.encode("latin-1").decode("utf-8", "replace")
    return token[2:]


def parse(path: Path) -> Patch:
    """Parse a `git format-patch` file into its message parts and its diff."""
    patch = Patch(path.name)
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise NotUtf8(f"is not UTF-8 (byte {e.start}); format-patch writes UTF-8: "
                      "export it again") from e
    i = 0
    headers: dict[str, str] = {}
    last = None
    while i < len(lines) and lines[i] != "":
        line = lines[i]
        if line[:1] in (" ", "\t") and last:
            headers[last] += " " + line.strip()
        elif ": " in line:
            last, value = line.split(": ", 1)
            headers[last] = value
        i += 1
    patch.author = str(make_header(decode_header(headers.get("From", ""))))
    patch.subject = str(make_header(decode_header(headers.get("Subject", ""))))
    message = []
    i += 1
    while i < len(lines) and lines[i] != "---" and not lines[i].startswith("diff --git "):
        message.append(lines[i])
        i += 1
    patch.body, patch.trailers = split_message("\n".join(message))
    current = None
    for line in lines[i:]:
        if line.startswith("diff --git "):
            header = DIFF_HEADER.match(line)
            if not header:
                raise ValueError(f"has a diff header git would not write: {line[:80]!r}")
            a, b = (unquote_path(t) for t in header.groups())
            patch.files += [a] if a == b else [a, b]
            current = b
        elif line.startswith("+") and not line.startswith("+++") and current:
            patch.added_lines.append((current, line[1:]))
    return patch


def message_problems(patch: Patch) -> list[str]:
    """What upstream's PR template and DCO bot would reject in a commit message."""
    problems = []
    if not re.match(r"^\[[A-Za-z][\w /-]*\] \S", patch.subject):
        problems.append(f"subject {patch.subject!r} lacks a [Tag] prefix such as [Bugfix]")
    for section in REQUIRED_SECTIONS:
        if not re.search(rf"^{re.escape(section)}\s*$", patch.body, re.M):
            problems.append(f"body lacks a '{section}' section")
    signoffs = [v for k, v in patch.trailers if k == "Signed-off-by"]
    if not signoffs:
        problems.append("no Signed-off-by: trailer (DCO)")
    elif patch.author not in signoffs:
        problems.append(f"no Signed-off-by: matches the author {patch.author!r}")
    return problems


def lint_patch(patch: Patch) -> list[str]:
    problems = message_problems(patch)
    declared = {v.strip() for k, v in patch.trailers if k == "Fork-Touches"}
    if not declared:
        problems.append("no Fork-Touches: trailer declares the files it may touch")
    for f in dict.fromkeys(patch.files):
        if declared and f not in declared:
            problems.append(f"touches {f}, which it does not declare")
        if BUILD_FILES.match(f):
            problems.append(f"touches build file {f}; the CUDA build must stay upstream's")
    if not patch.files:
        problems.append("changes no file")
    for f, line in patch.added_lines:
        if line != line.rstrip():
            problems.append(f"trailing whitespace added in {f}: {line.strip()[:60]!r}")
            break
    return problems


def unrun_tests(patch: Patch, listed: str) -> list[str]:
    """Test files a patch adds or changes that `make test` would not run."""
    tests = [f for f in dict.fromkeys(patch.files)
             if re.search(r"(^|/)tests/.*test_[^/]*\.py$", f)]
    return [f"{f} is not in env/upstream_tests.txt, so `make test` does not run it"
            for f in tests if f not in listed.split()]


def lint_series(patches: Path = PATCHES,
                series_tests: Path | None = ROOT / "env" / "upstream_tests.txt") -> list[str]:
    problems = []
    names = read_series(patches)
    seen = set()
    for name in names:
        if name in seen:
            problems.append(f"series: {name} is listed twice")
        seen.add(name)
        if not (patches / name).exists():
            problems.append(f"series: {name} is listed but does not exist")
    for path in sorted(patches.glob("*.patch")):
        if path.name not in seen:
            problems.append(f"{path.name}: not listed in patches/series")
    listed = series_tests.read_text() if series_tests and series_tests.exists() else None
    for name in names:
        if (patches / name).exists():
            try:
                patch = parse(patches / name)
            except ValueError as e:
                problems.append(f"{name}: {e}")
                continue
            problems += [f"{name}: {p}" for p in lint_patch(patch)]
            if listed is not None:
                problems += [f"{name}: {p}" for p in unrun_tests(patch, listed)]
    return problems


# Pages made on a GPU node from committed JSON, and the command that remakes
# each there. CPU-only CI cannot remake them: a page from another series is a
# warning, not a failure.
GPU_PAGES = {"docs/gpu.md": ("docs/gpu-results.json", "make demo DEVICE=cuda"),
             "docs/benchmarks-gpu.md": ("docs/benchmarks-gpu.json", "make bench DEVICE=cuda")}


def stale_gpu_pages(root: Path = ROOT, current: dict | None = None) -> list[str]:
    """A warning for each GPU page made from another series than the current
    one (or that does not say which)."""
    current = current or series.identity(root=root)
    warnings = []
    for page, (results, remake) in GPU_PAGES.items():
        recorded = (read_json(root / results) or {}).get("series")
        if not recorded or recorded.get("series_fingerprint") != current["series_fingerprint"]:
            made = (f"series {recorded['series_fingerprint']}" if recorded
                    else "a series it does not name")
            warnings.append(f"{page} is from {made}, not the current series "
                            f"{current['series_fingerprint']}: remake it on a GPU node with "
                            f"`{remake}`")
    return warnings


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    problems = lint_series()
    for problem in problems:
        print(f"  {problem}")
    if problems:
        print(f"series lint: {len(problems)} problem(s)")
        return 1
    say(f"series lint: {len(read_series())} patch(es) clean")
    for warning in stale_gpu_pages():
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
