"""`make bench` works end to end; on the tiny checkpoints, so it is quick.
Nothing here depends on wall-clock time: the numbers are the benchmark's
business, not the tests'."""

import json
import subprocess
import sys

import pytest

from bench import run
from tools.common import ROOT

pytestmark = pytest.mark.integration


def test_bench_runs_on_tiny_size(tmp_path):
    subprocess.run([sys.executable, "-m", "bench.run", "--size", "tiny", "--out",
                    str(tmp_path), "--no-docs"], cwd=ROOT, check=True)

    results = json.loads((tmp_path / "results.json").read_text())
    for key in run.RATIOS:
        assert results[key] > 0, key
    assert set(results["runs"]) == set(run.CONFIGS)
    # Every load grew the process, by the kernel's own high-water mark: a
    # measurement that does not depend on when the sampler thread ran.
    assert all(r["peak_rss_over_start"] > 0 for runs in results["runs"].values() for r in runs)
    for key in ("tp2", "ray_tp2"):
        for tree in ("base", "patched"):
            ranks = results[key]["runs"][tree]["ranks"]
            assert [r["rank"] for r in ranks] == [0, 1]
            assert all(r["peak_rss_over_start"] > 0 for r in ranks)
    # Under Ray, each worker is a Ray actor on the loopback node.
    assert {r.get("ray_node") for r in results["ray_tp2"]["runs"]["base"]["ranks"]} == {
        "127.0.0.2"}
    assert all("ray_node" not in r for r in results["tp2"]["runs"]["base"]["ranks"])
    assert [p["model"] for p in results["projection"]] == list(run.PROJECTED)
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_reader_alone_yields_the_whole_checkpoint_through_its_streamer():
    """bench/stream_read.py on CPU (on a GPU node it copies to the GPU instead
    of cloning): every reading yields every byte of the checkpoint, and the
    runai readings stream with the release the GPU bench names."""
    from lab import checkpoints, trees
    from tools.common import RUNAI_NEWEST

    model = checkpoints.ensure("llama4")
    result = trees.run_module("bench.stream_read", [str(model), "cpu"],
                              trees.tree_env("patched", f"runai-{RUNAI_NEWEST}-copy"),
                              "reading the tiny checkpoint")
    assert [(row["reader"], row["take"]) for row in result["rows"]] == [
        ("auto", "none"), ("auto", "copy"), ("runai", "none"), ("runai", "copy"),
        ("runai-views", "none"), ("runai-views", "copy")]
    size = trees.checkpoint_bytes(model)
    assert all(row["bytes_taken"] == [size, size] for row in result["rows"]), result["rows"]
    assert result["runai_version"] == RUNAI_NEWEST
    trees.check_streamer(f"runai-{RUNAI_NEWEST}-copy", result["runai_file"])
    # The GPU bench's page-cache readings: only the readers named, with the
    # strategy that bench/gpu.py sets, which this streamer must accept.
    from bench import gpu

    cached = trees.run_module("bench.stream_read", [str(model), "cpu", "runai"],
                              {**trees.tree_env("patched", f"runai-{RUNAI_NEWEST}-copy"),
                               "RUNAI_STREAMER_FS_STRATEGY": gpu.PAGE_CACHE_STRATEGY},
                              "reading the tiny checkpoint through the page cache")
    assert [(row["reader"], row["take"]) for row in cached["rows"]] == [
        ("runai", "none"), ("runai", "copy")]
    assert all(row["bytes_taken"] == [size, size] for row in cached["rows"]), cached["rows"]
    assert cached["runai_fs_strategy"] == gpu.PAGE_CACHE_STRATEGY


@pytest.mark.parametrize("executor", ["mp", "uni"])
def test_the_gpu_bench_times_the_load_inside_the_worker(tmp_path, executor):
    """bench/gpuload.py, the GPU bench's engine run, on CPU with the tiny Llama 4:
    the worker reports a load window under both of vLLM's executors (under
    `mp` the worker is a spawned process that imports this module twice)."""
    from lab import checkpoints, engine, trees
    from tools.common import RUNAI_NEWEST

    model = checkpoints.ensure("llama4")
    env = {**trees.tree_env("patched", f"runai-{RUNAI_NEWEST}-copy"),
           **engine.DEVICE_ENV["cpu"]}
    out = tmp_path / "result.json"
    subprocess.run([trees.PYTHON, "-m", "bench.gpuload", str(model), "runai_streamer",
                    "default", str(out), executor], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    window = result["window"]
    assert window["start"] <= window["end"] and window["torch_threads"] >= 1
    assert result["engine_args"]["distributed_executor_backend"] == executor
    trees.check_streamer(f"runai-{RUNAI_NEWEST}-copy", result["runai_file"])
