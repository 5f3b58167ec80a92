"""`make bench`: host memory and load time of the fixes, against the floor.

    python -m bench.run [--size full|tiny] [--reps N] [--out DIR]

Loads a Llama-4-shaped checkpoint (full: 2.1 GB, several shards) in-process
through vLLM's runai streamer loader with runai-model-streamer 0.17.0
(copy-returning) and a fixed streamer memory limit, on the base and the
patched tree, and through `auto` (safetensors mmap) as the reference. The
three configurations alternate, several repetitions. The floor is what any
streaming load must hold: the streamer's buffer plus the largest tensor.

Beside them, the peer design that later upstream releases chose (the runai
iterator clones every tensor; emulated on the patched tree in the measuring
process) with runai-model-streamer 0.17.0 and with 0.15.7 (buffer reused),
and the real engine at tensor parallel 2 (mp executor, a process per
worker): every worker's peak anonymous memory while it loads, base and
patched, with a projection to Llama 4 Scout and Maverick at TP=8. The same
under vLLM's Ray executor (both workers Ray actors on one loopback Ray node,
the setting of the original bug report), from the same run.

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
from lab import checkpoints, trees  # noqa: E402
from tools.common import BUILD, ROOT, ForkError, main_wrapper, say  # noqa: E402

DOCS_TABLE = ROOT / "docs" / "benchmarks.md"
DOCS_CHART = ROOT / "docs" / "benchmarks-memory.png"
MIB = 1024 * 1024
# key: (tree, load format, streamer, peer). "peer" is the design later upstream
# releases chose, emulated on the patched tree: the runai iterator yields a
# clone of every tensor (bench/measure.py --clone-every-tensor).
CONFIGS = {
    "base/runai_streamer": ("base", "runai_streamer", "0.17.0", False),
    "patched/runai_streamer": ("patched", "runai_streamer", "0.17.0", False),
    "peer/runai_streamer": ("patched", "runai_streamer", "0.17.0", True),
    "patched/runai_streamer-0.15.7": ("patched", "runai_streamer", "0.15.7", False),
    "peer/runai_streamer-0.15.7": ("patched", "runai_streamer", "0.15.7", True),
    "patched/auto": ("patched", "auto", "0.17.0", False),
}
# Which streamer a process imports is chosen by the harness's scenario name.
STREAMER_SCENARIO = {"0.17.0": "runai-0.17.0-copy", "0.15.7": "runai-0.15.7-reuse"}
# Projection inputs, from the models' published configs: bf16 checkpoint size
# and the largest tensor (one layer's fused expert gate_up_proj:
# experts x hidden 5120 x 2 x 8192 x 2 bytes).
GIB = 1024 ** 3
PROJECTED = {
    "Llama-4-Scout-17B-16E (109B params)": (203 * GIB, 16 * 5120 * 16384 * 2),
    "Llama-4-Maverick-17B-128E (400B params)": (400e9 * 2, 128 * 5120 * 16384 * 2),
}
PROJECTED_TP = 8
# runai-model-streamer's own memory limit in plain mode when none is given
# (runai_model_streamer/file_streamer/requests_iterator.py); in distributed
# mode it is unlimited unless RUNAI_STREAMER_MEMORY_LIMIT is set.
RUNAI_DEFAULT_LIMIT = 40e9


def measure(tree: str, model: Path, load_format: str, memory_limit: int,
            streamer: str = "0.17.0", peer: bool = False) -> dict:
    args = [model, load_format, memory_limit] + (["--clone-every-tensor"] if peer else [])
    return trees.run_module("bench.measure", args,
                            trees.tree_env(tree, STREAMER_SCENARIO[streamer]),
                            f"measure {tree}/{load_format}/{streamer}", timeout=1200)


def engine_tp2(tree: str, model: Path, memory_limit: int, layout: str = "mp") -> dict:
    from lab.raycluster import placement_problems

    args = [model, memory_limit] + ([] if layout == "mp" else [f"--layout={layout}"])
    result = trees.run_module("bench.engine_tp", args,
                              trees.tree_env(tree, "runai-0.17.0-copy"),
                              f"engine TP=2 load on {tree} ({layout})", timeout=1200)
    trees.check_streamer("runai-0.17.0-copy", result["runai_file"])
    problems = placement_problems(result, layout)
    if problems:
        raise ForkError(f"engine TP=2 load on {tree} ({layout}): {problems[0]}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def llama4_memory(model: Path, memory_limit: int, reps: int) -> dict:
    runs: dict[str, list[dict]] = {key: [] for key in CONFIGS}
    for rep in range(reps):
        for key, (tree, load_format, streamer, peer) in CONFIGS.items():
            # Alternating, so that drift hits every configuration alike.
            start = time.monotonic()
            result = measure(tree, model, load_format, memory_limit, streamer, peer)
            runs[key].append(result)
            say(f"rep {rep + 1}/{reps} {key}: peak anon +"
                f"{result['peak_anon_over_start'] / MIB:.0f} MiB, load {result['load_s']:.2f} s "
                f"({time.monotonic() - start:.0f} s with model init)")
    return runs


def multimodal_bytes(model: Path) -> int:
    return sum(size for name, size in trees.tensor_sizes(model).items()
               if name.startswith(("mlp1.", "vision_model.", "sound")))


def reload_seconds(model: Path, reloads: int, flags: list[str]) -> list[float]:
    """Seconds of each reload after the first (which pays one-off costs), on
    the patched tree, by the reload proof's own program (proof/reloadcheck.py)."""
    result = trees.run_module("proof.reloadcheck", [model, reloads, *flags],
                              trees.tree_env("patched"), "reload timing on patched")
    return result["reload_s"][1:]


def alias_check_ratio(model: Path, rounds: int, reloads: int) -> dict:
    with_check, without = [], []
    for _ in range(rounds):
        # The first reload of each process pays one-off costs: left out.
        with_check += reload_seconds(model, reloads, [])
        without += reload_seconds(model, reloads, ["--no-alias-check"])
    return {"with_s": with_check, "without_s": without,
            "ratio": median(with_check) / median(without)}


RATIOS = ("base_over_patched_peak_anon", "patched_peak_anon_over_floor",
          "patched_over_base_load_time", "alias_check_reload_time_ratio",
          "fork_over_peer_load_time", "fork_over_peer_peak_anon",
          "base_over_patched_tp2_total_anon", "patched_tp2_worker_over_floor",
          "base_over_patched_ray_tp2_total_anon")
# The Ray layout the bench measures (lab/engine.LAYOUTS): the bug report's.
RAY_LAYOUT = "ray1node"


def tp_summary(tp: dict, floor: int) -> dict:
    summary = {}
    for tree, result in tp.items():
        peaks = [rank["peak_anon_over_start"] for rank in result["ranks"]]
        summary[tree] = {"per_worker": peaks, "total": sum(peaks),
                         "max_over_floor": max(peaks) / floor}
    return summary


def projection(tp2: dict, checkpoint_bytes: int) -> list[dict]:
    """Host memory for the loads of big models at TP=8, scaled from what each
    TP=2 worker measured: base holds a share of the checkpoint per worker (the
    measured peak over the checkpoint size), the fork a multiple of its floor
    (streamer buffer of twice the largest tensor, plus one tensor)."""
    base_share = max(tp2["base"]["per_worker"]) / checkpoint_bytes
    fork_over_floor = tp2["patched"]["max_over_floor"]
    rows = []
    for model, (size, largest) in PROJECTED.items():
        floor = 3 * largest
        base = PROJECTED_TP * base_share * size
        fork = PROJECTED_TP * fork_over_floor * floor
        # With runai's default limit, an engine that consumes more slowly than
        # the streamer reads lets the read-ahead fill the limit in every worker.
        fork_default = PROJECTED_TP * (min(RUNAI_DEFAULT_LIMIT, size) + largest)
        rows.append({"model": model, "tp": PROJECTED_TP, "checkpoint_bytes": size,
                     "largest_tensor_bytes": largest, "base_host_bytes": base,
                     "fork_host_bytes": fork, "base_over_fork": base / fork,
                     "fork_default_limit_host_bytes": fork_default})
    return rows


def chart(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in [("base/runai_streamer", "base 0.21.0, runai 0.17.0"),
                       ("patched/runai_streamer", "patched, runai 0.17.0"),
                       ("peer/runai_streamer", "peer (clone every tensor), runai 0.17.0"),
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
                       ("peer/runai_streamer", "peer (clone every tensor), runai 0.17.0"),
                       ("patched/runai_streamer-0.15.7", "patched, runai 0.15.7 (buffer reused)"),
                       ("peer/runai_streamer-0.15.7",
                        "peer (clone every tensor), runai 0.15.7 (buffer reused)"),
                       ("patched/auto", "patched, auto (mmap)")]:
        s = r["summary"][key]
        rows.append((f"{label}: peak anon over start / load time",
                     f"{s['peak_anon_over_start'] / MIB:.1f} MiB / {s['load_s']:.2f} s"))
    for key, executor in (("tp2", "mp"), ("ray_tp2", "Ray, both workers on one Ray node")):
        for tree in ("base", "patched"):
            t = r[key]["summary"][tree]
            rows.append((f"engine TP=2 ({executor}), {tree}, runai 0.17.0: peak anon per "
                         "worker / total", " + ".join(f"{w / MIB:.1f}" for w in t["per_worker"])
                         + f" = {t['total'] / MIB:.1f} MiB"))
    rows += [(k, f"{r[k]:.3f}") for k in RATIOS]
    f15 = r["fork_over_peer"]["0.15.7"]
    rows.append(("fork over peer with runai 0.15.7 (buffer reused): load time / peak anon",
                 f"{f15['load_time']:.3f} / {f15['peak_anon']:.3f}"))
    vl = r["nemotron_vl"]
    rows.append(("Nemotron Nano VL, patched: peak anon over floor (multimodal copies)",
                 f"{vl['patched_bytes_over_floor'] / MIB:.1f} MiB "
                 f"(multimodal weights {vl['multimodal_bytes'] / MIB:.1f} MiB)"))
    lines = ["# Benchmarks", "",
             f"Generated by `make bench` ({r['size']} size, {r['reps']} repetitions, medians) "
             "from `build/bench/results.json`. Do not edit by hand.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    lines += ["", f"## Projection: host memory for the load at tensor parallel {PROJECTED_TP}",
              "", "Computed from the TP=2 measurement above, not measured: base holds its "
              "measured share of the checkpoint in every worker; the fork holds its measured "
              "multiple of the floor (a streamer buffer of twice the largest tensor, plus one "
              "tensor). Parameters themselves are not counted.", "",
              "*The fork column assumes a bounded streamer*: `memory_limit` (or "
              "`RUNAI_STREAMER_MEMORY_LIMIT`) of twice the largest tensor. With runai's "
              f"default ({RUNAI_DEFAULT_LIMIT / 1e9:.0f} GB per worker in plain mode, unlimited "
              "in distributed mode) the streamer may read ahead up to its limit whenever the "
              "engine consumes more slowly than it reads, which on GPUs it does "
              "(docs/benchmarks-gpu.md); the last column is that worst case, per worker the "
              "default limit plus one tensor.", "",
              "| model | checkpoint | largest tensor | base | fork, bounded streamer "
              "| base / fork | fork, runai default limit (worst case) |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['model']} | {p['checkpoint_bytes'] / GIB:.0f} GiB | "
              f"{p['largest_tensor_bytes'] / GIB:.2f} GiB | {p['base_host_bytes'] / GIB:.0f} GiB | "
              f"{p['fork_host_bytes'] / GIB:.0f} GiB | {p['base_over_fork']:.1f} | "
              f"{p['fork_default_limit_host_bytes'] / GIB:.0f} GiB |"
              for p in r["projection"]]
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
    largest = trees.largest_tensor_bytes(model)
    # A fixed buffer: twice the largest tensor, far below the checkpoint.
    memory_limit = 2 * largest
    floor = memory_limit + largest
    runs = llama4_memory(model, memory_limit, reps)
    summary = {key: {"peak_anon_over_start": median([r["peak_anon_over_start"] for r in rs]),
                     "load_s": median([r["load_s"] for r in rs])} for key, rs in runs.items()}
    base, patched = summary["base/runai_streamer"], summary["patched/runai_streamer"]

    vl_model = checkpoints.ensure("nemotron_vl")
    vl_limit = trees.streamer_memory_limit(vl_model)
    vl_floor = vl_limit + trees.largest_tensor_bytes(vl_model)
    vl = measure("patched", vl_model, "runai_streamer", vl_limit)
    say("nemotron_vl patched: peak anon +"
        f"{vl['peak_anon_over_start'] / MIB:.0f} MiB over start, floor {vl_floor / MIB:.0f} MiB")

    say("engine at tensor parallel 2, runai 0.17.0 copying: base, then patched")
    tp2 = {tree: engine_tp2(tree, model, memory_limit) for tree in ("base", "patched")}
    tp2_summary = tp_summary(tp2, floor)
    say(f"TP=2 total peak anon: base {tp2_summary['base']['total'] / MIB:.0f} MiB, patched "
        f"{tp2_summary['patched']['total'] / MIB:.0f} MiB")

    say(f"the same under vLLM's Ray executor ({RAY_LAYOUT}): base, then patched")
    ray_tp2 = {tree: engine_tp2(tree, model, memory_limit, RAY_LAYOUT)
               for tree in ("base", "patched")}
    ray_summary = tp_summary(ray_tp2, floor)
    say(f"Ray TP=2 total peak anon: base {ray_summary['base']['total'] / MIB:.0f} MiB, patched "
        f"{ray_summary['patched']['total'] / MIB:.0f} MiB")

    alias = alias_check_ratio(checkpoints.ensure("nemotron_h"), rounds=3 if args.size == "full"
                              else 1, reloads=20 if args.size == "full" else 3)
    say(f"reload with/without the alias check: {alias['ratio']:.3f}")

    results = {
        "size": args.size, "reps": reps, "checkpoint": model.name,
        "checkpoint_bytes": trees.checkpoint_bytes(model), "largest_tensor_bytes": largest,
        "memory_limit": memory_limit, "floor_bytes": floor, "runs": runs, "summary": summary,
        "base_over_patched_peak_anon":
            base["peak_anon_over_start"] / patched["peak_anon_over_start"],
        "patched_peak_anon_over_floor": patched["peak_anon_over_start"] / floor,
        "patched_over_base_load_time": patched["load_s"] / base["load_s"],
        "alias_check_reload_time_ratio": alias["ratio"],
        "alias_check": alias,
        "fork_over_peer": {
            version: {"load_time": summary[f"patched/runai_streamer{suffix}"]["load_s"]
                      / summary[f"peer/runai_streamer{suffix}"]["load_s"],
                      "peak_anon": summary[f"patched/runai_streamer{suffix}"]
                      ["peak_anon_over_start"]
                      / summary[f"peer/runai_streamer{suffix}"]["peak_anon_over_start"]}
            for version, suffix in (("0.17.0", ""), ("0.15.7", "-0.15.7"))},
        "tp2": {"runs": tp2, "summary": tp2_summary},
        "base_over_patched_tp2_total_anon":
            tp2_summary["base"]["total"] / tp2_summary["patched"]["total"],
        "patched_tp2_worker_over_floor": tp2_summary["patched"]["max_over_floor"],
        "ray_tp2": {"layout": RAY_LAYOUT, "runs": ray_tp2, "summary": ray_summary},
        "base_over_patched_ray_tp2_total_anon":
            ray_summary["base"]["total"] / ray_summary["patched"]["total"],
        "projection": projection(tp2_summary, trees.checkpoint_bytes(model)),
        "nemotron_vl": {"run": vl, "floor_bytes": vl_floor,
                        "multimodal_bytes": multimodal_bytes(vl_model),
                        "patched_bytes_over_floor": vl["peak_anon_over_start"] - vl_floor},
        "wall_s": round(time.monotonic() - start, 1),
    }
    # The ratios the issue names, for the 0.17.0 (copying) streamer.
    results["fork_over_peer_load_time"] = results["fork_over_peer"]["0.17.0"]["load_time"]
    results["fork_over_peer_peak_anon"] = results["fork_over_peer"]["0.17.0"]["peak_anon"]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    chart(runs, args.out / "memory.png")
    if not args.no_docs:
        write_table(results, DOCS_TABLE)
        shutil.copyfile(args.out / "memory.png", DOCS_CHART)
    for key in RATIOS:
        print(f"{key}: {results[key]:.3f}")
    print(f"fork_over_peer with runai 0.15.7 (buffer reused): load time "
          f"{results['fork_over_peer']['0.15.7']['load_time']:.3f}, peak anon "
          f"{results['fork_over_peer']['0.15.7']['peak_anon']:.3f}")
    say(f"wrote {args.out}/results.json and memory.png in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
