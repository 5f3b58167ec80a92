"""What build/vllm was built from: `fork-built-from.json` in its .git directory.

It holds the commit `tree` (or `export`) last left at HEAD and the series'
fingerprint (tools/series.py) at that moment. `export` compares it with
patches/ now to tell which side moved on: patches/ (a pull: the tree is
stale, rebuild it) or the tree (a developer's commits: export them).
`export` adds `pending` while it rewrites patches/, so that a run killed
half-way is finished by the next.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools.common import atomic_write, read_json

BUILT_FROM = "fork-built-from.json"


def read(tree: Path) -> dict | None:
    return read_json(tree / ".git" / BUILT_FROM)


def write(tree: Path, head: str, patches: dict, pending: dict | None = None) -> None:
    data = {"head": head, "patches": patches}
    if pending:
        data["pending"] = pending
    atomic_write(tree / ".git" / BUILT_FROM, json.dumps(data, indent=1, sort_keys=True) + "\n")
