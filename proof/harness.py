"""Proof runs on the base or the patched tree, each in its own process
(lab/trees.py), and how their results are compared."""

from __future__ import annotations

import time
from pathlib import Path

from lab.engine import LOADER_KEYS
from lab.trees import RUNAI_NEW_DIR, TREES, run_module, streamer_memory_limit, tree_env
from tools.common import ForkError


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


# The engine runs every engine proof makes, in order: each tree with runai
# distributed streaming and with `auto`, and `auto` on patched twice, so that
# tokens count only when the reference repeats itself. Keyed as
# lab/expectations.ENGINE_SCENARIOS names them.
RUNAI_DIST = "runai-0.15.7-dist"
ENGINE_RUNS = [("patched", "auto", "auto-tp2"), ("patched", "auto", "auto-tp2 (repeat)"),
               ("patched", RUNAI_DIST, "runai-0.15.7-dist-tp2"),
               ("base", "auto", "auto-tp2"), ("base", RUNAI_DIST, "runai-0.15.7-dist-tp2")]


def engine_runs(model_dir: Path, progress=None) -> dict[tuple[str, str], dict]:
    """{(tree, scenario): result} of ENGINE_RUNS, each with its wall time;
    progress(what) after each run."""
    runs = {}
    for tree, loader, scenario in ENGINE_RUNS:
        start = time.monotonic()
        result = generate(tree, model_dir, loader)
        result["engine_run_s"] = round(time.monotonic() - start, 1)
        runs[(tree, scenario)] = result
        if progress:
            progress(f"llama4 engine TP=2 {scenario} on {tree}")
    return runs


def tokens_are_evidence(runs: dict[tuple[str, str], dict]) -> bool:
    """Whether the reference repeats its tokens: otherwise tokens prove nothing."""
    first, again = runs[("patched", "auto-tp2")], runs[("patched", "auto-tp2 (repeat)")]
    return first["tokens"] == again["tokens"]
