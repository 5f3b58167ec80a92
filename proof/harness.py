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
import struct
import subprocess
import tempfile
from pathlib import Path

from tools.common import BASE_TREE, ROOT, TREE, VENV, ForkError

TREES = {"base": BASE_TREE, "patched": TREE}
RUNAI_NEW_DIR = VENV / "runai-0.17.0"
PYTHON = str(VENV / "bin" / "python")


AVX2_KERNELS_DIR = ROOT / "proof" / "avx2_kernels"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags")
            for flag in line.split(":", 1)[1].split()}


def kernel_choices() -> list[str]:
    """The CPU kernel builds this machine can run the engine on: the one vLLM
    detects, and on an AVX-512 CPU also the AVX2 build (see avx2_kernels/)."""
    return ["detected", "avx2"] if "avx512f" in cpu_flags() else ["detected"]


def tree_env(tree: str, scenario: str = "auto", kernels: str = "detected") -> dict:
    paths = [str(TREES[tree]), str(ROOT)]
    if "0.17.0" in scenario:
        paths.insert(0, str(RUNAI_NEW_DIR))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    if kernels == "avx2":
        paths.insert(0, str(AVX2_KERNELS_DIR))
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    elif kernels != "detected":
        raise ForkError(f"unknown kernel choice {kernels}; known: detected, avx2")
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
    On failure, the end of its output says why."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [PYTHON, "-m", module, *map(str, args), str(out)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
            raise ForkError(f"{what} failed:\n{tail}")
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


def generate(tree: str, model_dir: Path, loader: str, kernels: str = "detected") -> dict:
    """What the real engine loaded on every rank and generated (proof.generate),
    for one tree and loader."""
    result = run_module("proof.generate", [model_dir, loader], tree_env(tree, kernels=kernels),
                        f"engine run {tree}/{loader}/{kernels} kernels")
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
