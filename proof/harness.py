"""Proof runs on the base or the patched tree, each in its own process
(lab/trees.py), and how their results are compared."""

from __future__ import annotations

import time
from pathlib import Path

from lab.engine import (
    DEVICE,
    DEVICE_ARGS,
    DEVICE_LOADERS,
    LOADER_ENV_KEYS,
    LOADER_KEYS,
    OBSERVER_ENV_KEYS,
    RAY_LAYOUTS,
    RAY_LOADERS,
)
from lab.raycluster import placement_problems  # noqa: F401  (judged with the rest)
from lab.trees import TREES, check_streamer, run_module, streamer_memory_limit, tree_env
from tools.common import ForkError


def load_check(tree: str, model_dir: Path, scenario: str) -> dict:
    """Result of proof.loadcheck for one tree and scenario (see there)."""
    result = run_module("proof.loadcheck",
                        [model_dir, scenario, streamer_memory_limit(model_dir)],
                        tree_env(tree, scenario), f"load check {tree}/{scenario}")
    expected_vllm = str(TREES[tree] / "vllm")
    if not result["vllm_file"].startswith(expected_vllm):
        raise ForkError(f"{tree}: imported vllm from {result['vllm_file']}")
    check_streamer(scenario, result["runai_file"])
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


def generate(tree: str, model_dir: Path, loader: str, reloads: int = 0,
             layout: str = "mp") -> dict:
    """What the real engine loaded on every rank and generated (proof.generate),
    for one tree and loader, on the kernels vLLM detects; with reloads, also
    after each of that many in-place reloads; on a Ray layout, under Ray."""
    args = [model_dir, loader] + ([f"--reloads={reloads}"] if reloads else [])
    args += [] if layout == "mp" else [f"--layout={layout}"]
    result = run_module("proof.generate", args, tree_env(tree, loader),
                        f"engine run {tree}/{loader}")
    if not result["vllm_file"].startswith(str(TREES[tree] / "vllm")):
        raise ForkError(f"{tree}: the engine imported vllm from {result['vllm_file']}")
    check_streamer(loader, result["runai_file"])
    return result


def settings_besides_loader(result: dict) -> dict:
    """Everything an engine run was started with except its loader and tree."""
    args = {k: v for k, v in result["engine_args"].items() if k not in LOADER_KEYS}
    env = {k: v for k, v in result["env"].items()
           if k not in LOADER_ENV_KEYS | OBSERVER_ENV_KEYS}
    return {"engine_args": args, "env": env,
            "kernels": [rank["kernels"] for rank in result["ranks"]],
            "nodes": [rank.get("ray_node") for rank in result["ranks"]]}


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
    if ours["nodes"] != theirs["nodes"]:
        found.append(f"Ray nodes per rank: {theirs['nodes']} (reference) vs {ours['nodes']}")
    return found


def differing_per_rank(result: dict, reference: dict) -> list[list[str]]:
    """For each tensor-parallel rank, the parameters whose loaded bytes
    differ from the reference run's same rank."""
    if len(result["ranks"]) != len(reference["ranks"]):
        raise ForkError("the two engine runs have different numbers of ranks")
    return [differing(ours, theirs) for ours, theirs in zip(result["ranks"], reference["ranks"],
                                                            strict=True)]


# The engine runs every engine proof makes, per device: for each model, each
# tree with every streaming loader of the device and with `auto`, and `auto`
# on patched twice, so that tokens count only when the reference repeats
# itself. On a GPU, NemotronH is also reloaded in place (its reference is its
# own first load). Scenarios are named as lab/expectations.py has them.
ENGINE_MODELS = {"cpu": ["llama4"], "cuda": ["llama4", "nemotron_vl"]}
RELOADS = 10
# Engines started side by side: one GPU holds several tiny ones; two CPU
# cores hold one at tensor parallel 2.
SIDE_BY_SIDE = {"cpu": 1, "cuda": 10}


def tp_suffix(device: str = DEVICE, layout: str = "mp") -> str:
    tp = f"tp{DEVICE_ARGS[device]['tensor_parallel_size']}"
    return tp if layout == "mp" else f"{tp}-{layout}"


def layout_of(scenario: str) -> str:
    """The executor layout a scenario ran on (named last in it, mp unnamed)."""
    return next((layout for layout in RAY_LAYOUTS
                 if scenario.split(" ")[0].endswith(f"-{layout}")), "mp")


def reload_scenario(device: str = DEVICE) -> str:
    return f"layerwise-reload-x{RELOADS}-{tp_suffix(device)}"


def engine_plan(device: str = DEVICE) -> list[tuple[str, str, str, str]]:
    """(checkpoint, tree, loader, scenario) of every engine run, in order."""
    tp, streaming = tp_suffix(device), DEVICE_LOADERS[device][1:]
    plan = []
    for model in ENGINE_MODELS[device]:
        plan += [(model, "patched", "auto", f"auto-{tp}"),
                 (model, "patched", "auto", f"auto-{tp} (repeat)"),
                 (model, "base", "auto", f"auto-{tp}")]
        plan += [(model, tree, loader, f"{loader}-{tp}")
                 for tree in ("patched", "base") for loader in streaming]
    if device == "cuda":
        plan += [("nemotron_h", tree, "auto", reload_scenario(device))
                 for tree in ("patched", "base")]
    return plan


def ray_plan(layouts: list[str] = RAY_LAYOUTS) -> list[tuple[str, str, str, str]]:
    """Llama 4 on CPU under vLLM's Ray executor, per layout: the same runs as
    engine_plan, with the copy-returning streamer too (lab/engine.RAY_LOADERS)."""
    plan = []
    for layout in layouts:
        tp = tp_suffix("cpu", layout)
        plan += [("llama4", "patched", "auto", f"auto-{tp}"),
                 ("llama4", "patched", "auto", f"auto-{tp} (repeat)"),
                 ("llama4", "base", "auto", f"auto-{tp}")]
        plan += [("llama4", tree, loader, f"{loader}-{tp}")
                 for tree in ("patched", "base") for loader in RAY_LOADERS[1:]]
    return plan


def reference_key(model: str, tree: str, device: str = DEVICE,
                  layout: str = "mp") -> tuple[str, str, str]:
    """The run a run is compared with: the same tree's `auto`, same layout."""
    return (model, tree, f"auto-{tp_suffix(device, layout)}")


def engine_runs(checkpoint, plan: list | None = None, progress=None,
                device: str = DEVICE, keep: Path | None = None
                ) -> dict[tuple[str, str, str], dict]:
    """{(checkpoint, tree, scenario): result} of the plan, each with its wall
    time; checkpoint(kind) gives a checkpoint's directory; progress(what)
    after each run. With keep, each result is also written there, and one
    found there is taken instead of running again (a run cut short goes on
    where it stopped; the caller keys the directory by what it ran)."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    def one(step):
        model, tree, loader, scenario = step
        name = "_".join(f"{model}-{tree}-{scenario}".replace("(", "").replace(")", "").split())
        kept = keep / f"{name}.json" if keep else None
        if kept and kept.exists():
            result = json.loads(kept.read_text())
            if progress:
                progress(f"{model} engine {scenario} on {tree} (kept from an earlier run "
                         "of this commit)")
            return (model, tree, scenario), result
        start = time.monotonic()
        reloads = RELOADS if scenario == reload_scenario(device) else 0
        result = generate(tree, checkpoint(model), loader, reloads, layout_of(scenario))
        result["engine_run_s"] = round(time.monotonic() - start, 1)
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_name(kept.name + ".partial")
            partial.write_text(json.dumps(result))
            partial.rename(kept)
        if progress:
            progress(f"{model} engine {scenario} on {tree}")
        return (model, tree, scenario), result

    plan = engine_plan(device) if plan is None else plan
    # Each model's first run alone first, side by side with the other
    # models': a fresh GPU node compiles the Triton kernels (Mamba2, fused
    # MoE) into its cache once, instead of in every engine at the same time.
    first = list({step[0]: step for step in reversed(plan)}.values()) \
        if SIDE_BY_SIDE[device] > 1 else []
    with ThreadPoolExecutor(SIDE_BY_SIDE[device]) as pool:
        runs = dict(pool.map(one, first))
        runs.update(pool.map(one, [step for step in plan if step not in first]))
    return {key_of(step): runs[key_of(step)] for step in plan}


def key_of(step: tuple[str, str, str, str]) -> tuple[str, str, str]:
    model, tree, _, scenario = step
    return model, tree, scenario


def tokens_are_evidence(runs: dict[tuple[str, str, str], dict], model: str,
                        device: str = DEVICE, layout: str = "mp") -> bool:
    """Whether the reference repeats its tokens: otherwise tokens prove nothing."""
    first = runs[reference_key(model, "patched", device, layout)]
    again = runs[(model, "patched", f"auto-{tp_suffix(device, layout)} (repeat)")]
    return first["tokens"] == again["tokens"]
