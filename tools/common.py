"""Shared paths and helpers for the fork's tooling (standard library only).

Every verb (fetch, tree, export, lint, env) is its own module; this one only
holds what more than one of them needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

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


def load_pin(path: Path = PIN_FILE) -> dict:
    if not path.exists():
        raise ForkError(f"{path}: the pin file is missing; it says which upstream to build")
    with path.open("rb") as f:
        pin = tomllib.load(f)
    for section, keys in {
        "upstream": ("name", "version", "sdist_sha256", "tag", "date"),
        "cpu_kernels": ("name", "version", "wheel_sha256", "files"),
    }.items():
        for key in keys:
            if not pin.get(section, {}).get(key):
                raise ForkError(f"{path}: [{section}] {key} is missing or empty")
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
