"""The demo's servers fail with their own root cause, and leave nothing
running (injected: a `vllm serve` that dies at start, as one did on a GPU
node that lacked uvicorn). No engine starts."""

import time

import pytest

from lab import trees
from proof import demo
from proof.test_harness import tiny_safetensors
from tools.common import ForkError

DYING_SERVER = """#!/bin/sh
{worker}
echo "ModuleNotFoundError: No module named 'uvicorn'" >&2
exit 1
"""
# A worker in the server's process group that outlives the server.
WORKER = 'sleep 300 & echo $! > "{pid_file}"'



def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("leaves_a_worker", [False, True], ids=["alone", "with-worker"])
def test_a_server_that_dies_is_reported_with_its_root_cause_and_its_group_stopped(
        tmp_path, monkeypatch, leaves_a_worker):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(tiny_safetensors())
    fake = tmp_path / "python"
    worker = WORKER.format(pid_file=tmp_path / "worker.pid") if leaves_a_worker else ""
    fake.write_text(DYING_SERVER.format(worker=worker))
    fake.chmod(0o755)
    monkeypatch.setattr(trees, "PYTHON", str(fake))
    with pytest.raises(ForkError) as failed:
        demo.serve_and_ask(model, "auto", tmp_path / "serve.log")
    assert "No module named 'uvicorn'" in str(failed.value)
    assert "No such process" not in str(failed.value)
    if not leaves_a_worker:
        return
    worker = int((tmp_path / "worker.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker), "the dead server's worker was left running"


def ray_row(tree: str, scenario: str, overheld: list[int] | None, nodes: list[str],
            differing: list[list[str]] | None = None) -> dict:
    result = {"ranks": [{"rank": r, "ray_node": n} for r, n in enumerate(nodes)]}
    return {"model": "llama4 (engine)", "scenario": scenario, "tree": tree,
            "differing_per_rank": differing or [[], []], "differing_tensors": "0 / 0",
            "other_differences": [], "tokens_identical": True,
            "placement_problems": demo.harness.placement_problems(
                result, demo.harness.layout_of(scenario)),
            "overheld_per_rank": overheld,
            "overheld_steps": None if overheld is None else " / ".join(map(str, overheld))}


def test_ray_rows_are_judged_per_rank_and_by_where_they_ran():
    two = ["127.0.0.2", "127.0.0.3"]
    copy = "runai-0.17.0-copy-tp2-ray2nodes"
    served = {"identical": True}
    assert demo.verdict([ray_row("base", copy, [49, 49], two),
                         ray_row("patched", copy, [0, 0], two)], served) == []
    # Base must hold the copies on every rank; patched on none.
    assert demo.verdict([ray_row("base", copy, [49, 0], two)], served) != []
    assert demo.verdict([ray_row("patched", copy, [0, 3], two)], served) != []
    # Weighing that did not happen cannot show what base holds.
    assert demo.verdict([ray_row("base", copy, None, two)], served) != []
    # Two Ray nodes means two: both workers on one node is another layout.
    problems = demo.verdict([ray_row("patched", copy, [0, 0], ["127.0.0.2"] * 2)], served)
    assert problems and "distinct nodes" in problems[0]


def fake_engine_run(params: dict, nodes: list) -> dict:
    ranks = [{"kernels": "cpu", "params": dict(params), "ray_node": node} for node in nodes]
    return {"ranks": ranks, "tokens": [1, 2], "text": "x", "engine_run_s": 1.0,
            "reloads": [], "engine_args": {"load_format": "auto"}, "env": {}}


def test_the_forks_auto_runs_are_compared_with_bases_on_every_layout(monkeypatch):
    plan = demo.harness.engine_plan("cpu") + demo.harness.ray_plan()
    nodes = {"mp": [None, None], "ray1node": ["127.0.0.2"] * 2,
             "ray2nodes": ["127.0.0.2", "127.0.0.3"]}
    changed = {"w": "1"}

    def runs(checkpoint, plan, progress, keep=None):
        out = {}
        for model, tree, _, scenario in plan:
            layout = demo.harness.layout_of(scenario)
            # Base's auto load differs from the fork's in one parameter, in one layout.
            params = changed if (tree, scenario) == ("base", "auto-tp2-ray2nodes") else {"w": "0"}
            out[(model, tree, scenario)] = fake_engine_run(params, nodes[layout])
        return out

    monkeypatch.setattr(demo.harness, "engine_runs", runs)
    rows = demo.engine_rows(demo.Progress(len(plan)), plan)
    across = {r["scenario"]: r for r in rows if r["scenario"].endswith(" vs base")}
    assert set(across) == {"auto-tp2 vs base", "auto-tp2-ray1node vs base",
                           "auto-tp2-ray2nodes vs base"}
    assert all(r["tree"] == "patched" for r in across.values())
    problems = [p for p in demo.verdict(list(across.values()), {"identical": True})
                if "vs base" in p]
    assert len(problems) == 1 and "auto-tp2-ray2nodes vs base" in problems[0]
