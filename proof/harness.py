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


def tree_env(tree: str, scenario: str = "auto") -> dict:
    paths = [str(TREES[tree]), str(ROOT)]
    if "0.17.0" in scenario:
        paths.insert(0, str(RUNAI_NEW_DIR))
    return {**os.environ, "PYTHONPATH": ":".join(paths), "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}


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


def generate(tree: str, model_dir: Path, scenario: str) -> dict:
    """Tokens from the real engine (proof.generate) for one tree and scenario."""
    return run_module("proof.generate", [model_dir, scenario], tree_env(tree, scenario),
                      f"engine run {tree}/{scenario}")
