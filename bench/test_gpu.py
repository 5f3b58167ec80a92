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
