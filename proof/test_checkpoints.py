"""The tiny checkpoints are faithful where the engine reads them before any
weight: the multimodal processor, run on the dummy inputs the engine profiles
with. On a GPU the engine profiles Nemotron Nano VL's vision tower with dummy
video; the processor then reads fields of the config that a CPU load never
does."""

import pytest

from lab import checkpoints
from proof import harness

pytestmark = pytest.mark.integration


# Both trees: the demo runs each of them on these checkpoints. The series
# changes no processor, so the two must agree.
@pytest.mark.parametrize("tree", ["patched", "base"])
@pytest.mark.parametrize("kind, modalities", [("nemotron_vl", {"video"}), ("llama4", set())])
def test_the_processor_builds_the_engines_profiling_inputs(kind, modalities, tree):
    result = harness.processor_check(tree, checkpoints.ensure(kind))
    built = result["modalities"]
    errors = {m: r["error"] for m, r in built.items() if "error" in r}
    assert errors == {}, [built[m]["traceback"] for m in errors]
    # Images are off in every engine run (proof.generate); what is left is profiled.
    assert set(built) == modalities
    assert all(r["prompt_tokens"] > 0 for r in built.values())
