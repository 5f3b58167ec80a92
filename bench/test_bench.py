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
