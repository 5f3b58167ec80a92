"""Run a loader scenario on the base or the patched tree, in its own process.

Both trees share one environment: which vLLM is imported is decided by
PYTHONPATH (build/vllm-base or build/vllm), and so is which
runai-model-streamer (0.15.7 from the venv, or 0.17.0 from its side
directory). The CPU MoE workaround plugin is installed in the venv and
applies to both trees alike.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import tempfile
from pathlib import Path

from tools.common import BASE_TREE, ROOT, TREE, VENV, ForkError

TREES = {"base": BASE_TREE, "patched": TREE}
RUNAI_NEW_DIR = VENV / "runai-0.17.0"
PYTHON = str(VENV / "bin" / "python")


def tree_env(tree: str, scenario: str = "auto") -> dict:
    paths = [str(TREES[tree]), str(ROOT)]
    if "0.17.0" in scenario:
        paths.insert(0, str(RUNAI_NEW_DIR))
    # The KV cache size is an engine argument (proof/generate.py): a
    # VLLM_CPU_KVCACHE_SPACE from the caller's shell would override it.
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
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


# A worker's lines start with "(Worker_TP0 pid=...)", and vLLM's logger puts
# "ERROR 12-01 15:31:02 [file.py:772]" before every line of a traceback it logs.
WORKER_PREFIX = re.compile(r"^\([\w.-]+ pid=\d+\)\s*")
ERROR_LOG_PREFIX = re.compile(r"^(ERROR|CRITICAL) [\d-]+ [\d:.]+ \[[^\]]*\]\s*")
# The last line of a traceback: the exception and its message.
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Interrupt): ")
# What the engine's front end raises about any worker's failure: never the cause.
ECHOES = ("Engine core initialization failed", "WorkerProc initialization failed")


def root_cause(output: str) -> str | None:
    """The first exception a process or any of its workers printed, skipping the
    engine's generic "initialization failed" that only echoes it."""
    for line in output.splitlines():
        bare = ERROR_LOG_PREFIX.sub("", WORKER_PREFIX.sub("", line.strip()))
        if EXCEPTION_LINE.match(bare) and not any(e in bare for e in ECHOES):
            return line.strip()
    return None


def run_module(module: str, args: list, env: dict, what: str, timeout: int = 900) -> dict:
    """Run `python -m module *args OUT.json` in its own process; its JSON result.
    On failure, the root cause and the end of its output say why."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [PYTHON, "-m", module, *map(str, args), str(out)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
            cause = root_cause(proc.stdout) or "none printed"
            raise ForkError(f"{what} failed (root cause: {cause}):\n{tail}\n"
                            f"{what} failed; root cause: {cause}")
        return json.loads(out.read_text())


def load_check(tree: str, model_dir: Path, scenario: str) -> dict:
    """Result of proof.loadcheck for one tree and scenario (see there)."""
    result = run_module("proof.loadcheck",
                        [model_dir, scenario, streamer_memory_limit(model_dir)],
                        tree_env(tree, scenario), f"load check {tree}/{scenario}")
    expected_vllm = str(TREES[tree] / "vllm")
    if not result["vllm_file"].startswith(expected_vllm):
        raise ForkError(f"{tree}: imported vllm from {result['vllm_file']}")
    if ("0.17.0" in scenario) != result["runai_file"].startswith(str(RUNAI_NEW_DIR)):
        raise ForkError(f"{scenario}: imported the streamer from {result['runai_file']}")
    return result


def differing(result: dict, reference: dict) -> list[str]:
    """Parameters whose loaded bytes differ from the reference load."""
    return sorted(name for name, d in result["params"].items()
                  if reference["params"].get(name) != d)


def reload_check(tree: str, model_dir: Path, reloads: int, alias_check: bool = True) -> dict:
    """Result of proof.reloadcheck for one tree (see there)."""
    # The flag goes before OUT.json, which run_module appends last.
    args = [model_dir, reloads] + ([] if alias_check else ["--no-alias-check"])
    return run_module("proof.reloadcheck", args, tree_env(tree), f"reload check on {tree}")


def processor_check(tree: str, model_dir: Path) -> dict:
    """Result of proof.processorcheck: the engine's profiling inputs, built."""
    return run_module("proof.processorcheck", [model_dir], tree_env(tree),
                      f"processor check on {tree}")


def generate(tree: str, model_dir: Path, loader: str) -> dict:
    """What the real engine loaded on every rank and generated (proof.generate),
    for one tree and loader, on the kernel build vLLM detects."""
    result = run_module("proof.generate", [model_dir, loader], tree_env(tree),
                        f"engine run {tree}/{loader}")
    if not result["vllm_file"].startswith(str(TREES[tree] / "vllm")):
        raise ForkError(f"{tree}: the engine imported vllm from {result['vllm_file']}")
    return result


def settings_besides_loader(result: dict) -> dict:
    """Everything an engine run was started with except its loader and tree."""
    from proof.generate import LOADER_KEYS

    args = {k: v for k, v in result["engine_args"].items() if k not in LOADER_KEYS}
    return {"engine_args": args, "env": result["env"],
            "kernels": [rank["kernels"] for rank in result["ranks"]]}


def differences_besides_loader(result: dict, reference: dict) -> list[str]:
    """What else two engine runs differ in than the loader: must be nothing,
    or a difference in weights or tokens could come from there."""
    ours, theirs = settings_besides_loader(result), settings_besides_loader(reference)
    found = []
    for part in ("engine_args", "env"):
        for key in sorted(ours[part].keys() | theirs[part].keys()):
            if ours[part].get(key) != theirs[part].get(key):
                found.append(f"{part} {key}: {theirs[part].get(key)!r} (reference) "
                             f"vs {ours[part].get(key)!r}")
    if ours["kernels"] != theirs["kernels"]:
        found.append(f"kernels: {theirs['kernels']} (reference) vs {ours['kernels']}")
    return found


def differing_per_rank(result: dict, reference: dict) -> list[list[str]]:
    """For each tensor-parallel rank, the parameters whose loaded bytes
    differ from the reference run's same rank."""
    if len(result["ranks"]) != len(reference["ranks"]):
        raise ForkError("the two engine runs have different numbers of ranks")
    return [differing(ours, theirs) for ours, theirs in zip(result["ranks"], reference["ranks"],
                                                            strict=True)]
