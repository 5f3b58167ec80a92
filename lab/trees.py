"""The two trees in one environment, and running lab code on either.

Which vLLM a process imports is decided by PYTHONPATH (build/vllm-base or
build/vllm), and so is which runai-model-streamer (0.15.7 from the venv, or
0.17.0 or 0.17.1 from its side directory). The CPU MoE workaround plugin is installed
in the venv and applies to both trees alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

from tools.common import (
    BASE_TREE,
    BUILD,
    ROOT,
    RUNAI_SIDE_VERSIONS,
    TREE,
    VENV,
    ForkError,
    read_json,
    run,
    runai_side_dir,
    runai_side_version,
)

# The fork without its last patch: made where a benchmark asks for it
# (bench/gpu.py: a performance patch measured against the fork before it).
WITHOUT_LAST_TREE = BUILD / "vllm-without-last"
TREES = {"base": BASE_TREE, "patched": TREE, "without-last": WITHOUT_LAST_TREE}
INDUCTOR_CACHES = BUILD / "inductor-cache"
# On CPU: .venv (make env). On a GPU node: the interpreter that `make gpu-env`
# installed into, which `make demo DEVICE=cuda` runs (tools/gpu_env.py).
DEVICE = os.environ.get("VLLM_FORK_DEVICE", "cpu")
PYTHON = str(VENV / "bin" / "python") if DEVICE == "cpu" else sys.executable


def runai_dir(scenario: str) -> Path | None:
    """The side directory of the streamer a scenario runs with; None: the
    environment's own (0.15.7)."""
    version = runai_side_version(scenario)
    return runai_side_dir(version, DEVICE) if version else None


def check_streamer(scenario: str, runai_file: str) -> None:
    """A run imported the streamer its scenario names, not the one it shadows."""
    side = runai_dir(scenario)
    others = [str(runai_side_dir(v, DEVICE)) for v in RUNAI_SIDE_VERSIONS]
    ok = (runai_file.startswith(str(side)) if side
          else not any(runai_file.startswith(d) for d in others))
    if not ok:
        raise ForkError(f"{scenario}: imported the streamer from {runai_file}")


def ensure_without_last(built_files: list[str]) -> None:
    """WITHOUT_LAST_TREE: the series but its last patch, as a worktree of
    build/vllm, with build/vllm's built files copied in (kernels: the series
    changes Python files only, so they fit every tree). The built files are
    brought up to date even when the worktree is already at that commit:
    `make env` and `make gpu-env` swap build/vllm's kernels, and a worktree
    left with the other set would import kernels its sibling no longer has."""
    import shutil

    from tools.common import git, say
    from tools.tree import SDIST_SHIPPED_IGNORED

    dest = WITHOUT_LAST_TREE
    commit = git(TREE, "rev-parse", "HEAD~1").stdout.strip()
    if not (dest.exists()
            and git(dest, "rev-parse", "HEAD", check=False).stdout.strip() == commit):
        say(f"adding worktree {dest.name} at {commit[:12]} (the series without its last patch)")
        if dest.exists():
            git(dest, "checkout", "-q", "--detach", commit)
        else:
            git(TREE, "worktree", "prune")
            git(TREE, "worktree", "add", "-q", "--detach", str(dest), commit)
    for name in [*built_files, *SDIST_SHIPPED_IGNORED]:
        src, dst = TREE / name, dest / name
        if not src.exists():
            continue
        # copy2 keeps the modification time: size and time tell a stale copy.
        if dst.exists() and (dst.stat().st_size, dst.stat().st_mtime_ns) == (
                src.stat().st_size, src.stat().st_mtime_ns):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def inductor_cache(environ: dict, cpuinfo: str) -> Path:
    """This checkout's torch.compile cache for this CPU and these CPU settings.

    torch.compile's kernels (vLLM's sampler) are cached on disk, by default in
    one /tmp directory for every process of the user, under a key that leaves
    out what vector width the kernel was built for. A kernel compiled under
    other CPU settings (a forced ATEN_CPU_CAPABILITY, another clone's run, this
    checkout on another machine) is then loaded as is and corrupts memory:
    "free(): invalid next size", or an IndexError in the embedding."""
    flags = sorted({flag for line in cpuinfo.splitlines() if line.startswith("flags")
                    for flag in line.split(":", 1)[1].split()})
    settings = [f"{k}={environ.get(k, '')}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")]
    key = hashlib.sha256(" ".join(flags + settings).encode()).hexdigest()[:12]
    return INDUCTOR_CACHES / key


def cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def tree_env(tree: str, scenario: str = "auto") -> dict:
    paths = [str(TREES[tree]), str(ROOT)]
    side = runai_dir(scenario)
    if side:
        paths.insert(0, str(side))
    # The KV cache size is an engine argument (lab/engine.py): a
    # VLLM_CPU_KVCACHE_SPACE from the caller's shell would override it.
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TORCHINDUCTOR_CACHE_DIR=str(inductor_cache(env, cpuinfo())))
    env["PYTHONPATH"] = ":".join(paths)
    return env


def tensor_sizes(model_dir: Path) -> dict[str, int]:
    """Bytes of every tensor, from the safetensors headers, loading nothing."""
    sizes = {}
    for file in model_dir.glob("*.safetensors"):
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        sizes.update({name: meta["data_offsets"][1] - meta["data_offsets"][0]
                      for name, meta in header.items() if name != "__metadata__"})
    return sizes


def largest_tensor_bytes(model_dir: Path) -> int:
    return max(tensor_sizes(model_dir).values())


def checkpoint_bytes(model_dir: Path) -> int:
    return sum(tensor_sizes(model_dir).values())


def streamer_memory_limit(model_dir: Path) -> int:
    """Just room for the largest tensor: far below the checkpoint size, so the
    streamer has to reuse its buffer."""
    limit = largest_tensor_bytes(model_dir) + 64 * 1024
    if limit * 2 > checkpoint_bytes(model_dir):
        raise ForkError(f"{model_dir}: too small for the streamer to reuse its buffer")
    return limit


def run_module(module: str, args: list, env: dict, what: str, timeout: int = 900) -> dict:
    """Run `python -m module *args OUT.json` in its own process; its JSON result.
    On failure, the root cause and the end of its output say why
    (tools.common.run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        run([PYTHON, "-m", module, *args, out], what, env=env, cwd=ROOT, timeout=timeout)
        result = read_json(out)
        if result is None:
            raise ForkError(f"{what} exited 0 but wrote no result")
        return result
