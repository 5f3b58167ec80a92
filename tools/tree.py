"""Materialize build/vllm: the pinned sdist as the tagged base, the series on top.

    python3 -m tools.tree [--force] [--python PY]

The tree is built in a scratch repository next to build/vllm. An existing
build/vllm then switches to it in one resumable step: the new commits are
fetched, a journal names the target, and main, HEAD and the work tree move
to it with Ctrl-C held off; a run killed half-way is finished by the next
run. Untracked files (the CPU kernels, the editable install's files) stay.
A lock keeps two runs apart, and build/vllm records which patches it was
built from (tools/record.py), so that `export` knows which side is newer.
The switch and its journal are tools/switch.py's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tarfile
from pathlib import Path

from tools import record, series
from tools.common import (
    BASE_TREE,
    BUILD,
    PATCHES,
    TREE,
    ForkError,
    fault_point,
    git,
    load_pin,
    main_wrapper,
    read_series,
    say,
    tree_lock,
)
from tools.switch import recover_switch, switch

# Files setuptools writes into every sdist; they are not upstream source.
SDIST_ONLY = ("PKG-INFO", "setup.cfg")


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


def checked_series(patches: Path) -> list[str]:
    """The series' patch names, every one checked before anything is applied."""
    names = read_series(patches)
    missing = [n for n in names if not (patches / n).is_file()]
    if missing:
        raise ForkError(f"{patches / 'series'} lists {', '.join(missing)}, which "
                        f"{'does' if len(missing) == 1 else 'do'} not exist in {patches}")
    if not names:
        say(f"{patches / 'series'} is empty: the tree is the bare upstream base")
    return names


# git am's advice names a scratch repository that is gone by the time it is read.
AM_ADVICE = re.compile(r"^(hint: .*|When you have resolved this problem.*|If you prefer to skip"
                       r" this patch.*|To restore the original branch.*|Use 'git am --show-"
                       r"current-patch.*)$", re.MULTILINE)


def apply_series(repo: Path, patches: Path, names: list[str]) -> None:
    for number, name in enumerate(names, 1):
        patch = patches / name
        # -k keeps "[Bugfix]" in the subject; no --3way: a patch that no longer
        # applies must be refreshed by a developer, not merged by guesswork.
        proc = git(repo, "am", "-k", "--committer-date-is-author-date", str(patch), check=False)
        if proc.returncode != 0:
            output = AM_ADVICE.sub("", proc.stdout + proc.stderr).strip()
            git(repo, "am", "--abort", check=False)
            raise ForkError(f"patch {name} does not apply to the tree built so far:\n"
                            f"{output}\n{rejected_hunk(patch, output)}\n"
                            f"Nothing was changed. Refresh the patch (see README: change a "
                            f"patch) against the pinned upstream.")
        say(f"applied {name}")
        fault_point(f"apply-{number}")


def work_at_risk(dest: Path, patches: Path, tag: str) -> str:
    """What a switch of dest would throw away that is in neither patches/ nor
    a build record: uncommitted edits, an unfinished git am or rebase, or
    commits on HEAD or main (the branch the switch moves) not yet exported."""
    status = git(dest, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if status:
        return (f"{dest} has uncommitted changes; commit and `make export` them, or run "
                f"with --force to discard them:\n{status}")
    for state in ("rebase-apply", "rebase-merge"):
        if (dest / ".git" / state).exists():
            return (f"{dest} has a git am or rebase in progress; finish or abort it "
                    "(git am --abort / git rebase --abort), or run with --force")
    built = (record.read(dest) or {}).get("head")
    for ref in ("HEAD", "refs/heads/main"):
        sha = git(dest, "rev-parse", "-q", "--verify", ref, check=False).stdout.strip()
        if sha and sha != built and not series.exported(dest, patches, tag, sha):
            return (f"{dest}: {ref} ({sha[:12]}) has commits that are not in patches/; run "
                    "`make export` to keep them, or --force to discard them")
    return ""


def install(new: Path, dest: Path, force: bool, patches: Path, tag: str,
            fingerprint: dict) -> None:
    """Put the freshly built repository in dest without losing a developer's work."""
    head = git(new, "rev-parse", "HEAD").stdout.strip()
    if not dest.exists():
        record.write(new, head, fingerprint)
        fault_point("rename")
        new.rename(dest)  # one rename: dest is absent or complete
        return
    if not (dest / ".git").is_dir():
        raise ForkError(f"{dest} exists but is not a git repository; move it away")
    recover_switch(dest)
    if force:
        # An interrupted git am or rebase would make every later run refuse.
        git(dest, "am", "--abort", check=False)
        git(dest, "rebase", "--abort", check=False)
        for state in ("rebase-apply", "rebase-merge"):
            shutil.rmtree(dest / ".git" / state, ignore_errors=True)
    else:
        risk = work_at_risk(dest, patches, tag)
        if risk:
            raise ForkError(risk)
    fault_point("fetch")
    git(dest, "fetch", "-q", "--no-tags", str(new), "+refs/heads/main:refs/fork/materialized")
    git(dest, "fetch", "-q", "--force", str(new), "+refs/tags/*:refs/tags/*")
    switch(dest, head, fingerprint)


def materialize(sdist: Path, pin: dict, patches: Path = PATCHES, dest: Path = TREE,
                force: bool = False) -> list[tuple[str, str]]:
    """Build dest from sdist + series; return [(commit, subject)] from base to HEAD."""
    with tree_lock(dest):
        names = checked_series(patches)
        fingerprint = series.fingerprint_of_dir(patches)
        scratch = dest.parent / f".{dest.name}.new"
        if scratch.exists():
            shutil.rmtree(scratch)  # left by a killed run
        scratch.mkdir(parents=True)
        try:
            fault_point("scratch")
            say(f"unpacking {sdist.name}")
            unpack_sdist(sdist, scratch)
            fault_point("unpack")
            commit_base(scratch, pin)
            fault_point("base")
            apply_series(scratch, patches, names)
            install(scratch, dest, force, patches, pin["upstream"]["tag"], fingerprint)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        fault_point("done")
    # The base is the root commit, so the whole history is base + series.
    log = git(dest, "log", "--reverse", "--format=%H %s", "HEAD").stdout.splitlines()
    return [tuple(line.split(" ", 1)) for line in log if line]


# Files upstream's .gitignore keeps out of git but the sdist ships.
SDIST_SHIPPED_IGNORED = ("vllm/_version.py",)


def sdist_member(sdist: Path, name: str) -> bytes | None:
    """One file of the sdist, by its path inside the top-level directory."""
    with tarfile.open(sdist) as tar:
        for m in tar:
            if m.isfile() and m.name.split("/", 1)[-1] == name:
                extracted = tar.extractfile(m)
                return extracted.read() if extracted else None
    return None


def ensure_base_worktree(pin: dict, tree: Path = TREE, base: Path = BASE_TREE,
                         sdist: Path | None = None) -> None:
    """build/vllm-base: the untouched base as a worktree, for base-vs-patched runs.
    Given the sdist, its ignored-but-shipped files are taken from there: an
    install into build/vllm rewrites them (the version), the base stays as
    released."""
    tag = pin["upstream"]["tag"]
    if base.exists() and git(base, "rev-parse", "--git-dir", check=False).returncode != 0:
        # Its repository (build/vllm) was removed and made anew: nothing in it
        # is anyone's work (the kernels come back with `make env`).
        say(f"{base.name} belonged to a {tree.name} that is gone; making it again")
        shutil.rmtree(base)
    if not base.exists():
        say(f"adding worktree {base.name} at {tag}")
        git(tree, "worktree", "prune")
        git(tree, "worktree", "add", "-q", "--detach", str(base), tag)
    else:
        git(base, "checkout", "-q", "--detach", tag)
    for name in SDIST_SHIPPED_IGNORED:
        released = sdist_member(sdist, name) if sdist else None
        if released is not None:
            if not (base / name).exists() or (base / name).read_bytes() != released:
                (base / name).write_bytes(released)
        elif (tree / name).exists() and not (base / name).exists():
            shutil.copy2(tree / name, base / name)


def materialize_command(force: bool = False, python: str | None = None,
                        index_args: list[str] | None = None) -> None:
    from tools.fetch import fetch_sdist

    pin = load_pin()
    BUILD.mkdir(exist_ok=True)
    sdist = fetch_sdist(pin, python, index_args=index_args)
    commits = materialize(sdist, pin, force=force)
    if BASE_TREE.exists():
        with tree_lock(TREE):
            ensure_base_worktree(pin, sdist=sdist)
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
