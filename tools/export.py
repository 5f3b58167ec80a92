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
from pathlib import Path

from tools import record
from tools.common import (
    PATCHES,
    TREE,
    ForkError,
    all_or_nothing,
    fault_point,
    git,
    load_pin,
    main_wrapper,
    say,
    signals_deferred,
    tree_lock,
    write_files,
)
from tools.series import (
    changes_to,
    fingerprint_of_dir,
    fingerprint_of_rendered,
    render,
    series_text,
)
from tools.switch import recover_switch


def refusal(tree: Path, patches: Path, base: str) -> str:
    """Why exporting would lose work, or "" when the tree is the newer side."""
    built = record.read(tree)
    head = git(tree, "rev-parse", "HEAD").stdout.strip()
    if built is None:
        return (f"{tree} does not record which patches it was built from (older tooling): "
                "run `make tree` first, or `export --force` if you are sure the tree is newer")
    if built.get("pending", {}).get("head") == head:
        return ""  # an export of this very HEAD was cut off: finish it
    if built["patches"] == fingerprint_of_dir(patches):
        return ""  # patches/ is as the tree was built from: the tree moved on
    if head == built["head"]:
        return (f"patches/ changed since {tree} was built (a pull, or a patch edited or added "
                f"by hand) and the tree has no new commits: the tree is out of date, not "
                f"patches/. Run `make tree`; exporting would revert patches/.")
    return (f"patches/ changed since {tree} was built, and the tree has new commits too. "
            f"Save the tree's commits (git -C {tree} format-patch -k -o /tmp/my-work {base}), "
            f"run `make tree`, apply them again there with `git am -k`, then `make export`.")


def write_patches(tree: Path, patches: Path, wanted: dict[str, str], head: str) -> None:
    """Rewrite patches/ to wanted: all of it, or (on an exception) none of it."""
    changes: dict[Path, str | None] = {patches / name: text for name, text in wanted.items()}
    changes.update({path: None for path in sorted(patches.glob("*.patch"))
                    if path.name not in wanted})
    changes[patches / "series"] = series_text(wanted)
    built = record.read(tree) or {}
    with signals_deferred(), all_or_nothing([*changes, tree / ".git" / record.BUILT_FROM]):
        # A kill from here on is finished by the next export (refusal()).
        record.write(tree, built.get("head", ""), built.get("patches", {}),
                     pending={"head": head})
        fault_point("pending")
        write_files(changes, fault_point)
        record.write(tree, head, fingerprint_of_rendered(wanted))
        fault_point("record")


def export(tree: Path = TREE, patches: Path = PATCHES, base: str | None = None,
           check: bool = False, force: bool = False) -> list[str]:
    """Sync patches/ with the tree; return what changed (or would change)."""
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
            if record.read(tree) != {"head": head, "patches": fingerprint_of_rendered(wanted)}:
                record.write(tree, head, fingerprint_of_rendered(wanted))
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
