"""`make bench`: host memory and load time of the fixes, against the floor.

    python -m bench.run [--size full|tiny] [--reps N] [--out DIR]

Loads a Llama-4-shaped checkpoint (full: 2.1 GB, several shards) in-process
through vLLM's runai streamer loader with runai-model-streamer 0.17.0
(copy-returning) and a fixed streamer memory limit, on the base and the
patched tree, and through `auto` (safetensors mmap) as the reference. The
three configurations alternate, several repetitions. The floor is what any
streaming load must hold: the streamer's buffer plus the largest tensor.

Also: the cost of the Nemotron Nano VL fix (its multimodal copies, as bytes
over the floor) and of the reload alias check (reload time with and
without it). Writes DIR/results.json and DIR/memory.png, and regenerates
docs/benchmarks.md (with a copy of the chart) from the JSON.
`--size tiny` runs the same on the tiny checkpoints, for `make test`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proof import checkpoints, harness  # noqa: E402
from tools.common import BUILD, ROOT, main_wrapper, say  # noqa: E402

DOCS_TABLE = ROOT / "docs" / "benchmarks.md"
DOCS_CHART = ROOT / "docs" / "benchmarks-memory.png"
MIB = 1024 * 1024
CONFIGS = [("base", "runai_streamer"), ("patched", "runai_streamer"), ("patched", "auto")]


def measure(tree: str, model: Path, load_format: str, memory_limit: int) -> dict:
    return harness.run_module("bench.measure", [model, load_format, memory_limit],
                              harness.tree_env(tree, "runai-0.17.0-copy"),
                              f"measure {tree}/{load_format}", timeout=1200)


def median(values: list[float]) -> float:
    return statistics.median(values)


def llama4_memory(model: Path, memory_limit: int, reps: int) -> dict:
    runs: dict[str, list[dict]] = {f"{t}/{f}": [] for t, f in CONFIGS}
    for rep in range(reps):
        for tree, load_format in CONFIGS:  # alternate, so drift hits all alike
            start = time.monotonic()
            result = measure(tree, model, load_format, memory_limit)
            runs[f"{tree}/{load_format}"].append(result)
            say(f"rep {rep + 1}/{reps} {tree}/{load_format}: peak anon +"
                f"{result['peak_anon_over_start'] / MIB:.0f} MiB, load {result['load_s']:.2f} s "
                f"({time.monotonic() - start:.0f} s with model init)")
    return runs


def multimodal_bytes(model: Path) -> int:
    return sum(size for name, size in harness.tensor_sizes(model).items()
               if name.startswith(("mlp1.", "vision_model.", "sound")))


def alias_check_ratio(model: Path, rounds: int, reloads: int) -> dict:
    with_check, without = [], []
    for _ in range(rounds):
        # The first reload of each process pays one-off costs: left out.
        with_check += harness.reload_check("patched", model, reloads)["reload_s"][1:]
        without += harness.reload_check("patched", model, reloads,
                                        alias_check=False)["reload_s"][1:]
    return {"with_s": with_check, "without_s": without,
            "ratio": median(with_check) / median(without)}


def chart(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in [("base/runai_streamer", "base 0.21.0, runai 0.17.0"),
                       ("patched/runai_streamer", "patched, runai 0.17.0"),
                       ("patched/auto", "auto (safetensors mmap)")]:
        samples = runs[key][0]["samples"]
        ax.plot([t for t, _ in samples], [a / MIB for _, a in samples], label=label)
    ax.set_xlabel("seconds since load_weights started")
    ax.set_ylabel("anonymous memory over start (MiB)")
    ax.set_title("Host memory while loading the Llama 4 benchmark checkpoint")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_table(results: dict, path: Path) -> None:
    r = results
    rows = [
        ("checkpoint", f"{r['checkpoint_bytes'] / MIB:.0f} MiB, largest tensor "
                       f"{r['largest_tensor_bytes'] / MIB:.1f} MiB"),
        ("streamer memory limit", f"{r['memory_limit'] / MIB:.1f} MiB"),
        ("floor (buffer + largest tensor)", f"{r['floor_bytes'] / MIB:.1f} MiB"),
    ]
    for key, label in [("base/runai_streamer", "base, runai 0.17.0"),
                       ("patched/runai_streamer", "patched, runai 0.17.0"),
                       ("patched/auto", "patched, auto (mmap)")]:
        s = r["summary"][key]
        rows.append((f"{label}: peak anon over start / load time",
                     f"{s['peak_anon_over_start'] / MIB:.1f} MiB / {s['load_s']:.2f} s"))
    rows += [(k, f"{r[k]:.3f}") for k in ("base_over_patched_peak_anon",
                                          "patched_peak_anon_over_floor",
                                          "patched_over_base_load_time",
                                          "alias_check_reload_time_ratio")]
    vl = r["nemotron_vl"]
    rows.append(("Nemotron Nano VL, patched: peak anon over floor (multimodal copies)",
                 f"{vl['patched_bytes_over_floor'] / MIB:.1f} MiB "
                 f"(multimodal weights {vl['multimodal_bytes'] / MIB:.1f} MiB)"))
    lines = ["# Benchmarks", "",
             f"Generated by `make bench` ({r['size']} size, {r['reps']} repetitions, medians) "
             "from `build/bench/results.json`. Do not edit by hand.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", f"![memory over time]({DOCS_CHART.name})", ""]
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--out", type=Path, default=BUILD / "bench")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md")
    args = parser.parse_args()
    reps = args.reps or (3 if args.size == "full" else 1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    model = checkpoints.ensure("llama4_bench" if args.size == "full" else "llama4")
    largest = harness.largest_tensor_bytes(model)
    # A fixed buffer: twice the largest tensor, far below the checkpoint.
    memory_limit = 2 * largest
    floor = memory_limit + largest
    runs = llama4_memory(model, memory_limit, reps)
    summary = {key: {"peak_anon_over_start": median([r["peak_anon_over_start"] for r in rs]),
                     "load_s": median([r["load_s"] for r in rs])} for key, rs in runs.items()}
    base, patched = summary["base/runai_streamer"], summary["patched/runai_streamer"]

    vl_model = checkpoints.ensure("nemotron_vl")
    vl_limit = harness.streamer_memory_limit(vl_model)
    vl_floor = vl_limit + harness.largest_tensor_bytes(vl_model)
    vl = measure("patched", vl_model, "runai_streamer", vl_limit)
    say("nemotron_vl patched: peak anon +"
        f"{vl['peak_anon_over_start'] / MIB:.0f} MiB over start, floor {vl_floor / MIB:.0f} MiB")

    alias = alias_check_ratio(checkpoints.ensure("nemotron_h"), rounds=3 if args.size == "full"
                              else 1, reloads=20 if args.size == "full" else 3)
    say(f"reload with/without the alias check: {alias['ratio']:.3f}")

    results = {
        "size": args.size, "reps": reps, "checkpoint": model.name,
        "checkpoint_bytes": harness.checkpoint_bytes(model), "largest_tensor_bytes": largest,
        "memory_limit": memory_limit, "floor_bytes": floor, "runs": runs, "summary": summary,
        "base_over_patched_peak_anon":
            base["peak_anon_over_start"] / patched["peak_anon_over_start"],
        "patched_peak_anon_over_floor": patched["peak_anon_over_start"] / floor,
        "patched_over_base_load_time": patched["load_s"] / base["load_s"],
        "alias_check_reload_time_ratio": alias["ratio"],
        "alias_check": alias,
        "nemotron_vl": {"run": vl, "floor_bytes": vl_floor,
                        "multimodal_bytes": multimodal_bytes(vl_model),
                        "patched_bytes_over_floor": vl["peak_anon_over_start"] - vl_floor},
        "wall_s": round(time.monotonic() - start, 1),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    chart(runs, args.out / "memory.png")
    if not args.no_docs:
        write_table(results, DOCS_TABLE)
        shutil.copyfile(args.out / "memory.png", DOCS_CHART)
    for key in ("base_over_patched_peak_anon", "patched_peak_anon_over_floor",
                "patched_over_base_load_time", "alias_check_reload_time_ratio"):
        print(f"{key}: {results[key]:.3f}")
    say(f"wrote {args.out}/results.json and memory.png in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
