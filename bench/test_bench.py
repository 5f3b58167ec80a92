"""`make bench` works end to end; on the tiny checkpoints, so it is quick.
Nothing here depends on wall-clock time: the numbers are the benchmark's
business, not the tests'."""

import json
import subprocess
import sys

import pytest

from tools.common import ROOT

pytestmark = pytest.mark.integration


def test_bench_runs_on_tiny_size(tmp_path):
    subprocess.run([sys.executable, "-m", "bench.run", "--size", "tiny", "--out",
                    str(tmp_path), "--no-docs"], cwd=ROOT, check=True)

    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("base_over_patched_peak_anon", "patched_peak_anon_over_floor",
                "patched_over_base_load_time", "alias_check_reload_time_ratio"):
        assert results[key] > 0, key
    assert set(results["runs"]) == {"base/runai_streamer", "patched/runai_streamer",
                                    "patched/auto"}
    assert all(run["samples"] for runs in results["runs"].values() for run in runs)
    assert (tmp_path / "memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
