"""Shared paths and helpers for the fork's tooling (standard library only).

Every verb (fetch, tree, export, lint, env) is its own module; this one only
holds what more than one of them needs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN_FILE = ROOT / "pin.toml"
PATCHES = ROOT / "patches"
SERIES = PATCHES / "series"
BUILD = ROOT / "build"
TREE = BUILD / "vllm"
BASE_TREE = BUILD / "vllm-base"
VENV = ROOT / ".venv"
# Newer runai-model-streamer releases, each installed beside the locked 0.15.7
# (which stays the environment's own) in a directory of its own, put on
# sys.path per process by the proofs: in .venv on CPU (make env), under build/
# on a GPU node (make gpu-env). 0.17.1 is the one vLLM 0.34 requires.
RUNAI_SIDE_VERSIONS = ("0.17.0", "0.17.1")
RUNAI_NEWEST = RUNAI_SIDE_VERSIONS[-1]


def runai_side_dir(version: str, device: str) -> Path:
    return VENV / f"runai-{version}" if device == "cpu" else BUILD / f"runai-{version}-cuda"


def runai_side_version(scenario: str) -> str | None:
    """The side release a scenario or loader name streams with
    ("runai-0.17.1-views-tp1" -> "0.17.1"); None for the locked one and `auto`."""
    return next((v for v in RUNAI_SIDE_VERSIONS if f"runai-{v}" in scenario), None)

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
# there: VLLM_FORK_TEST_FAULT=STEP:raise|sigint|sigkill|pause, or =trace to
# list steps. pause holds the run there until the file VLLM_FORK_TEST_RELEASE
# exists, so that a test can start a second run while the first is inside.
FAULT_ENV = "VLLM_FORK_TEST_FAULT"
RELEASE_ENV = "VLLM_FORK_TEST_RELEASE"


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
    elif action == "pause":
        print(f"paused at {step}", file=sys.stderr, flush=True)
        release = Path(os.environ[RELEASE_ENV])
        for _ in range(1200):
            if release.exists():
                return
            time.sleep(0.05)
        raise InjectedFault(f"{step}: never released")
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


@contextlib.contextmanager
def all_or_nothing(paths):
    """Files the block writes or deletes: on any exception, every one of them
    is put back as it was (absent if it was absent)."""
    before = {path: path.read_bytes() for path in paths if path.exists()}
    try:
        yield
    except BaseException:
        for path in paths:
            if path in before:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(before[path])
            else:
                path.unlink(missing_ok=True)
        raise


def write_files(changes: dict[Path, str | None], fault=lambda step: None) -> None:
    """Write each file (None: delete it), each in one rename; fault(step) after
    each, for the crash tests. Inside all_or_nothing, all or none of them."""
    for number, (path, text) in enumerate(changes.items(), 1):
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
        fault(f"write-{number}")


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


# -- running other programs ---------------------------------------------------

# How much of a failed command's output an error shows.
TAIL_LINES = 30

# A worker's lines start with "(Worker_TP0 pid=...)", and vLLM's logger puts
# "ERROR 12-01 15:31:02 [file.py:772]" before every line of a traceback it logs.
# Under Ray, a worker's lines come through the engine core and Ray's log
# monitor: "(EngineCore pid=1) \x1b[36m(RayWorkerProc pid=2)\x1b[0m (Worker_TP1 pid=2)".
WORKER_PREFIX = re.compile(r"^(\([\w.:-]+ pid=\d+\)\s*)+")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LOG_PREFIX = re.compile(r"^(ERROR|CRITICAL) [\d-]+ [\d:.]+ \[[^\]]*\]\s*")
# The last line of a traceback: the exception and its message.
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Interrupt): ")
# What vLLM's front end and engine core raise once a worker has died: never
# the cause ("cancelled" is the engine core's queue, shut down under it).
ECHOES = ("Engine core initialization failed", "WorkerProc initialization failed",
          "RuntimeError: cancelled")


def root_cause(output: str) -> str | None:
    """The first exception a worker printed or, if none did, the process
    itself; never the echoes of a worker's death in the engine core and the
    front end, which may be printed first."""
    found = []
    for line in output.splitlines():
        line = ANSI_ESCAPE.sub("", line).strip()
        bare = ERROR_LOG_PREFIX.sub("", WORKER_PREFIX.sub("", line))
        if EXCEPTION_LINE.match(bare) and not any(e in bare for e in ECHOES):
            found.append(line)
    workers = [line for line in found
               if re.match(r"^(\([\w.:-]+ pid=\d+\)\s*)*\((Worker|RayWorkerProc)", line)]
    return (workers or found or [None])[0]


class CommandFailed(ForkError):
    """A command exited non-zero (.returncode) or ran out of time (.returncode
    None); .output is all it printed."""

    def __init__(self, message: str, output: str, returncode: int | None):
        super().__init__(message)
        self.output, self.returncode = output, returncode


def run(cmd: list, what: str, env: dict | None = None, cwd: Path | None = None,
        timeout: float | None = None, progress: Callable[[str], None] | None = None) -> str:
    """Run cmd to its end and return what it printed (stdout and stderr together).

    progress, if given, sees every line as it comes (long steps show it).
    A non-zero exit or a timeout raises CommandFailed naming `what`, the root
    cause if one was printed, and the last TAIL_LINES lines. The command runs
    in its own process group, so a timeout or Ctrl-C stops its children too."""
    cmd = [str(part) for part in cmd]
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, text=True, errors="replace",
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError as e:
        raise ForkError(f"{what}: cannot run {cmd[0]}: {e.strerror}") from e
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, stop) if timeout else None
    lines: list[str] = []
    try:
        if timer:
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if progress:
                progress(line.rstrip("\n"))
        proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        if timer:
            timer.cancel()
    output = "".join(lines)
    if proc.returncode == 0 and not timed_out.is_set():
        return output
    tail = "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])
    if timed_out.is_set():
        raise CommandFailed(f"{what} did not finish in {timeout:.0f} s and was stopped; "
                            f"the end of its output:\n{tail}", output, None)
    cause = root_cause(output)
    first = f"{what} failed (exit {proc.returncode}" + (f"; root cause: {cause})" if cause else ")")
    raise CommandFailed(f"{first}:\n{tail}" + (f"\n{what} failed; root cause: {cause}"
                                                if cause else ""), output, proc.returncode)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen, grace_s: float = 60) -> None:
    """Stop a process started with start_new_session and everything in its
    group: SIGTERM, then SIGKILL after grace_s. A group that is already gone
    is no error: the caller's own error (why the process died) must be the
    one the user sees."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while its children (an engine core) live on.
    _kill_group(proc)


# -- entry points ---------------------------------------------------------------

DEBUG_ENV = "VLLM_FORK_DEBUG"


def describe(error: BaseException) -> str | None:
    """One line for a failure a user can act on, or None for a bug."""
    if isinstance(error, ForkError):
        return str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (f"the disk is full (writing {error.filename or 'a file'}); free some space "
                "and run again")
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or error}{where}"
    if isinstance(error, subprocess.TimeoutExpired):
        return f"{' '.join(map(str, error.cmd))[:120]} did not finish in {error.timeout:.3g} s"
    if isinstance(error, subprocess.CalledProcessError):
        return f"{' '.join(map(str, error.cmd))[:120]} failed with exit {error.returncode}"
    return None


def main_wrapper(main) -> None:
    """Run a verb's main. A failure the user can act on (a ForkError, a full
    disk, a command that failed or timed out) is one line and exit 1; so is
    anything else, with a hint. VLLM_FORK_DEBUG=1 shows the traceback."""
    try:
        sys.exit(main() or 0)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        message = describe(e)
        if message is None:
            message = (f"unexpected {type(e).__name__}: {e} "
                       f"(run again with {DEBUG_ENV}=1 for the traceback)")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
