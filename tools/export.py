"""Write build/vllm's commits after the base tag back into patches/.

    python3 -m tools.export [--check]

--check writes nothing and exits 1 when patches/ would change: the drift gate
that proves the committed patch files are exactly the tree's commits.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from tools.common import PATCHES, TREE, ForkError, git, load_pin, main_wrapper, say

# Deterministic output: the same commits give byte-identical patch files on
# any machine and git configuration (common.git ignores the user's config).
FORMAT_PATCH = ["format-patch", "-k", "--no-stat", "--no-signature", "--zero-commit",
                "--full-index", "-M", "--no-numbered", "--encoding=UTF-8",
                "--filename-max-length=100"]


def render(tree: Path, base: str) -> dict[str, str]:
    """{patch file name: contents} for base..HEAD, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        git(tree, *FORMAT_PATCH, "-o", tmp, f"{base}..HEAD")
        out = {}
        for f in sorted(Path(tmp).glob("*.patch")):
            # format-patch numbers its files; the order file holds the order, so
            # a reorder or insert does not rename every later patch.
            out[re.sub(r"^\d{4}-", "", f.name)] = f.read_text()
        if len(out) != len(list(Path(tmp).glob("*.patch"))):
            raise ForkError("two commits have subjects that give the same patch file name")
        return out


def export(tree: Path = TREE, patches: Path = PATCHES, base: str | None = None,
           check: bool = False) -> list[str]:
    """Sync patches/ with the tree; return what changed (or would change)."""
    if not (tree / ".git").exists():
        raise ForkError(f"{tree} is not a materialized tree: run `make tree` first")
    base = base or load_pin()["upstream"]["tag"]
    dirty = git(tree, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if dirty:
        raise ForkError(f"{tree} has uncommitted changes; commit them first:\n{dirty}")
    wanted = render(tree, base)
    series_text = "".join(f"{name}\n" for name in wanted)
    existing = {p.name: p.read_text() for p in patches.glob("*.patch")}
    series_file = patches / "series"
    changes = []
    for name, text in wanted.items():
        if existing.get(name) != text:
            changes.append(("added " if name not in existing else "changed ") + name)
    changes += [f"removed {name}" for name in existing if name not in wanted]
    if not series_file.exists() or series_file.read_text() != series_text:
        changes.append("changed series")
    if check or not changes:
        return changes
    patches.mkdir(exist_ok=True)
    for name in existing:
        if name not in wanted:
            (patches / name).unlink()
    for name, text in wanted.items():
        (patches / name).write_text(text)
    series_file.write_text(series_text)
    return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if patches/ differs from the tree's commits")
    args = parser.parse_args()
    changes = export(check=args.check)
    for change in changes:
        print(f"  {change}")
    if args.check and changes:
        print("patches/ is out of date with build/vllm: run `make export` and commit",
              flush=True)
        return 1
    say("patches/ matches build/vllm" if not changes else f"wrote {len(changes)} change(s)")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
