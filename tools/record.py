"""What build/vllm was built from, and a switch in progress.

Two small JSON files inside the tree's .git directory:

- `fork-built-from.json`: the commit `tree` (or `export`) last left at HEAD and
  a fingerprint of patches/ at that moment. `export` compares it with
  patches/ now to tell which side moved on: patches/ (a pull: the tree is
  stale, rebuild it) or the tree (a developer's commits: export them).
- `fork-switch.json`: the journal of a switch to a new tree; present only
  while one is under way, so a run killed half-way is finished by the next.

`export` adds `pending` to the first while it rewrites patches/, for the same
reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tools.common import atomic_write, read_json, read_series

BUILT_FROM = "fork-built-from.json"
JOURNAL = "fork-switch.json"


def fingerprint(patches: Path) -> dict:
    """The series order and the sha256 of every patch file in patches/."""
    series = read_series(patches) if (patches / "series").exists() else None
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(patches.glob("*.patch"))}
    return {"series": series, "files": files}


def _json(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def read(tree: Path) -> dict | None:
    return read_json(tree / ".git" / BUILT_FROM)


def write(tree: Path, head: str, patches: dict, pending: dict | None = None) -> None:
    data = {"head": head, "patches": patches}
    if pending:
        data["pending"] = pending
    atomic_write(tree / ".git" / BUILT_FROM, _json(data))


def read_journal(tree: Path) -> dict | None:
    return read_json(tree / ".git" / JOURNAL)


def write_journal(tree: Path, head: str, patches: dict) -> None:
    atomic_write(tree / ".git" / JOURNAL, _json({"to": head, "patches": patches}))


def clear_journal(tree: Path) -> None:
    (tree / ".git" / JOURNAL).unlink(missing_ok=True)
