"""docs/benchmarks-gpu.md is generated from the committed GPU benchmark run;
the sampler that measures the engine's process tree counts its processes."""

import json
import os
import subprocess
import sys
import time

from bench import gpu


def test_the_page_is_generated_from_the_committed_results():
    results = json.loads(gpu.DOCS_JSON.read_text())
    assert gpu.DOCS.read_text() == gpu.render(results)
    # Every run of the current plan. (A page from another series is `make
    # check`'s warning, not a failure: only a GPU node can remake it.)
    assert set(results["runs"]) == {label for label, *_ in gpu.RUNS}


def test_the_sampler_sums_every_process_of_a_session():
    # A child in its own session that allocates 200 MiB, and a grandchild
    # that allocates 100 MiB: the session's anon memory counts both.
    code = ("import subprocess, sys, time; a = bytearray(200 << 20); "
            "p = subprocess.Popen([sys.executable, '-c', "
            "'import time; b = bytearray(100 << 20); time.sleep(30)']); "
            "time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        for _ in range(100):  # until both have allocated, at most 10 s
            if gpu.tree_anon_bytes(proc.pid) >= 290 << 20:
                break
            time.sleep(0.1)
        assert gpu.tree_anon_bytes(proc.pid) >= 290 << 20
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


HANGING_LOAD = """#!/bin/sh
# An engine core in the driver's session, and a driver that never finishes.
sleep 300 &
echo $! > "{pid_file}"
sleep 300
"""


def test_a_load_past_its_limit_is_stopped_with_its_engine(tmp_path, monkeypatch):
    import pytest

    from lab import trees
    from tools.common import ForkError

    fake = tmp_path / "python"
    fake.write_text(HANGING_LOAD.format(pid_file=tmp_path / "engine.pid"))
    fake.chmod(0o755)
    monkeypatch.setattr(trees, "PYTHON", str(fake))
    monkeypatch.setattr(gpu, "LOAD_TIMEOUT_S", 2)
    monkeypatch.setattr(gpu, "DRAIN_TIMEOUT_S", 5)
    with pytest.raises(ForkError, match=r"did not finish in 2 s and was stopped"):
        gpu.measured_run("patched", tmp_path, "auto", "default", "1")
    engine = int((tmp_path / "engine.pid").read_text())
    assert not os.path.exists(f"/proc/{engine}") or open(
        f"/proc/{engine}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", \
        "the engine of a load that timed out was left running"


def test_the_measured_runs_load_as_a_worker_of_a_multi_gpu_node(tmp_path, monkeypatch):
    """vLLM gives each worker one torch thread only under its multiprocess
    executor (tensor parallel 2 and up); at tensor parallel 1 its default
    one-process executor keeps every CPU thread, and strided copies look
    fast. The measured rows must use the former; the latter only as extras."""
    import pytest

    from lab import trees
    from tools.common import ForkError

    for label, _tree, _fmt, _limit, forced, executor, _cached in gpu.RUNS:
        if "(extra)" not in label:
            assert executor == "mp" and not forced, label
    assert {executor for *_, executor, _cached in gpu.RUNS} == {"mp", "uni"}
    # The executor reaches the engine's command line.
    argv = tmp_path / "argv"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{argv}"\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setattr(trees, "PYTHON", str(fake))
    with pytest.raises(ForkError, match="exit 3"):
        gpu.measured_run("patched", tmp_path, "auto", "default", None)
    assert argv.read_text().split()[-1] == "mp"


def test_the_page_shows_each_reader_alone_beside_the_loads():
    runs = {label: {"load_s": 2.0, "gb_per_s": 4.3, "torch_threads": 1,
                    "peak_tree_anon": 3 * gpu.GIB} for label, *_ in gpu.RUNS}
    results = {
        "machine": {"gpu": {"name": "H200"}, "cpu": {"model": "x"}, "torch": "2.11.0",
                    "python": "3.12", "vllm_version": "0.21.0"},
        "cpu_count": 16, "scout_layers": 1, "checkpoint_bytes": 8 * gpu.GIB,
        "largest_tensor_bytes": gpu.GIB, "bounded_limit_bytes": gpu.GIB,
        "host_to_device": {"bytes": gpu.GIB, "pageable_gb_per_s": 9.0,
                           "pinned_gb_per_s": 55.0},
        "runs": runs, "ratios": {key: 1.0 for key in (
            "fork_over_without_last_speed_auto", "fork_over_without_last_speed_runai",
            "fork_default_over_bounded_memory", "base_over_fork_memory_default",
            "base_over_fork_memory_bounded")}}
    assert "reader alone" not in gpu.render(results)
    results["readers"] = {"device": "cuda", "runai_version": "0.17.1", "torch_threads": 16,
                          "rows": [{"reader": "runai", "take": "copy", "seconds": 5.5,
                                    "readings_s": [5.5, 6.1], "gb_per_s": 1.56},
                                   {"reader": "auto", "take": "none", "seconds": 0.003,
                                    "readings_s": [18.7, 0.003], "gb_per_s": 3056.06}]}
    page = gpu.render(results)
    assert "runai-model-streamer 0.17.1" in page
    assert "| runai | each tensor copied to cuda | 5.50 s (5.50, 6.10) | 1.56 GB/s |" in page
    # auto's memory map read nothing when its tensors were let go: no rate.
    assert "3056" not in page
    assert ("| auto | each tensor taken and let go | 0.00 s (18.70, 0.00) | "
            "none: a memory map") in page


def test_page_cache_runs_tell_runai_to_read_buffered(tmp_path, monkeypatch):
    """runai 0.17 reads with O_DIRECT unless told otherwise: the page-cache
    rows must reach the engine with a buffered strategy, and the others
    with runai's default even where the caller's environment sets one."""
    import pytest

    from lab import trees
    from tools.common import ForkError

    seen = tmp_path / "strategy"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "${{RUNAI_STREAMER_FS_STRATEGY-unset}}" > "{seen}"\n'
                    "exit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(trees, "PYTHON", str(fake))
    monkeypatch.setenv("RUNAI_STREAMER_FS_STRATEGY", "sync_buffered")
    cached = [run for run in gpu.RUNS if run[-1]]
    assert {tree for _, tree, *_ in cached} == {"patched", "without-last"}
    assert all(fmt == "runai_streamer" for _, _, fmt, *_ in cached)
    for page_cache, expected in ((True, gpu.PAGE_CACHE_STRATEGY), (False, "unset")):
        with pytest.raises(ForkError, match="exit 3"):
            gpu.measured_run("patched", tmp_path, "runai_streamer", "default", None, "mp",
                             page_cache)
        assert seen.read_text().strip() == expected
    assert "buffered" in gpu.PAGE_CACHE_STRATEGY and "direct" not in gpu.PAGE_CACHE_STRATEGY
