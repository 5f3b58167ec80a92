"""`make demo`: the base release breaks and the fork does not, shown with the
real runai-model-streamer and the real vLLM engine on tiny checkpoints.

Prints a table (and writes build/demo/results.json): one row per model,
loader scenario and tree. Then serves the tiny Llama 4 from the patched tree
with `vllm serve --load-format runai_streamer` (tensor parallel 2, the
streamer's distributed mode) and checks that a completion and a chat answer
equal those of a server started with `--load-format auto`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab import checkpoints, cpushm, engine, expectations, trees
from proof import harness
from tools import series
from tools.common import (
    BUILD,
    TREE,
    ForkError,
    main_wrapper,
    read_json,
    root_cause,
    say,
    stop_group,
)

OUT = BUILD / "demo" / "results.json"
LOAD_SCENARIOS = expectations.LOAD_SCENARIOS
TREES = ["base", "patched"]
COLUMNS = ["model", "scenario", "tree", "expected", "kernel_library", "differing_tensors",
           "tokens_identical", "peak_held_bytes", "overheld_steps", "streamed_bytes", "load_s"]


class Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        print(f"[{self.done:2d}/{self.total}] {what} ({elapsed:.0f} s so far)", flush=True)


def load_rows(progress: Progress) -> list[dict]:
    rows = []
    for kind in ("llama4", "nemotron_vl"):
        model = checkpoints.ensure(kind)
        # A streaming load is compared with the same tree's `auto` load: only
        # the loader differs. The base `auto` row is compared with the patched
        # one, to show that the two references agree.
        references: dict[str, dict] = {}
        for scenario in LOAD_SCENARIOS:
            for tree in ("patched", "base") if scenario == "auto" else TREES:
                result = harness.load_check(tree, model, scenario)
                if scenario == "auto":
                    references[tree] = result
                reference = references["patched" if scenario == "auto" else tree]
                progress.step(f"{kind} {scenario} {tree}")
                rows.append({
                    "model": kind, "scenario": scenario, "tree": tree,
                    "differing_tensors": len(harness.differing(result, reference)),
                    # NemotronH's Mamba2 layers have only Triton kernels: no
                    # generation on CPU. Llama 4's tokens are in the engine rows.
                    "tokens_identical": None,
                    "peak_held_bytes": result["peak_held_bytes"],
                    "overheld_steps": result["overheld_steps"],
                    "streamed_bytes": result["streamed_bytes"],
                    "load_s": result["load_s"],
                })
    return rows


def engine_rows(progress: Progress, plan: list | None = None,
                keep: Path | None = None) -> list[dict]:
    """The real engine on the kernels vLLM detects (harness.engine_plan: on
    CPU at tensor parallel 2 with runai distributed streaming, on a GPU at
    tensor parallel 1 with every streaming loader; on CPU also under vLLM's
    Ray executor, harness.ray_plan), each run against the same tree's `auto`
    on the same layout, every other setting equal. Evidence: what every rank
    loaded (exact), then greedy tokens (only once two `auto` runs agree)."""
    plan = harness.engine_plan() if plan is None else plan
    runs = harness.engine_runs(checkpoints.ensure, plan, progress.step, keep=keep)
    stable = {(model, harness.layout_of(s)): harness.tokens_are_evidence(
                  runs, model, layout=harness.layout_of(s))
              for model, _, _, s in plan if s != harness.reload_scenario()}
    rows = []
    for (model, tree, scenario), result in runs.items():
        if result["reloads"]:
            rows.append(engine_reload_row(model, tree, scenario, result))
        else:
            layout = harness.layout_of(scenario)
            reference = runs[harness.reference_key(model, tree, layout=layout)]
            rows.append(engine_row(model, tree, scenario, result, reference,
                                   stable[(model, layout)]))
    # Across the trees: the fork's `auto` load against base's, same layout and
    # settings. The series moves no value that `auto` loads (its last patch
    # only reorders the expert copies), so every rank must match bit for bit.
    for (model, tree, scenario), result in runs.items():
        base = runs.get((model, "base", scenario))
        if (tree != "patched" or base is None or result["reloads"]
                or scenario != harness.reference_key(model, tree,
                                                     layout=harness.layout_of(scenario))[2]):
            continue
        row = engine_row(model, tree, scenario, result, base, stable[(model, harness.layout_of(
            scenario))])
        rows.append({**row, "scenario": expectations.across_trees(scenario)})
    return rows


def engine_row(model: str, tree: str, scenario: str, result: dict, reference: dict,
               reference_stable: bool) -> dict:
    # The engine repacks weights on CPU after loading; the digests were taken
    # in every worker right before that (proof/rankdigest.py).
    per_rank = harness.differing_per_rank(result, reference)
    ranks = result["ranks"]
    # Weighed in every worker where asked (lab/engine.WEIGHED_LOADERS).
    weighed = all("overheld_steps" in rank for rank in ranks)
    return {"model": f"{model} (engine)", "scenario": scenario, "tree": tree,
            "kernel_library": ranks[0]["kernels"],
            "differing_tensors": " / ".join(str(len(names)) for names in per_rank),
            "differing_per_rank": per_rank,
            "other_differences": harness.differences_besides_loader(result, reference),
            "placement_problems": harness.placement_problems(result, harness.layout_of(scenario)),
            "ray_nodes": [rank.get("ray_node") for rank in ranks],
            "tokens_identical": (result["tokens"] == reference["tokens"]
                                 if reference_stable else None),
            "reference_stable": reference_stable,
            "peak_held_bytes": max(r["peak_held_bytes"] for r in ranks) if weighed else None,
            "overheld_steps": (" / ".join(str(r["overheld_steps"]) for r in ranks)
                               if weighed else None),
            "overheld_per_rank": [r["overheld_steps"] for r in ranks] if weighed else None,
            "streamed_bytes": ranks[0]["streamed_bytes"] if weighed else None,
            "load_s": None,
            "engine_run_s": result["engine_run_s"], "tokens": result["tokens"],
            "text": result["text"]}


def engine_reload_row(model: str, tree: str, scenario: str, result: dict) -> dict:
    """In-place reloads through the engine, each compared with the first
    load: parameters on every rank, then tokens."""
    history = result["reloads"]
    worst = max(history, key=lambda h: sum(map(len, h["differing_per_rank"])))
    return {"model": f"{model} (engine)", "scenario": scenario, "tree": tree,
            "kernel_library": result["ranks"][0]["kernels"],
            "differing_tensors": " / ".join(str(len(n)) for n in worst["differing_per_rank"]),
            "differing_per_rank": worst["differing_per_rank"],
            "other_differences": [],
            # Reported, not judged for base: a tiny model's tokens may survive
            # corrupted conv weights. The parameters are the evidence.
            "tokens_identical": all(h["tokens"] == result["tokens"] for h in history),
            "judge_tokens": tree == "patched",
            "reloads_with_differences": sum(1 for h in history if any(h["differing_per_rank"])),
            "alias_kept": all(h["alias_kept"] for h in history),
            "peak_held_bytes": None, "load_s": None,
            "engine_run_s": result["engine_run_s"], "tokens": result["tokens"]}


def reload_rows(progress: Progress) -> list[dict]:
    model = checkpoints.ensure("nemotron_h")
    rows = []
    for tree in TREES:
        result = harness.reload_check(tree, model, reloads=10)
        progress.step(f"nemotron_h layerwise reload x10 {tree}")
        history = result["history"]
        rows.append({
            "model": "nemotron_h", "scenario": "layerwise-reload-x10", "tree": tree,
            "differing_tensors": max(len(h["differing"]) for h in history),
            "tokens_identical": None, "peak_held_bytes": None,
            "load_s": round(sum(result["reload_s"]) / len(result["reload_s"]), 3),
            "nan_after_reload": any(h["nan"] for h in history),
            "alias_kept": all(h["alias_kept"] for h in history),
        })
    return rows


def cell(value) -> str:
    """A table cell: - for no value, yes/NO for booleans."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def format_table(rows: list[dict]) -> str:
    lines = [[c for c in COLUMNS]] + [[cell(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=False)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


# -- vllm serve ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def serve_flags(model: str, loader: str) -> list[str]:
    """`vllm serve` flags for the engine settings every run shares
    (lab/engine.py), then the loader's own."""
    flags = []
    args = engine.engine_args(model, loader)
    del args["model"]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:
            flags += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return flags


def without_loader(flags: list[str]) -> list[str]:
    loader_flags = {"--" + key.replace("_", "-") for key in engine.LOADER_KEYS}
    return [f for i, f in enumerate(flags)
            if f not in loader_flags and (i == 0 or flags[i - 1] not in loader_flags)]


def serve_and_ask(model: Path, loader: str, log: Path) -> dict:
    """Start `vllm serve` from the patched tree, ask once each way, stop it."""
    port = free_port()
    flags = serve_flags(str(model), loader)
    cmd = [trees.PYTHON, "-m", "vllm.entrypoints.cli.main", "serve", str(model),
           "--host", "127.0.0.1", "--port", str(port), *flags]
    env = {**trees.tree_env("patched", loader), **engine.engine_env(loader)}
    cpushm.sweep()  # a killed engine's segment must not block this one's port
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                cause = root_cause(log.read_text(errors="replace")) or "none printed"
                raise ForkError(f"vllm serve exited with {server.returncode} "
                                f"(root cause: {cause}); see {log}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                if time.monotonic() > deadline:
                    raise ForkError(f"vllm serve not ready after 300 s; see {log}") from err
                time.sleep(2)
        completion = post(port, "/v1/completions", {
            "model": str(model), "prompt": "The capital of France is",
            "max_tokens": 12, "temperature": 0})
        chat = post(port, "/v1/chat/completions", {
            "model": str(model), "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 12, "temperature": 0})
        return {"flags": flags, "completion": completion["choices"][0]["text"],
                "chat": chat["choices"][0]["message"]["content"], "pid": server.pid}
    finally:
        # The server and its workers, by process group; a server that died
        # keeps the error above as the one reported.
        stop_group(server)


# The streaming loader each device serves with, against `auto`.
SERVE_LOADER = {"cpu": "runai-0.15.7-dist", "cuda": "runai-0.15.7-reuse"}


def serve_rows(progress: Progress) -> dict:
    """Two servers from the patched tree, with the same settings and
    environment; only the loader differs (side by side on a GPU)."""
    from concurrent.futures import ThreadPoolExecutor

    model = checkpoints.ensure("llama4")
    tp = engine.TENSOR_PARALLEL
    loaders = {"auto": "auto", "runai_streamer": SERVE_LOADER[engine.DEVICE]}

    def one(how: str) -> tuple[str, dict]:
        answer = serve_and_ask(model, loaders[how], OUT.parent / f"serve-{how}.log")
        progress.step(f"vllm serve --load-format {how} TP={tp} (pid {answer['pid']}, stopped)")
        return how, answer

    with ThreadPoolExecutor(harness.SIDE_BY_SIDE[engine.DEVICE]) as pool:
        served = dict(pool.map(one, loaders))
    if without_loader(served["auto"]["flags"]) != without_loader(served["runai_streamer"]["flags"]):
        raise ForkError("the two servers differ in more than the loader")
    auto, runai = served["auto"], served["runai_streamer"]
    return {**served, "loader": loaders["runai_streamer"], "tensor_parallel": tp,
            "identical": (auto["completion"], auto["chat"]) == (runai["completion"], runai["chat"])}


def verdict(rows: list[dict], served: dict) -> list[str]:
    """Why the demo fails: a row unlike its expectation (lab/expectations.py),
    engine runs that differ in more than the loader, or servers that answer
    differently. Empty when the fork is proven."""
    problems = []
    for r in rows:
        what = f"{r['model']} {r['scenario']} {r['tree']}"
        if r.get("other_differences"):
            problems.append(f"{what}: differs from its reference in {r['other_differences']}")
        problems += [f"{what}: {p}" for p in r.get("placement_problems") or []]
        # Corrupted parameters per rank (in-process loads have one rank).
        counts = ([len(names) for names in r["differing_per_rank"]]
                  if "differing_per_rank" in r else [r["differing_tensors"]])
        tokens = r["tokens_identical"] if r.get("judge_tokens", True) else None
        problems += [f"{what}: {p}" for p in expectations.problems(
            r["model"], r["scenario"], r["tree"], counts, tokens,
            r.get("overheld_per_rank", r.get("overheld_steps")))]
        if r.get("alias_kept") is False and r["tree"] == "patched":
            problems.append(f"{what}: a reload broke the conv weights' alias")
    if served["identical"] is False:
        problems.append("vllm serve: runai_streamer answered unlike auto")
    return problems


def kept_runs_dir(identity: dict) -> Path | None:
    """Where a GPU demo keeps each engine run, so that one cut short (a GPU
    node lent for ten minutes a call) goes on where it stopped: per commit of
    this repository and tree HEAD. None on CPU, and for uncommitted code,
    whose runs could not be told apart."""
    if engine.DEVICE != "cuda" or identity["fork_commit"].endswith("-dirty"):
        return None
    return BUILD / "demo" / "cuda-runs" / (f"{identity['fork_commit'][:12]}-"
                                           f"{identity['tree_head'][:12]}")


def main() -> int:
    out = OUT if engine.DEVICE == "cpu" else OUT.with_name(f"results-{engine.DEVICE}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    say(f"proving the series on {TREE.relative_to(BUILD.parent)} against its base on "
        f"{engine.DEVICE.upper()}, tiny checkpoints, real streamer and engine")
    machine = trees.run_module("proof.machine", [], trees.tree_env("patched"),
                               "describing this machine")
    identity = series.identity()
    in_process = engine.DEVICE == "cpu"
    plan = harness.engine_plan() + (harness.ray_plan() if in_process else [])
    for kind in {kind for kind, *_ in plan} | ({"llama4", "nemotron_vl", "nemotron_h"}
                                               if in_process else set()):
        checkpoints.ensure(kind)
    total = (2 * (2 * len(LOAD_SCENARIOS)) + 2 if in_process else 0) + len(plan) + 2
    progress = Progress(total)
    rows = load_rows(progress) if in_process else []
    rows += engine_rows(progress, plan, kept_runs_dir(identity))
    rows += reload_rows(progress) if in_process else []
    served = serve_rows(progress)
    stable = all(r.get("reference_stable", True) for r in rows)
    if not stable:
        # Tokens are then no evidence either way; the weight digests still are.
        served["identical"] = None
    for r in rows:
        r["expected"] = expectations.expected(r["model"], r["scenario"], r["tree"])
    problems = verdict(rows, served)
    out.write_text(json.dumps({"device": engine.DEVICE, "machine": machine,
                               "series": identity,
                               "install": read_json(BUILD / "gpu-install.json")
                               if engine.DEVICE == "cuda" else None,
                               "engine_args": {**engine.COMMON_ARGS,
                                               **engine.DEVICE_ARGS[engine.DEVICE]},
                               "engine_env": engine.DEVICE_ENV[engine.DEVICE],
                               "rows": rows, "serve": served, "problems": problems,
                               "wall_s": round(time.monotonic() - start, 1)}, indent=1))
    print()
    print(format_table(rows))
    print()
    for r in rows:
        if any(r.get("ray_nodes") or []):
            print(f"{r['model']} {r['scenario']} {r['tree']}: "
                  + ", ".join(f"rank {rank} on Ray node {node}"
                              for rank, node in enumerate(r["ray_nodes"])))
    for r in rows:
        for rank, names in enumerate(r.get("differing_per_rank") or []):
            if names:
                print(f"{r['model']} {r['scenario']} {r['tree']} ({r['kernel_library']}) "
                      f"rank {rank}: {len(names)} corrupted: {', '.join(names)}")
    if not stable:
        print("two identical `auto` engine runs gave different tokens on this machine: "
              "tokens compared as no evidence (tokens_identical -)")
    print()
    for how in ("auto", "runai_streamer"):
        print(f"vllm serve --load-format {how} (TP={served['tensor_parallel']}): completion "
              f"{served[how]['completion']!r}, chat {served[how]['chat']!r}")
    identical = {True: "yes", False: "NO", None: "not compared (unstable reference)"}
    print(f"served answers identical: {identical[served['identical']]}")
    print(f"wrote {out.relative_to(BUILD.parent)} in {time.monotonic() - start:.0f} s")
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main_wrapper(main)
