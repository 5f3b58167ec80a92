"""Shared paths and helpers for the fork's tooling (standard library only).

Every verb (fetch, tree, export, lint, env) is its own module; this one only
holds what more than one of them needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN_FILE = ROOT / "pin.toml"
PATCHES = ROOT / "patches"
SERIES = PATCHES / "series"
BUILD = ROOT / "build"
TREE = BUILD / "vllm"
BASE_TREE = BUILD / "vllm-base"
VENV = ROOT / ".venv"

# Downloads outlive a clone: a fresh checkout on the same machine reuses them.
CACHE = Path(
    os.environ.get("VLLM_FORK_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-fork"
)

# Fixed identity for every commit the tooling makes, so hashes are
# reproducible from the same inputs on any machine.
TOOL_IDENTITY = {
    "GIT_AUTHOR_NAME": "vLLM upstream",
    "GIT_AUTHOR_EMAIL": "upstream@vllm.invalid",
    "GIT_COMMITTER_NAME": "vllm-fork tooling",
    "GIT_COMMITTER_EMAIL": "tooling@vllm-fork.invalid",
}


class ForkError(Exception):
    """An error the user can act on; printed without a traceback."""


class InjectedFault(Exception):
    """Raised at a step boundary by the crash-consistency tests."""


# Crash-consistency tests (tools/test_crash.py) name a step and what happens
# there: VLLM_FORK_TEST_FAULT=STEP:raise|sigint|sigkill, or =trace to list steps.
FAULT_ENV = "VLLM_FORK_TEST_FAULT"


def fault_point(step: str) -> None:
    """A boundary between two steps of `tree` or `export`."""
    spec = os.environ.get(FAULT_ENV, "")
    if spec == "trace":
        print(f"fault point: {step}", file=sys.stderr, flush=True)
        return
    name, _, action = spec.partition(":")
    if name != step:
        return
    if action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise InjectedFault(step)


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done: a step that
    must not stop half-way. git children inherit the mask. SIGKILL cannot be
    held; the journals in tree.py and export.py make a killed step resumable."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def tree_lock(tree: Path):
    """One `tree` or `export` at a time on a materialized tree. flock is
    released by the kernel when its holder dies, so a killed run never
    leaves a stale lock behind."""
    tree.parent.mkdir(parents=True, exist_ok=True)
    path = tree.parent / f".{tree.name}.lock"
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ForkError(f"another `make tree` or `make export` is using {tree} "
                            f"(pid {holder}); wait for it to finish and run again") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)


def atomic_write(path: Path, text: str) -> None:
    """Replace path's contents in one rename: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ForkError(f"{path} is unreadable ({e}); delete it and run again") from e


SHA256 = re.compile(r"^[0-9a-f]{64}$")


def load_pin(path: Path = PIN_FILE) -> dict:
    if not path.exists():
        raise ForkError(f"{path}: the pin file is missing; it says which upstream to build")
    try:
        with path.open("rb") as f:
            pin = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ForkError(f"{path} is not valid TOML: {e}; fix it (git diff {path.name} "
                        "shows what changed)") from e
    for section, keys in {
        "upstream": ("name", "version", "sdist_sha256", "tag", "date"),
        "cpu_kernels": ("name", "version", "wheel_sha256", "files"),
    }.items():
        for key in keys:
            if not pin.get(section, {}).get(key):
                raise ForkError(f"{path}: [{section}] {key} is missing or empty")
    for section, key in (("upstream", "sdist_sha256"), ("cpu_kernels", "wheel_sha256")):
        if not SHA256.match(str(pin[section][key])):
            raise ForkError(f"{path}: [{section}] {key} must be 64 lowercase hex digits "
                            f"(sha256sum's form), not {pin[section][key]!r}")
    return pin


def git(repo: Path, *args: str, env: dict | None = None, check: bool = True,
        capture: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **TOOL_IDENTITY, **(env or {})}
    # The user's git config must not change what the tooling produces.
    full_env.setdefault("GIT_CONFIG_GLOBAL", os.devnull)
    full_env["GIT_CONFIG_NOSYSTEM"] = "1"
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        env=full_env,
        input=stdin,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        raise ForkError(
            f"git {' '.join(args)} failed in {repo}:\n{proc.stdout or ''}{proc.stderr or ''}"
        )
    return proc


def read_series(patches: Path = PATCHES) -> list[str]:
    series = patches / "series"
    if not series.exists():
        raise ForkError(f"{series}: the order file is missing")
    names = []
    for line in series.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    return names


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main_wrapper(main) -> None:
    """Run a verb's main, turning ForkError into a one-line message and exit 1."""
    try:
        sys.exit(main() or 0)
    except ForkError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
