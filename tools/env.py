"""Create .venv: the CPU environment that runs the materialized trees.

    python3 -m tools.env [packages|all]

`packages` installs only the locked packages (torch and friends), which is
what reading the vLLM sdist's metadata needs. `all` (the default) also
materializes build/vllm, puts the precompiled CPU kernels into it and into
the base worktree, installs the tree editable, installs the test-only CPU
plugins and the second streamer version, and runs a smoke check.
Each step is skipped when its inputs have not changed since it last ran.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from tools import common
from tools.common import (
    BASE_TREE,
    ROOT,
    RUNAI_SIDE_VERSIONS,
    TREE,
    VENV,
    ForkError,
    load_pin,
    main_wrapper,
    runai_side_dir,
    say,
)

LOCK = ROOT / "env" / "requirements.lock"
# Test-environment-only vLLM plugins (see each module's docstring).
PLUGINS = [ROOT / "env" / "cpu_moe_workaround", ROOT / "env" / "cpu_ray_resource"]
# The newer streamers (copy-returning by default), each installed beside 0.15.7
# and put on sys.path per process (see lab/trees.tree_env).
RUNAI_SIDE = {version: f"runai-model-streamer=={version}" for version in RUNAI_SIDE_VERSIONS}
PY = VENV / "bin" / "python"
# The locked packages on disk, measured in a new venv: 6.0 GB stay in it, and
# pip's temporary directory held up to 1.9 GB more of downloaded wheels until
# the install ended (7.9 GB at the peak). Checked before pip starts, so that a
# full disk is one line, not pip's error minutes into the install.
PACKAGES_BYTES = 6_100_000_000
PACKAGES_TEMP_BYTES = 2_000_000_000
# What `make gpu-env` put into build/vllm (tools/gpu_env.py): CUDA kernels,
# their Python files and a rewritten vllm/_version.py.
CUDA_FILES = TREE / ".git" / "fork-cuda-files.json"


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
    """Run a short step quietly; on failure, the end of its output says why."""
    return common.run(cmd, " ".join(map(str, cmd[:6])) + " ...",
                      env={**os.environ, **(env or {})}, cwd=cwd)


PIP_PROGRESS = ("Collecting", "Installing collected", "Successfully installed")


def show_pip_progress(line: str) -> None:
    if line.startswith(PIP_PROGRESS):
        print(f"    {line[:150]}", flush=True)


def run_showing_progress(cmd: list[str], env: dict | None = None,
                         cwd: Path | None = None) -> None:
    """Run a long pip step, passing on its per-package lines as they come."""
    common.run(cmd, " ".join(map(str, cmd[:6])) + " ...", env={**os.environ, **(env or {})},
               cwd=cwd, progress=show_pip_progress)


def stamp_ok(name: str, key: str) -> bool:
    stamp = VENV / f".stamp-{name}"
    return stamp.exists() and stamp.read_text() == key


def write_stamp(name: str, key: str) -> None:
    (VENV / f".stamp-{name}").write_text(key)


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
    return h.hexdigest()


def check_free_space(needs: list[tuple[Path, int, str]]) -> None:
    """Refuse to start unless each disk has room for what goes onto it.
    needs: (a directory on the disk, bytes, what they are); directories on
    the same file system add up."""
    per_disk: dict[int, tuple[Path, int, list[str]]] = {}
    for where, nbytes, what in needs:
        where = next(p for p in (where, *where.parents) if p.exists())
        device = os.stat(where).st_dev
        first, total, whats = per_disk.get(device, (where, 0, []))
        per_disk[device] = (first, total + nbytes, [*whats, what])
    for where, total, whats in per_disk.values():
        free = shutil.disk_usage(where).free
        if free < total:
            raise ForkError(
                f"{' and '.join(whats)} need about {total / 1e9:.1f} GB on the disk of "
                f"{where}, which has {free / 1e9:.1f} GB free: free some space and run again")


def ensure_packages() -> None:
    if not LOCK.exists():
        raise ForkError(f"{LOCK} is missing: run `make lock` to resolve the environment")
    if not PY.exists():
        say(f"creating {VENV.name}")
        run([sys.executable, "-m", "venv", str(VENV)])
    key = digest(LOCK.read_bytes())
    if stamp_ok("packages", key):
        return
    # A venv that already holds packages (a new lock, an install cut short)
    # needs only the rest.
    present = sum(f.stat().st_size for f in VENV.rglob("*") if f.is_file() and not f.is_symlink())
    check_free_space([(VENV, max(0, PACKAGES_BYTES - present), f"{VENV.name}'s locked packages"),
                      (Path(tempfile.gettempdir()), PACKAGES_TEMP_BYTES, "pip's downloads")])
    say("installing the locked packages (torch 2.11.0 and ~180 more; a few minutes the first time)")
    # --no-deps: the lock is a complete freeze; resolving again could only drift.
    # The `pip` line of the lock upgrades pip itself first. --no-cache-dir:
    # pip's cache would keep a second copy of what it downloads (2.0 GB on
    # our machines, CUDA libraries mostly) that only a rebuilt venv would read.
    pip_line = next((line for line in LOCK.read_text().splitlines()
                     if line.startswith("pip==")), None)
    if pip_line:
        run([str(PY), "-m", "pip", "install", "-q", pip_line])
    run_showing_progress([str(PY), "-m", "pip", "install", "--no-deps", "--no-cache-dir",
                          "--progress-bar", "off", "-r", str(LOCK)])
    write_stamp("packages", key)


def ensure_runai_side() -> None:
    for version, requirement in RUNAI_SIDE.items():
        if stamp_ok(f"runai-{version}", requirement):
            continue
        dest = runai_side_dir(version, "cpu")
        say(f"installing {requirement} into {dest.relative_to(ROOT)}")
        # Only the streamer itself: its dependencies are the venv's, and the
        # directory shadows 0.15.7 only in processes that put it on sys.path.
        run([str(PY), "-m", "pip", "install", "--no-deps", "-q", "--upgrade",
             "--target", str(dest), requirement])
        write_stamp(f"runai-{version}", requirement)


def unpack_kernels(wheel: Path, files: list[str], trees: list[Path]) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for tree in trees:
            for name in files:
                target = tree / name
                info = zf.getinfo(name)
                if target.exists() and target.stat().st_size == info.file_size:
                    continue
                say(f"unpacking {name} into {tree.relative_to(ROOT)}")
                with zf.open(info) as src, target.open("wb") as dst:
                    while block := src.read(1 << 22):
                        dst.write(block)


def drop_cuda_files() -> None:
    """CPU runs must not find the CUDA build's files in the tree: remove what
    `make gpu-env` recorded (`make gpu-env` puts them back)."""
    from tools.tree import SDIST_SHIPPED_IGNORED

    if not CUDA_FILES.exists():
        return
    names = json.loads(CUDA_FILES.read_text())
    say(f"removing the {len(names)} files `make gpu-env` put into {TREE.relative_to(ROOT)} "
        f"and {BASE_TREE.relative_to(ROOT)}")
    for name in names:
        (TREE / name).unlink(missing_ok=True)
        if name not in SDIST_SHIPPED_IGNORED:  # the base keeps the released ones
            (BASE_TREE / name).unlink(missing_ok=True)
    (VENV / ".stamp-editable").unlink(missing_ok=True)
    CUDA_FILES.unlink()


def ensure_editable(pin: dict) -> None:
    # An editable install points at the directory, not at a commit: it
    # stays valid when the tree is re-materialized in place.
    key = digest(str(TREE), pin["upstream"]["version"])
    if stamp_ok("editable", key):
        return
    say("installing build/vllm editable (CPU platform, no compile)")
    version = pin["upstream"]["version"]
    # VLLM_TARGET_DEVICE=empty: nothing to compile, the kernels come from the
    # wheel. The "+cpu" local version is how vLLM detects the CPU platform.
    run([str(PY), "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-q",
         "-e", str(TREE)],
        env={"VLLM_TARGET_DEVICE": "empty", "VLLM_VERSION_OVERRIDE": f"{version}+cpu"})
    write_stamp("editable", key)


def ensure_plugins() -> None:
    for plugin in PLUGINS:
        key = digest(*(p.read_bytes() for p in sorted(plugin.glob("*.py"))),
                     (plugin / "pyproject.toml").read_bytes())
        if stamp_ok(f"plugin-{plugin.name}", key):
            continue
        say(f"installing the test-environment plugin {plugin.name}")
        run([str(PY), "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-q",
             "--force-reinstall", str(plugin)])
        write_stamp(f"plugin-{plugin.name}", key)


SMOKE = """
import torch
from vllm.platforms import current_platform
assert current_platform.is_cpu(), f"platform is {current_platform!r}, not CPU"
current_platform.import_kernels()
assert hasattr(torch.ops._C, "rms_norm"), "custom op rms_norm is not registered"
import vllm
print(f"smoke: vllm {vllm.__version__} from {vllm.__file__}, CPU platform, rms_norm registered")
"""


def smoke(tree: Path) -> None:
    out = run([str(PY), "-c", SMOKE], env={"PYTHONPATH": str(tree)})
    line = out.strip().splitlines()[-1]
    if str(tree / "vllm") not in line:
        raise ForkError(f"smoke check imported vllm from the wrong tree: {line}")
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["packages", "all"])
    args = parser.parse_args()
    pin = load_pin()
    ensure_packages()
    if args.what == "packages":
        return 0
    from tools.fetch import fetch_sdist, fetch_wheel
    from tools.tree import ensure_base_worktree, materialize_command

    # Always re-materialize (seconds): the tree must match patches/ before
    # anything runs on it. It refuses if build/vllm holds unexported work.
    materialize_command(python=str(PY))
    ensure_base_worktree(pin, sdist=fetch_sdist(pin, str(PY)))
    drop_cuda_files()
    wheel = fetch_wheel(pin, str(PY))
    unpack_kernels(wheel, pin["cpu_kernels"]["files"], [TREE, BASE_TREE])
    ensure_editable(pin)
    ensure_plugins()
    ensure_runai_side()
    for tree in (TREE, BASE_TREE):
        smoke(tree)
    return 0


if __name__ == "__main__":
    main_wrapper(main)
