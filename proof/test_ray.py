"""The Llama 4 fix under vLLM's Ray executor, the setting of the original bug
report (upstream #44430: "retains the full checkpoint in host RAM on every TP
worker under the Ray executor"), and the path past one machine: tensor
parallel 2 with both workers on one Ray node, and with one worker on each of
two Ray nodes (lab/raycluster.py: a loopback cluster this machine runs).

Per layout, the runs of `make demo` (proof/harness.ray_plan): runai 0.15.7 in
distributed mode (reused buffers) and runai 0.17.0 (private copies), each
against `auto` under the same executor and settings, on base and patched.
Evidence: what every rank loaded (exact digests), what each rank's
load_weights held of the copies (weighed in the worker), where each rank ran,
and greedy tokens once the reference repeats itself. Judged by the table
(lab/expectations.py) as `make demo` judges them."""

import pytest

from lab import checkpoints, expectations
from lab.raycluster import marked_processes
from proof import harness

pytestmark = pytest.mark.integration

MODEL = "llama4 (engine)"
PLAN = harness.ray_plan()


@pytest.fixture(scope="module")
def runs():
    """The engine runs, each started once, each with its own Ray cluster."""
    runs = harness.engine_runs(checkpoints.ensure, PLAN, device="cpu")
    return {(tree, scenario): result for (_, tree, scenario), result in runs.items()}


def reference(runs, tree: str, scenario: str) -> dict:
    layout = harness.layout_of(scenario)
    return runs[(tree, harness.reference_key("llama4", tree, "cpu", layout)[2])]


@pytest.mark.parametrize(("tree", "scenario"), [(t, s) for _, t, _, s in PLAN])
def test_runs_differ_from_their_reference_only_in_the_loader(runs, tree, scenario):
    result = runs[(tree, scenario)]
    assert harness.differences_besides_loader(result, reference(runs, tree, scenario)) == []
    assert result["engine_args"]["distributed_executor_backend"] == "ray"
    assert result["layout"] == harness.layout_of(scenario)


@pytest.mark.parametrize(("tree", "scenario"), [(t, s) for _, t, _, s in PLAN])
def test_every_rank_runs_where_the_layout_puts_it(runs, tree, scenario):
    assert harness.placement_problems(runs[(tree, scenario)], harness.layout_of(scenario)) == []


def stable(runs, layout: str) -> bool:
    first = runs[("patched", f"auto-tp2-{layout}")]
    return first["tokens"] == runs[("patched", f"auto-tp2-{layout} (repeat)")]["tokens"]


@pytest.mark.parametrize(("tree", "scenario"), [(t, s) for _, t, _, s in PLAN])
def test_every_rank_loads_and_holds_what_the_table_expects(runs, tree, scenario):
    result, ref = runs[(tree, scenario)], reference(runs, tree, scenario)
    per_rank = harness.differing_per_rank(result, ref)
    tokens = (result["tokens"] == ref["tokens"]
              if stable(runs, harness.layout_of(scenario)) else None)
    weighed = [rank["overheld_steps"] for rank in result["ranks"]
               if "overheld_steps" in rank] or None
    assert expectations.problems(MODEL, scenario, tree, [len(n) for n in per_rank],
                                 tokens, weighed) == [], (per_rank, weighed)


def test_no_ray_process_outlives_the_runs(runs):
    assert runs
    assert marked_processes(None) == []


def test_an_engine_that_fails_under_ray_says_why_and_leaves_no_ray_process(tmp_path):
    """Injected: a checkpoint whose weights file is cut short, so the engine
    fails in its Ray workers, after the cluster has started."""
    import shutil

    from tools.common import ForkError

    model = tmp_path / "llama4-cut"
    shutil.copytree(checkpoints.ensure("llama4"), model)
    weights = sorted(model.glob("*.safetensors"))[0]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ForkError) as failed:
        harness.generate("patched", model, "auto", layout="ray1node")
    assert "root cause" in str(failed.value)
    assert marked_processes(None) == []
