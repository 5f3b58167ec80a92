"""`make bench DEVICE=cuda`: host memory and load time of a Scout-shaped
load into the real engine on one GPU, base against the fork.

    python -m bench.gpu [--docs-only]

A Llama-4-Scout-shaped checkpoint at real widths (bench/scout.py) is loaded
by the engine at tensor parallel 1 with runai-model-streamer 0.17.0
(copies), on the base and the patched tree, and with `auto` as the
reference; each streaming load twice: with runai's default memory limit and
with a bounded one (BOUNDED_TENSORS times the largest tensor). A sampler
reads the anonymous memory (RssAnon) of every process of the engine's
process tree every few milliseconds; the number that counts is its peak
between the start and the end of the worker's `load_weights`
(bench/gpuload.py). Every run has the same OMP_NUM_THREADS: vLLM's workers
copy weights to the GPU on those threads, so the load time follows it.

Writes build/bench/results-cuda.json, keeps a copy as docs/benchmarks-gpu.json
and generates docs/benchmarks-gpu.md from it (`--docs-only` regenerates the
page from the committed JSON; bench/test_gpu.py checks that they agree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lab import trees  # noqa: E402
from tools import series  # noqa: E402
from tools.common import (  # noqa: E402
    BUILD,
    ROOT,
    ForkError,
    main_wrapper,
    read_json,
    root_cause,
    say,
    stop_group,
)

OUT = BUILD / "bench" / "results-cuda.json"
DOCS = ROOT / "docs" / "benchmarks-gpu.md"
DOCS_JSON = ROOT / "docs" / "benchmarks-gpu.json"
GIB = 1024 ** 3
BOUNDED_TENSORS = 3
SAMPLE_EVERY_S = 0.01
# One engine start and load of the slice; far above the slowest seen (about 140 s).
LOAD_TIMEOUT_S = 900
# A stopped run's processes must release their memory before the next run starts.
DRAIN_TIMEOUT_S = 60
# (label, tree, load format, limit): "default" is runai's own limit.
RUNS = [("auto", "patched", "auto", "default"),
        ("base, runai default limit", "base", "runai_streamer", "default"),
        ("patched, runai default limit", "patched", "runai_streamer", "default"),
        ("base, runai bounded", "base", "runai_streamer", "bounded"),
        ("patched, runai bounded", "patched", "runai_streamer", "bounded")]


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


def measured_run(tree: str, model: Path, load_format: str, limit: str, omp: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "result.json", Path(tmp) / "log"
        env = {**trees.tree_env(tree, "runai-0.17.0"), "OMP_NUM_THREADS": omp,
               "VLLM_USE_FLASHINFER_SAMPLER": "0"}
        cmd = [trees.PYTHON, "-m", "bench.gpuload", str(model), load_format, limit, str(out)]
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
    start, end = result["window"]["start"], result["window"]["end"]
    during = [a for t, a in samples if start <= t <= end]
    before = [a for t, a in samples if t < start]
    if not during:
        raise ForkError("no memory sample fell inside the load; the load was too short to measure")
    return {"tree": tree, "load_format": load_format, "limit": limit,
            "load_s": round(end - start, 2), "peak_tree_anon": max(during),
            "tree_anon_at_start": before[-1] if before else None,
            "samples_during_load": len(during), "engine_args": result["engine_args"],
            "runai_file": result["runai_file"]}


def machine() -> dict:
    return trees.run_module("proof.machine", [], trees.tree_env("patched"), "describing this GPU")


def run_all() -> dict:
    from bench import scout

    model = scout.ensure()
    largest = trees.largest_tensor_bytes(model)
    bounded = BOUNDED_TENSORS * largest
    omp = str(os.cpu_count())
    runs = {}
    for i, (label, tree, load_format, limit) in enumerate(RUNS, 1):
        value = str(bounded) if limit == "bounded" else limit
        say(f"[{i}/{len(RUNS)}] {label}")
        runs[label] = measured_run(tree, model, load_format, value, omp)
        say(f"    peak host anon of the process tree during the load "
            f"{runs[label]['peak_tree_anon'] / GIB:.1f} GiB, load {runs[label]['load_s']} s")
    ratios = {f"base_over_patched_{kind}": runs[f"base, runai {kind}"]["peak_tree_anon"]
              / runs[f"patched, runai {kind}"]["peak_tree_anon"]
              for kind in ("default limit", "bounded")}
    ratios["patched_bounded_over_default_load_time"] = (
        runs["patched, runai bounded"]["load_s"] / runs["patched, runai default limit"]["load_s"])
    return {"machine": machine(), "checkpoint_bytes": trees.checkpoint_bytes(model),
            "largest_tensor_bytes": largest, "bounded_limit_bytes": bounded,
            "omp_num_threads": omp, "scout_layers": scout.LAYERS, "runs": runs,
            "ratios": ratios}


def render(r: dict) -> str:
    m = r["machine"]
    gpu = m["gpu"]
    lines = [
        "# Benchmark on one GPU: a Llama-4-Scout-shaped load", "",
        "Generated by `make bench DEVICE=cuda` (bench/gpu.py) from "
        "`build/bench/results-cuda.json`. Do not edit by hand.", "",
        f"- GPU: {gpu.get('name')} (driver {gpu.get('driver')}, CUDA {gpu.get('cuda')}); "
        f"host CPU {m['cpu'].get('model')}; torch {m['torch']}; Python {m['python']}; "
        f"vLLM {m['vllm_version']}.",
        f"- Series: {series.describe_identity(r.get('series'))}.",
        f"- Checkpoint: Llama 4 Scout's widths, {r['scout_layers']} MoE layers, "
        f"{r['checkpoint_bytes'] / GIB:.1f} GiB, largest tensor "
        f"{r['largest_tensor_bytes'] / GIB:.2f} GiB (bench/scout.py).",
        "- The real engine at tensor parallel 1, runai-model-streamer 0.17.0 (copies). "
        f"Bounded: `memory_limit` {r['bounded_limit_bytes'] / GIB:.1f} GiB "
        f"({BOUNDED_TENSORS} × the largest tensor). `OMP_NUM_THREADS={r['omp_num_threads']}` "
        "in every run.",
        "- Host memory: peak RssAnon of the engine's whole process tree between the start "
        "and the end of the worker's `load_weights`, sampled every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms.",
        "", "| run | peak host anon, process tree | load time |", "|---|---|---|"]
    lines += [f"| {label} | {run['peak_tree_anon'] / GIB:.1f} GiB | {run['load_s']:.1f} s |"
              for label, run in r["runs"].items()]
    ratios = r["ratios"]
    lines += ["", "| ratio (one run) | value |", "|---|---|",
              f"| base / patched host memory, runai default limit | "
              f"{ratios['base_over_patched_default limit']:.2f} |",
              "| base / patched host memory, bounded | "
              f"{ratios['base_over_patched_bounded']:.2f} |",
              f"| patched load time, bounded / default limit | "
              f"{ratios['patched_bounded_over_default_load_time']:.2f} |",
              "", "With runai's default limit the streamer reads ahead as far as its limit "
              "allows, so the fork's host memory is set by the streamer, not by the model. "
              "Bound it (`RUNAI_STREAMER_MEMORY_LIMIT`, or `memory_limit` in "
              "`--model-loader-extra-config`) for the fix to pay off.", ""]
    return "\n".join(lines)


def main() -> int:
    if "--docs-only" in sys.argv:
        results = read_json(DOCS_JSON)
        if results is None:
            raise ForkError(f"no {DOCS_JSON}: run `make bench DEVICE=cuda` on a GPU node first")
    else:
        results = {**run_all(), "series": series.identity()}
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1))
        DOCS_JSON.write_text(json.dumps(results, indent=1))
    DOCS.write_text(render(results))
    say(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
