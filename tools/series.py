"""The series as files: patches/ rendered from a tree's commits, compared with
what patches/ holds, and fingerprinted.

`tree` and `export` both read the series through this module; the
fingerprint is the one that build records (tools/record.py) store.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

from tools.common import ForkError, git, read_series

# Deterministic output: the same commits give byte-identical patch files on
# any machine and git configuration (common.git ignores the user's config).
FORMAT_PATCH = ["format-patch", "-k", "--no-stat", "--no-signature", "--zero-commit",
                "--full-index", "-M", "--no-numbered", "--encoding=UTF-8",
                "--filename-max-length=100"]


def render(tree: Path, base: str, head: str = "HEAD") -> dict[str, str]:
    """{patch file name: contents} for base..head, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        git(tree, *FORMAT_PATCH, "-o", tmp, f"{base}..{head}")
        out = {}
        for f in sorted(Path(tmp).glob("*.patch")):
            # format-patch numbers its files; the order file holds the order, so
            # a reorder or insert does not rename every later patch.
            out[re.sub(r"^\d{4}-", "", f.name)] = f.read_text()
        if len(out) != len(list(Path(tmp).glob("*.patch"))):
            raise ForkError("two commits have subjects that give the same patch file name")
        return out


def series_text(wanted: dict[str, str]) -> str:
    return "".join(f"{name}\n" for name in wanted)


def changes_to(patches: Path, wanted: dict[str, str]) -> list[str]:
    """What writing wanted into patches/ would change, one line each."""
    existing = {p.name: p.read_text(errors="replace") for p in patches.glob("*.patch")}
    changes = [("added " if name not in existing else "changed ") + name
               for name, text in wanted.items() if existing.get(name) != text]
    changes += [f"removed {name}" for name in existing if name not in wanted]
    series = patches / "series"
    if not series.exists() or series.read_text(errors="replace") != series_text(wanted):
        changes.append("changed series")
    return changes


def exported(tree: Path, patches: Path, base: str, head: str = "HEAD") -> bool:
    """Whether patches/ holds exactly the commits base..head."""
    return changes_to(patches, render(tree, base, head)) == []


def fingerprint(order: list[str] | None, files: dict[str, bytes]) -> dict:
    """The series order and the sha256 of every patch file."""
    return {"series": order,
            "files": {name: hashlib.sha256(data).hexdigest()
                      for name, data in sorted(files.items())}}


def fingerprint_of_dir(patches: Path) -> dict:
    order = read_series(patches) if (patches / "series").exists() else None
    return fingerprint(order, {p.name: p.read_bytes() for p in patches.glob("*.patch")})


def fingerprint_of_rendered(wanted: dict[str, str]) -> dict:
    """The fingerprint patches/ will have once wanted is written into it."""
    return fingerprint(list(wanted), {name: text.encode() for name, text in wanted.items()})


def identity(root: Path | None = None, tree: Path | None = None,
             patches: Path | None = None) -> dict:
    """Which series a run used, for its results: the fork's commit (with
    `-dirty` when the repository has uncommitted changes), a short digest of
    the series fingerprint, and the tree's HEAD."""
    from tools.common import PATCHES, ROOT, TREE

    root, tree, patches = root or ROOT, tree or TREE, patches or PATCHES
    commit = git(root, "rev-parse", "HEAD", check=False).stdout.strip() or "unknown"
    if git(root, "status", "--porcelain", "--untracked-files=no", check=False).stdout.strip():
        commit += "-dirty"
    digest = hashlib.sha256(json.dumps(fingerprint_of_dir(patches), sort_keys=True)
                            .encode()).hexdigest()[:16]
    head = git(tree, "rev-parse", "HEAD", check=False).stdout.strip() or "unknown"
    return {"fork_commit": commit, "series_fingerprint": digest, "tree_head": head}


def describe_identity(recorded: dict | None) -> str:
    """One line for a page: which series made it."""
    if not recorded:
        return ("not recorded (this run predates the record; remake it to have it "
                "named)")
    return (f"fork commit `{recorded['fork_commit'][:12]}`, series fingerprint "
            f"`{recorded['series_fingerprint']}`, tree HEAD `{recorded['tree_head'][:12]}`")
