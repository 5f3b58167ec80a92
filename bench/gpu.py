"""`make bench DEVICE=cuda`: load throughput and host memory of a
Scout-shaped load into the real engine on one GPU, at vLLM's default thread
settings: base, the fork without its last patch, and the fork.

    python -m bench.gpu [--docs-only]

A Llama-4-Scout-shaped checkpoint at real widths (bench/scout.py) is loaded
by the engine at tensor parallel 1 on three trees: the base, the fork
without its last patch (build/vllm-without-last, made here), and the fork.
Each with `auto` and with the newest runai-model-streamer (0.17.1, the one
vLLM 0.34 requires; copies), the latter
with runai's default memory limit and with a bounded one (BOUNDED_TENSORS
times the largest tensor). runai 0.17 reads with O_DIRECT by default (its
`io_uring_direct` strategy): those rows read the node's disk, while `auto`
reads the page cache. The "page cache" rows set PAGE_CACHE_STRATEGY, so
that runai reads the same cached bytes as `auto` does. Nothing sets OMP_NUM_THREADS, and the engine
uses vLLM's multiprocess executor, as it does at tensor parallel 2 and up:
vLLM then runs each worker's torch on one thread, as users of multi-GPU
nodes get it. Labelled extras: OMP_NUM_THREADS forced to the CPU count, and
vLLM's one-process executor (its default at tensor parallel 1, where torch
keeps every CPU thread).

Per run: the worker's `load_weights` time (bench/gpuload.py), throughput
(checkpoint bytes / that time), and the peak anonymous memory (RssAnon) of
the engine's whole process tree during it, sampled every few milliseconds.
bench/h2d.py measures the node's host-to-device limits beside them, and
bench/stream_read.py what each loader's reader delivers with no model.

Each run's result is kept in build/bench/cuda-runs/ under the series' tree
HEAD, so that a bench cut short goes on where it stopped.

Writes build/bench/results-cuda.json, keeps a copy as docs/benchmarks-gpu.json
and generates docs/benchmarks-gpu.md from it (`--docs-only` regenerates the
page from the committed JSON; bench/test_gpu.py checks that they agree).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lab import engine, trees  # noqa: E402
from tools import series  # noqa: E402
from tools.common import (  # noqa: E402
    BUILD,
    ROOT,
    RUNAI_NEWEST,
    ForkError,
    main_wrapper,
    read_json,
    root_cause,
    say,
    stop_group,
)
from tools.gpu_env import describe_install  # noqa: E402

OUT = BUILD / "bench" / "results-cuda.json"
DOCS = ROOT / "docs" / "benchmarks-gpu.md"
DOCS_JSON = ROOT / "docs" / "benchmarks-gpu.json"
GIB = 1024 ** 3
# One tensor's worth: well below the slice, so that a read-ahead which piles
# up shows against it (runai needs room for the largest tensor).
BOUNDED_TENSORS = 1
# runai's buffered readers, io_uring's first, the synchronous one where the
# node refuses io_uring.
PAGE_CACHE_STRATEGY = "io_uring_buffered,sync_buffered"
SAMPLE_EVERY_S = 0.01
# One engine start and load of the slice; far above the slowest seen (about 140 s).
LOAD_TIMEOUT_S = 900
# A stopped run's processes must release their memory before the next run starts.
DRAIN_TIMEOUT_S = 60
RUNS_DIR = BUILD / "bench" / "cuda-runs"
# (label, tree, load format, limit, forced threads, executor): "default" is
# runai's own limit; trees as lab.trees names them. The measured runs use
# vLLM's multiprocess executor ("mp"), as every engine of tensor parallel 2 and
# up does: vLLM then sets OMP_NUM_THREADS=1 in each worker, so each worker here
# loads as one worker of a multi-GPU node does. At tensor parallel 1 vLLM's
# default is the one-process executor ("uni"), where torch keeps every CPU
# thread; two extra rows show that.
TREE_LABELS = {"base": "base", "without-last": "fork without its last patch",
               "patched": "fork"}
# (label, tree, load format, limit, forced threads, executor, runai reads
# through the page cache)
RUNS = [(f"{TREE_LABELS[tree]}, {what}", tree, load_format, limit, False, "mp", False)
        for tree in ("patched", "without-last", "base")
        for what, load_format, limit in (("auto", "auto", "default"),
                                         ("runai default limit", "runai_streamer", "default"),
                                         ("runai bounded", "runai_streamer", "bounded"))]
RUNS += [(f"{TREE_LABELS[tree]}, runai page cache, {what}", tree, "runai_streamer", limit, False,
          "mp", True)
         for tree, what, limit in (("patched", "default limit", "default"),
                                   ("patched", "bounded", "bounded"),
                                   ("without-last", "default limit", "default"))]
FORCED = "fork, auto, OMP_NUM_THREADS = CPU count (extra)"
RUNS.append((FORCED, "patched", "auto", "default", True, "mp", False))
RUNS += [(f"{TREE_LABELS[tree]}, auto, one-process executor (extra)", tree, "auto", "default",
          False, "uni", False) for tree in ("patched", "without-last")]

def tree_anon_bytes(session: int) -> int:
    """RssAnon summed over every process of a session (the engine, its
    engine core and its worker all start in the driver's new session)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # field 6 of stat: the session id
                continue
            with open(f"/proc/{entry.name}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f
                              if line.startswith("RssAnon:"))
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # the process ended while being read
    return total


def measured_run(tree: str, model: Path, load_format: str, limit: str,
                 omp: str | None, executor: str = "mp", page_cache: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "log"
        # The demo's GPU environment (lab/engine.py: Triton's MoE kernels,
        # not FlashInfer's compiled on first use), then vLLM's thread default.
        env = {**trees.tree_env(tree, f"runai-{RUNAI_NEWEST}-copy"), **engine.DEVICE_ENV["cuda"]}
        env.pop("OMP_NUM_THREADS", None)  # vLLM's default, unless the run forces one
        if omp:
            env["OMP_NUM_THREADS"] = omp
        env.pop("RUNAI_STREAMER_FS_STRATEGY", None)  # runai's default, unless asked
        if page_cache:
            env["RUNAI_STREAMER_FS_STRATEGY"] = PAGE_CACHE_STRATEGY
        cmd = [trees.PYTHON, "-m", "bench.gpuload", str(model), load_format, limit, str(out),
               executor]
        samples: list[tuple[float, int]] = []
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.time(), tree_anon_bytes(proc.pid)))
                    time.sleep(SAMPLE_EVERY_S)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                code = proc.wait(timeout=LOAD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                stop.set()
                sampler.join()
                # The driver leaves with os._exit, and one that timed out is
                # still running: either way its engine core would live on,
                # holding GPU and host memory, into the next run.
                stop_group(proc, grace_s=0)
                drained = time.monotonic() + DRAIN_TIMEOUT_S
                while tree_anon_bytes(proc.pid):
                    if time.monotonic() > drained:
                        raise ForkError(f"processes of session {proc.pid} outlived their bench "
                                        f"run by {DRAIN_TIMEOUT_S} s; stop them before the next")
                    time.sleep(0.5)
        if code is None:
            raise ForkError(f"bench load {tree}/{load_format}/{limit} did not finish in "
                            f"{LOAD_TIMEOUT_S} s and was stopped:\n"
                            + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        result = read_json(out) if code == 0 else None
        if result is None:
            text = log.read_text(errors="replace")
            raise ForkError(f"bench load {tree}/{load_format}/{limit} failed (exit {code}; "
                            f"root cause: {root_cause(text) or 'none printed'}):\n"
                            + "\n".join(text.splitlines()[-20:]))
    trees.check_streamer(f"runai-{RUNAI_NEWEST}-copy", result["runai_file"])
    start, end = result["window"]["start"], result["window"]["end"]
    during = [a for t, a in samples if start <= t <= end]
    before = [a for t, a in samples if t < start]
    if not during:
        raise ForkError("no memory sample fell inside the load; the load was too short to measure")
    return {"tree": tree, "load_format": load_format, "limit": limit,
            "load_s": round(end - start, 2), "peak_tree_anon": max(during),
            "tree_anon_at_start": before[-1] if before else None,
            "samples_during_load": len(during), "engine_args": result["engine_args"],
            "omp_num_threads": result["omp_num_threads"],
            "torch_threads": result["window"]["torch_threads"], "runai_file": result["runai_file"],
            "runai_fs_strategy": env.get("RUNAI_STREAMER_FS_STRATEGY", "default")}


def machine() -> dict:
    return trees.run_module("proof.machine", [], trees.tree_env("patched"), "describing this GPU")


def ensure_without_last() -> None:
    """build/vllm-without-last with the CUDA build's files of build/vllm."""
    from tools.env import CUDA_FILES

    names = json.loads(CUDA_FILES.read_text()) if CUDA_FILES.exists() else []
    if not names:
        raise ForkError(f"{trees.TREE} has no CUDA build's files recorded: run `make gpu-env` "
                        "first")
    trees.ensure_without_last(names)


def gbps(checkpoint_bytes: int, seconds: float) -> float:
    return checkpoint_bytes / seconds / 1e9


def run_all(identity: dict) -> dict:
    from bench import scout

    model = scout.ensure()
    ensure_without_last()
    largest = trees.largest_tensor_bytes(model)
    size = trees.checkpoint_bytes(model)
    bounded = BOUNDED_TENSORS * largest
    kept = RUNS_DIR / identity["tree_head"][:12]
    kept.mkdir(parents=True, exist_ok=True)
    runs = {}
    for i, (label, tree, load_format, limit, forced, executor, page_cache) in enumerate(RUNS, 1):
        # Plain file names: kept runs are copied off lent nodes by tools that
        # refuse names with commas or spaces.
        done = kept / (re.sub(r"[^A-Za-z0-9.=-]+", "_", label).strip("_") + ".json")
        if done.exists():
            runs[label] = json.loads(done.read_text())
            say(f"[{i}/{len(RUNS)}] {label}: kept from an earlier run of this series")
            continue
        say(f"[{i}/{len(RUNS)}] {label}")
        value = str(bounded) if limit == "bounded" else limit
        run = measured_run(tree, model, load_format, value,
                           str(os.cpu_count()) if forced else None, executor, page_cache)
        run["gb_per_s"] = round(gbps(size, run["load_s"]), 3)
        done.write_text(json.dumps(run, indent=1))
        runs[label] = run
        say(f"    load {run['load_s']} s, {run['gb_per_s']:.2f} GB/s on {run['torch_threads']} "
            f"torch thread(s); peak host anon of the process tree "
            f"{run['peak_tree_anon'] / GIB:.1f} GiB")
    fork, prev, base = TREE_LABELS["patched"], TREE_LABELS["without-last"], "base"

    def ratio(a: str, b: str, key: str) -> float:
        return runs[a][key] / runs[b][key]

    ratios = {
        "fork_over_without_last_speed_auto": ratio(f"{fork}, auto", f"{prev}, auto", "gb_per_s"),
        "fork_over_without_last_speed_runai": ratio(f"{fork}, runai default limit",
                                                    f"{prev}, runai default limit", "gb_per_s"),
        "fork_over_without_last_speed_runai_page_cache": ratio(
            f"{fork}, runai page cache, default limit",
            f"{prev}, runai page cache, default limit", "gb_per_s"),
        "fork_default_over_bounded_memory": ratio(f"{fork}, runai default limit",
                                                  f"{fork}, runai bounded", "peak_tree_anon"),
        "fork_default_over_bounded_memory_page_cache": ratio(
            f"{fork}, runai page cache, default limit", f"{fork}, runai page cache, bounded",
            "peak_tree_anon"),
        "base_over_fork_memory_default": ratio(f"{base}, runai default limit",
                                               f"{fork}, runai default limit", "peak_tree_anon"),
        "base_over_fork_memory_bounded": ratio(f"{base}, runai bounded", f"{fork}, runai bounded",
                                               "peak_tree_anon"),
    }
    h2d = trees.run_module("bench.h2d", [str(model)], trees.tree_env("patched"),
                           "measuring host-to-device copies")
    reader_env = trees.tree_env("patched", f"runai-{RUNAI_NEWEST}-copy")
    reader_env.pop("RUNAI_STREAMER_FS_STRATEGY", None)
    readers = trees.run_module("bench.stream_read", [str(model), "cuda"], reader_env,
                               "measuring each loader's reader alone")
    # runai resolves its read strategy once per process: a process of its own.
    cached = trees.run_module("bench.stream_read", [str(model), "cuda", "runai", "runai-views"],
                              {**reader_env, "RUNAI_STREAMER_FS_STRATEGY": PAGE_CACHE_STRATEGY},
                              "measuring runai's reader through the page cache")
    readers["rows"] += [{**row, "reader": f"{row['reader']}, page cache"}
                        for row in cached["rows"]]
    return {"machine": machine(), "checkpoint_bytes": size, "largest_tensor_bytes": largest,
            "bounded_limit_bytes": bounded, "scout_layers": scout.LAYERS, "runs": runs,
            "ratios": ratios, "host_to_device": h2d, "readers": readers,
            "cpu_count": os.cpu_count(), "runai_version": RUNAI_NEWEST,
            "page_cache_strategy": PAGE_CACHE_STRATEGY,
            "engine_env": engine.DEVICE_ENV["cuda"]}


RATIO_ROWS = [
    ("fork_over_without_last_speed_auto",
     "fork / fork without its last patch, throughput, auto", 1),
    ("fork_over_without_last_speed_runai",
     "fork / fork without its last patch, throughput, runai", 1),
    ("fork_over_without_last_speed_runai_page_cache",
     "fork / fork without its last patch, throughput, runai page cache", 1),
    ("fork_default_over_bounded_memory", "fork host memory, runai default limit / bounded", 2),
    ("fork_default_over_bounded_memory_page_cache",
     "fork host memory, runai page cache, default limit / bounded", 2),
    ("base_over_fork_memory_default", "base / fork host memory, runai default limit", 2),
    ("base_over_fork_memory_bounded", "base / fork host memory, bounded", 2),
]


def render(r: dict) -> str:
    m = r["machine"]
    gpu = m["gpu"]
    h2d = r["host_to_device"]
    lines = [
        "# Benchmark on one GPU: a Llama-4-Scout-shaped load", "",
        "Generated by `make bench DEVICE=cuda` (bench/gpu.py) from "
        "`build/bench/results-cuda.json`. Do not edit by hand.", "",
        f"- GPU: {gpu.get('name')} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}); "
        f"host CPU {m['cpu'].get('model')}, {r['cpu_count']} CPUs; torch {m['torch']}; "
        f"Python {m['python']}; vLLM {m['vllm_version']}.",
        f"- Series: {series.describe_identity(r.get('series'))}.",
        f"- Installed by: {describe_install(r.get('install'))}.",
        f"- Checkpoint: Llama 4 Scout's widths, {r['scout_layers']} MoE layers, "
        f"{r['checkpoint_bytes'] / GIB:.1f} GiB, largest tensor "
        f"{r['largest_tensor_bytes'] / GIB:.2f} GiB (bench/scout.py).",
        "- The real engine at tensor parallel 1 with vLLM's default thread settings "
        "(nothing sets `OMP_NUM_THREADS`; one extra row forces it). The measured runs use "
        "vLLM's multiprocess executor, as every engine of tensor parallel 2 and up does, "
        "so vLLM gives each worker one torch thread, as on a multi-GPU node; the "
        "one-process rows are vLLM's default at tensor parallel 1 (torch keeps every "
        "CPU thread), as extras. "
        + "".join(f"`{k}={v}` " for k, v in r.get("engine_env", {}).items())
        + "in every run. "
        "Trees: base (v0.21.0), the fork without its last patch, the fork. runai: "
        f"runai-model-streamer {r.get('runai_version', '0.17.0')} (copies); bounded: "
        "`memory_limit` "
        f"{r['bounded_limit_bytes'] / GIB:.1f} GiB "
        f"({r['bounded_limit_bytes'] / r['largest_tensor_bytes']:.0f} × the largest tensor). "
        "runai 0.17 reads with O_DIRECT by default, so its plain rows read this node's disk "
        "while `auto` reads the page cache; the \"page cache\" rows set "
        f"`RUNAI_STREAMER_FS_STRATEGY={r.get('page_cache_strategy', PAGE_CACHE_STRATEGY)}`, "
        "so that runai reads the same cached bytes as `auto`.",
        "- Throughput: checkpoint bytes / the worker's `load_weights` time. Host memory: peak "
        "RssAnon of the engine's whole process tree during `load_weights`, sampled every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms.",
        f"- This node's host-to-device limits (bench/h2d.py, {h2d['bytes'] / GIB:.1f} GiB "
        f"from the checkpoint in the page cache): pageable {h2d['pageable_gb_per_s']:.1f} "
        f"GB/s, pinned {h2d['pinned_gb_per_s']:.1f} GB/s.",
        "", "| run | load time | throughput | torch threads in the load | "
        "peak host anon, process tree |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {run['load_s']:.1f} s | {run['gb_per_s']:.2f} GB/s | "
              f"{run.get('torch_threads', '?')} | {run['peak_tree_anon'] / GIB:.1f} GiB |"
              for label, run in r["runs"].items()]
    ratios = r["ratios"]
    lines += ["", "| ratio (one run) | value |", "|---|---|"]
    lines += [f"| {text} | {ratios[key]:.{digits}f} |" for key, text, digits in RATIO_ROWS
              if key in ratios]
    lines.append("")
    if "readers" in r:
        lines += render_readers(r["readers"])
    return "\n".join(lines)


def render_readers(readers: dict) -> list[str]:
    """bench/stream_read.py's table: each loader's reader with no model."""
    takes = {"none": "each tensor taken and let go",
             "copy": f"each tensor copied to {readers['device']}"}
    lines = ["", f"Each loader's reader alone on this node (bench/stream_read.py: vLLM's "
             f"weight iterators over the same checkpoint, no model; runai-model-streamer "
             f"{readers['runai_version']}, its default limit, copies and views; torch on "
             f"{readers['torch_threads']} threads; best of two):", "",
             "| reader | taken | time (both readings) | throughput |", "|---|---|---|---|"]
    for row in readers["rows"]:
        # auto's iterator yields tensors over a memory map: letting them go reads
        # nothing, so a rate there would be a number with no bytes behind it.
        mapped = row["reader"] == "auto" and row["take"] == "none"
        rate = "none: a memory map, nothing read" if mapped else f"{row['gb_per_s']:.2f} GB/s"
        lines.append(f"| {row['reader']} | {takes[row['take']]} | {row['seconds']:.2f} s "
                     f"({', '.join(f'{s:.2f}' for s in row['readings_s'])}) | {rate} |")
    return [*lines, ""]


def main() -> int:
    if "--docs-only" in sys.argv:
        results = read_json(DOCS_JSON)
        if results is None:
            raise ForkError(f"no {DOCS_JSON}: run `make bench DEVICE=cuda` on a GPU node first")
    else:
        identity = series.identity()
        results = {**run_all(identity), "series": identity,
                   "install": read_json(BUILD / "gpu-install.json")}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1))
        DOCS_JSON.write_text(json.dumps(results, indent=1))
    DOCS.write_text(render(results))
    say(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
