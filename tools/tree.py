"""Materialize build/vllm: the pinned sdist as the tagged base, the series on top.

    python3 -m tools.tree [--force] [--python PY]

The tree is built in a scratch repository next to build/vllm and only moved
into place once every patch applied, so a failing patch leaves nothing
half-applied. An existing build/vllm is updated in place (git reset), which
keeps its untracked files (the CPU kernels, the editable install's files).
"""

from __future__ import annotations

import argparse
import re
import shutil
import tarfile
from pathlib import Path

from tools.common import (
    BASE_TREE,
    BUILD,
    PATCHES,
    TREE,
    ForkError,
    git,
    load_pin,
    main_wrapper,
    read_series,
    say,
)

# Files setuptools writes into every sdist; they are not upstream source.
SDIST_ONLY = ("PKG-INFO", "setup.cfg")
# Records the HEAD this tool last produced, to tell our commits from a developer's.
MARKER = "fork-materialized-head"


def unpack_sdist(sdist: Path, dest: Path) -> None:
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = {m.name.split("/", 1)[0] for m in members}
        if len(top) != 1:
            raise ForkError(f"{sdist}: expected one top-level directory, found {sorted(top)}")
        prefix = top.pop() + "/"
        for m in members:
            if not m.name.startswith(prefix):
                continue
            m.name = m.name[len(prefix):]
            tar.extract(m, dest, filter="data")
    for name in SDIST_ONLY:
        (dest / name).unlink(missing_ok=True)
    for egg_info in dest.glob("*.egg-info"):
        shutil.rmtree(egg_info)


def commit_base(repo: Path, pin: dict) -> str:
    up = pin["upstream"]
    dates = {"GIT_AUTHOR_DATE": up["date"], "GIT_COMMITTER_DATE": up["date"]}
    git(repo, "init", "-q", "-b", "main")
    # Upstream's .gitignore decides: files it ignores (vllm/_version.py, a few
    # benchmark outputs) stay in the work tree but not in the base commit.
    git(repo, "add", "-A")
    message = (f"{up['name']} {up['version']} (source distribution)\n\n"
               f"Upstream commit: {up.get('commit', 'unknown')}\n"
               f"sdist sha256: {up['sdist_sha256']}\n")
    git(repo, "commit", "-q", "--no-verify", "-m", message, env=dates)
    tree = git(repo, "rev-parse", "HEAD^{tree}").stdout.strip()
    expected = up.get("base_tree", "")
    if expected and tree != expected:
        raise ForkError(f"base tree is {tree}, pin.toml records {expected}: the sdist was "
                        "unpacked differently (tool change?) or the pin is stale")
    if not expected:
        say(f"base tree {tree} (record it as base_tree in pin.toml)")
    git(repo, "tag", up["tag"])
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def rejected_hunk(patch: Path, am_output: str) -> str:
    """The hunk git could not apply, taken from the patch for the error message."""
    m = re.search(r"patch failed: (\S+):(\d+)", am_output)
    if not m:
        return ""
    path, line = m.group(1), m.group(2)
    text = patch.read_text()
    file_start = text.find(f"diff --git a/{path} ")
    if file_start < 0:
        return ""
    hunk_start = text.find(f"@@ -{line},", file_start)
    if hunk_start < 0:
        hunk_start = text.find(f"@@ -{line} ", file_start)
    if hunk_start < 0:
        return ""
    hunk_end = len(text)
    for marker in ("\n@@ ", "\ndiff --git "):
        pos = text.find(marker, hunk_start + 1)
        if pos >= 0:
            hunk_end = min(hunk_end, pos)
    return f"rejected hunk in {path}:\n{text[hunk_start:hunk_end]}"


def apply_series(repo: Path, patches: Path) -> None:
    for name in read_series(patches):
        patch = patches / name
        if not patch.exists():
            raise ForkError(f"patches/series lists {name}, which does not exist")
        # -k keeps "[Bugfix]" in the subject; no --3way: a patch that no longer
        # applies must be refreshed by a developer, not merged by guesswork.
        proc = git(repo, "am", "-k", "--committer-date-is-author-date", str(patch), check=False)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            git(repo, "am", "--abort", check=False)
            raise ForkError(f"patch {name} does not apply to the tree built so far:\n"
                            f"{output.strip()}\n{rejected_hunk(patch, output)}")
        say(f"applied {name}")


def exported_already(dest: Path, patches: Path, tag: str) -> bool:
    from tools.export import export

    try:
        return export(dest, patches, base=tag, check=True) == []
    except ForkError:
        return False


def install(new: Path, dest: Path, force: bool, patches: Path, tag: str) -> None:
    """Move the freshly built repository into dest without losing a developer's work."""
    if not dest.exists():
        new.rename(dest)
        return
    if not (dest / ".git").exists():
        raise ForkError(f"{dest} exists but is not a git repository; move it away")
    status = git(dest, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if (dest / ".git" / "rebase-apply").exists() or (dest / ".git" / "rebase-merge").exists():
        status = status or "a rebase or git am is in progress"
    head = git(dest, "rev-parse", "HEAD", check=False).stdout.strip()
    marker = dest / ".git" / MARKER
    ours = marker.exists() and marker.read_text().strip() == head
    if not ours and not status and exported_already(dest, patches, tag):
        ours = True  # a developer's commits, already exported to patches/
    if not force and status:
        raise ForkError(f"{dest} has uncommitted changes; commit and `make export` them, "
                        f"or run with --force to discard:\n{status}")
    if not force and not ours:
        raise ForkError(f"{dest} has commits that did not come from patches/ (HEAD {head[:12]}); "
                        "run `make export` to keep them, or --force to discard them")
    git(dest, "fetch", "-q", "--no-tags", str(new), "+refs/heads/main:refs/fork/materialized")
    git(dest, "fetch", "-q", "--force", str(new), "+refs/tags/*:refs/tags/*")
    git(dest, "checkout", "-q", "-B", "main", "refs/fork/materialized")
    git(dest, "reset", "-q", "--hard", "refs/fork/materialized")
    shutil.rmtree(new)


def materialize(sdist: Path, pin: dict, patches: Path = PATCHES, dest: Path = TREE,
                force: bool = False) -> list[tuple[str, str]]:
    """Build dest from sdist + series; return [(commit, subject)] from base to HEAD."""
    scratch = dest.parent / f".{dest.name}.new"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    try:
        say(f"unpacking {sdist.name}")
        unpack_sdist(sdist, scratch)
        commit_base(scratch, pin)
        apply_series(scratch, patches)
        head = git(scratch, "rev-parse", "HEAD").stdout.strip()
        install(scratch, dest, force, patches, pin["upstream"]["tag"])
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    (dest / ".git" / MARKER).write_text(head + "\n")
    # The base is the root commit, so the whole history is base + series.
    log = git(dest, "log", "--reverse", "--format=%H %s", "HEAD").stdout.splitlines()
    return [tuple(line.split(" ", 1)) for line in log if line]


def ensure_base_worktree(pin: dict, tree: Path = TREE, base: Path = BASE_TREE) -> None:
    """build/vllm-base: the untouched base as a worktree, for base-vs-patched runs."""
    tag = pin["upstream"]["tag"]
    if not (base / ".git").exists():
        say(f"adding worktree {base.name} at {tag}")
        git(tree, "worktree", "prune")
        git(tree, "worktree", "add", "-q", "--detach", str(base), tag)
    else:
        git(base, "checkout", "-q", "--detach", tag)
    # Files upstream's .gitignore keeps out of git but the sdist ships.
    for name in ("vllm/_version.py",):
        if (tree / name).exists() and not (base / name).exists():
            shutil.copy2(tree / name, base / name)


def materialize_command(force: bool = False, python: str | None = None) -> None:
    from tools.fetch import fetch_sdist

    pin = load_pin()
    BUILD.mkdir(exist_ok=True)
    sdist = fetch_sdist(pin, python)
    commits = materialize(sdist, pin, force=force)
    if BASE_TREE.exists():
        ensure_base_worktree(pin)
    say(f"{TREE.relative_to(BUILD.parent)} (base, then the series):")
    for sha, subject in commits:
        print(f"  {sha}  {subject}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="replace build/vllm even if it holds unexported work")
    parser.add_argument("--python", help="interpreter whose pip downloads the sdist")
    args = parser.parse_args()
    materialize_command(args.force, args.python)
    return 0


if __name__ == "__main__":
    main_wrapper(main)
