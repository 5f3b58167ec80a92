"""Move build/vllm to a new commit in one resumable step, with its journal.

`fork-switch.json` in the tree's .git directory names the target while a
switch is under way. A run killed half-way leaves it behind, and the next
`tree` or `export` finishes the switch before doing anything else, so the
tree is the old one or the new one, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path

from tools import record
from tools.common import atomic_write, fault_point, git, read_json, say, signals_deferred

JOURNAL = "fork-switch.json"


def read_journal(tree: Path) -> dict | None:
    return read_json(tree / ".git" / JOURNAL)


def write_journal(tree: Path, head: str, patches: dict) -> None:
    atomic_write(tree / ".git" / JOURNAL,
                 json.dumps({"to": head, "patches": patches}, indent=1, sort_keys=True) + "\n")


def clear_journal(tree: Path) -> None:
    (tree / ".git" / JOURNAL).unlink(missing_ok=True)


def recover_switch(dest: Path) -> None:
    """Finish a switch that a killed run left half-done (its journal says where to)."""
    journal = read_journal(dest)
    if journal is None:
        return
    say(f"finishing the interrupted switch of {dest.name} to {journal['to'][:12]}")
    # git was killed holding these; nothing else runs in dest while we hold the lock.
    for lock in ("index.lock", "HEAD.lock", "refs/heads/main.lock"):
        (dest / ".git" / lock).unlink(missing_ok=True)
    switch(dest, journal["to"], journal["patches"])


def switch(dest: Path, head: str, fingerprint: dict) -> None:
    """Move dest's main, HEAD and work tree to head in one resumable step."""
    with signals_deferred():
        write_journal(dest, head, fingerprint)
        try:
            move_to(dest, head, fingerprint, fault_point)
        except BaseException:
            # The journal's promise: a started switch is finished, so dest is
            # never left between the old tree and the new one.
            move_to(dest, head, fingerprint, lambda step: None)
            raise


def move_to(dest: Path, head: str, fingerprint: dict, fault) -> None:
    fault("journal")
    git(dest, "update-ref", "refs/heads/main", head)
    fault("update-ref")
    git(dest, "symbolic-ref", "HEAD", "refs/heads/main")
    git(dest, "reset", "-q", "--hard", head)
    fault("reset")
    record.write(dest, head, fingerprint)
    fault("record")
    clear_journal(dest)
