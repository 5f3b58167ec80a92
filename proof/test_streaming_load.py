"""Each fix, shown with real parts: vLLM's own model classes and loaders on
CPU, the real runai-model-streamer (0.15.7, 0.17.0 and 0.17.1), tiny safetensors
checkpoints generated offline. Every check runs on the base tree and on the
patched tree, and each must show what lab/expectations.py expects of it
(the table `make demo` judges its rows with)."""

import pytest

from lab import checkpoints, expectations
from proof import harness

pytestmark = pytest.mark.integration

STREAMING = [(model, scenario) for model, scenario in expectations.EXPECTED
             if scenario in expectations.LOAD_SCENARIOS and scenario != "auto"]


@pytest.fixture(scope="module")
def results():
    """load_check results, computed once per (model, tree, scenario)."""
    cache = {}

    def get(kind, tree, scenario):
        key = (kind, tree, scenario)
        if key not in cache:
            cache[key] = harness.load_check(tree, checkpoints.ensure(kind), scenario)
        return cache[key]

    return get


def test_reference_loads_every_parameter(results):
    """The comparisons below mean something only if the reference load
    writes every parameter (they all start as NaN)."""
    assert results("llama4", "patched", "auto")["unloaded"] == []
    # Both trees' references load the same bytes, so either may stand for the other.
    for kind in ("llama4", "nemotron_vl"):
        assert harness.differing(results(kind, "base", "auto"),
                                 results(kind, "patched", "auto")) == []
    unloaded = results("nemotron_vl", "patched", "auto")["unloaded"]
    # vLLM's RADIO keeps layer-scale parameters that its loader never fills
    # (upstream behaviour, same on both trees); nothing else may be missing.
    assert all(name.rsplit(".", 1)[-1] in ("ls1", "ls2") for name in unloaded), unloaded


@pytest.mark.parametrize("tree", ["base", "patched"])
@pytest.mark.parametrize(("kind", "scenario"), STREAMING)
def test_a_streaming_load_shows_what_the_table_expects(results, kind, scenario, tree):
    """Each tree against its own `auto` load: only the loader differs. A
    streamer memory limit far below the checkpoint size makes 0.15.7 (and
    0.17.x with owned=False) reuse its buffer; 0.17.x by default copies."""
    result = results(kind, tree, scenario)
    corrupted = harness.differing(result, results(kind, tree, "auto"))
    assert expectations.problems(kind, scenario, tree, [len(corrupted)],
                                 overheld_steps=result["overheld_steps"]) == [], (
        corrupted, result["overheld"])
    if kind == "nemotron_vl" and expectations.expected(kind, scenario, tree) == "corrupted":
        # The Nano VL bug is in its multimodal half.
        assert [n for n in corrupted if n.startswith(("vision_model.", "mlp1."))], corrupted


def test_repeated_reload_keeps_mamba_weights_on_patched_only():
    """The real MambaMixer2 through vLLM's layerwise reload, 10 times."""
    model = checkpoints.ensure("nemotron_h")
    patched = harness.reload_check("patched", model, reloads=10)
    base = harness.reload_check("base", model, reloads=10)

    assert patched["mamba_mixers"] == base["mamba_mixers"] == 2
    for step in patched["history"]:
        assert step["alias_kept"], step
    for tree, result in (("patched", patched), ("base", base)):
        most = max(len(step["differing"]) for step in result["history"])
        assert expectations.problems("nemotron_h", "layerwise-reload-x10", tree, [most]) == []
    first = base["history"][0]["differing"]
    assert first and all(name.endswith("mixer.conv1d.weight") for name in first), first
