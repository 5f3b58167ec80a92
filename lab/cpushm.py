"""Shared-memory segments that killed CPU engines leave behind.

vLLM's CPU engines at tensor parallel 2 and up share memory through
/dev/shm/<port>-<group>-cpushm_<rank>, named after the port of the engine's
distributed init (cpu_worker.py: VLLM_DIST_IDENT), and unlink them only on a
clean shutdown. An engine that is killed (a stopped run, Ray's workers when
the cluster goes) leaves its segments behind, 4 MiB of memory each. A later
engine that happens to get the same port then fails to start with "create shm
in SHMManager failed. errno: 17" (EEXIST): a fresh clone's `make demo` did, at
row 34 of 47.

sweep() removes such segments before an engine starts: only this user's,
only ones no process maps, and only ones older than MIN_AGE_S (an engine
that is starting maps its segment within seconds of creating it).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

SHM = Path("/dev/shm")
SEGMENT = re.compile(r"^\d+-.+-cpushm_\d+$")
MIN_AGE_S = 60


def mapped_paths() -> set[str]:
    """Every /dev/shm-style path that a live process maps (those we may read)."""
    paths = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps") as f:
                paths.update(line.split(maxsplit=5)[5].strip() for line in f
                             if "cpushm" in line and line.count(" ") >= 5)
        except (OSError, IndexError):
            continue  # gone, or another user's (which cannot open our 0600 files)
    return paths


def sweep(shm: Path = SHM, now: float | None = None) -> list[str]:
    """Remove leftover segments; the names of those removed."""
    now = time.time() if now is None else now
    if not shm.is_dir():
        return []
    in_use = mapped_paths()
    removed = []
    for path in sorted(shm.iterdir()):
        if not SEGMENT.match(path.name):
            continue
        try:
            st = path.stat()
            if st.st_uid != os.getuid() or now - st.st_ctime < MIN_AGE_S or str(path) in in_use:
                continue
            path.unlink()
        except OSError:
            continue  # removed or changed meanwhile
        removed.append(path.name)
    return removed
