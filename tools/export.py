"""Write build/vllm's commits after the base tag back into patches/.

    python3 -m tools.export [--check] [--force]

--check writes nothing and exits 1 when patches/ would change: the drift gate
that proves the committed patch files are exactly the tree's commits. It says
which side to bring up to date.

Export only runs when the tree is the newer side: when patches/ changed since
the tree was built (a pull, a hand-written patch), exporting would revert
that, so it refuses and says to run `make tree`. --force exports anyway.
patches/ is rewritten with Ctrl-C held off; an exception puts back what was
there, and a run killed half-way is finished by the next export.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import tempfile
from pathlib import Path

from tools import record
from tools.common import (
    PATCHES,
    TREE,
    ForkError,
    atomic_write,
    fault_point,
    git,
    load_pin,
    main_wrapper,
    say,
    signals_deferred,
    tree_lock,
)

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


def refusal(tree: Path, patches: Path, base: str) -> str:
    """Why exporting would lose work, or "" when the tree is the newer side."""
    built = record.read(tree)
    head = git(tree, "rev-parse", "HEAD").stdout.strip()
    if built is None:
        return (f"{tree} does not record which patches it was built from (older tooling): "
                "run `make tree` first, or `export --force` if you are sure the tree is newer")
    if built.get("pending", {}).get("head") == head:
        return ""  # an export of this very HEAD was cut off: finish it
    if built["patches"] == record.fingerprint(patches):
        return ""  # patches/ is as the tree was built from: the tree moved on
    if head == built["head"]:
        return (f"patches/ changed since {tree} was built (a pull, or a patch edited or added "
                f"by hand) and the tree has no new commits: the tree is out of date, not "
                f"patches/. Run `make tree`; exporting would revert patches/.")
    return (f"patches/ changed since {tree} was built, and the tree has new commits too. "
            f"Save the tree's commits (git -C {tree} format-patch -k -o /tmp/my-work {base}), "
            f"run `make tree`, apply them again there with `git am -k`, then `make export`.")


def fingerprint_of(wanted: dict[str, str]) -> dict:
    return {"series": list(wanted), "files": {
        name: hashlib.sha256(text.encode()).hexdigest() for name, text in sorted(wanted.items())}}


def write_patches(tree: Path, patches: Path, wanted: dict[str, str], head: str) -> None:
    """Rewrite patches/ to wanted: all of it, or (on an exception) none of it."""
    before = {p: p.read_bytes() for p in [*patches.glob("*.patch"), patches / "series"]
              if p.exists()}
    record_file = tree / ".git" / record.BUILT_FROM
    record_before = record_file.read_bytes() if record_file.exists() else None
    built = record.read(tree) or {}
    with signals_deferred():
        record.write(tree, built.get("head", ""), built.get("patches", {}),
                     pending={"head": head})
        try:
            fault_point("pending")
            for number, (name, text) in enumerate(wanted.items(), 1):
                atomic_write(patches / name, text)
                fault_point(f"write-{number}")
            for path in patches.glob("*.patch"):
                if path.name not in wanted:
                    path.unlink()
            fault_point("remove")
            atomic_write(patches / "series", series_text(wanted))
            fault_point("series")
            record.write(tree, head, fingerprint_of(wanted))
            fault_point("record")
        except BaseException:
            for path in patches.glob("*.patch"):
                if path not in before:
                    path.unlink()
            for path, data in before.items():
                path.write_bytes(data)
            if record_before is None:
                record_file.unlink(missing_ok=True)
            else:
                record_file.write_bytes(record_before)
            raise


def export(tree: Path = TREE, patches: Path = PATCHES, base: str | None = None,
           check: bool = False, force: bool = False) -> list[str]:
    """Sync patches/ with the tree; return what changed (or would change)."""
    from tools.tree import recover_switch

    if not (tree / ".git").exists():
        raise ForkError(f"{tree} is not a materialized tree: run `make tree` first")
    base = base or load_pin()["upstream"]["tag"]
    with tree_lock(tree):
        recover_switch(tree)
        dirty = git(tree, "status", "--porcelain", "--untracked-files=no").stdout.strip()
        if dirty:
            raise ForkError(f"{tree} has uncommitted changes; commit them first:\n{dirty}")
        wanted = render(tree, base)
        changes = changes_to(patches, wanted)
        if check:
            return changes
        head = git(tree, "rev-parse", "HEAD").stdout.strip()
        if not changes:
            # Tree and patches/ agree (perhaps after an export that was cut
            # off once every file was written): record that.
            if record.read(tree) != {"head": head, "patches": fingerprint_of(wanted)}:
                record.write(tree, head, fingerprint_of(wanted))
            return changes
        problem = refusal(tree, patches, base)
        if problem and not force:
            raise ForkError(problem)
        patches.mkdir(exist_ok=True)
        write_patches(tree, patches, wanted, head)
        return changes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if patches/ differs from the tree's commits")
    parser.add_argument("--force", action="store_true",
                        help="export even if patches/ changed since the tree was built")
    args = parser.parse_args()
    changes = export(check=args.check, force=args.force)
    for change in changes:
        print(f"  {change}")
    if args.check and changes:
        problem = refusal(TREE, PATCHES, load_pin()["upstream"]["tag"])
        print(problem or "patches/ is out of date with build/vllm: run `make export` and commit",
              flush=True)
        return 1
    say("patches/ matches build/vllm" if not changes else f"wrote {len(changes)} change(s)")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
