"""The Llama 4 fix end to end: the real engine, tensor parallel 2, weights
streamed by runai-model-streamer 0.15.7 in distributed mode (buffers reused
between tensors). Greedy tokens must equal those of `--load-format auto`."""

import pytest

from proof import checkpoints, harness

pytestmark = pytest.mark.integration


def test_distributed_streaming_gives_auto_tokens_on_patched_only():
    model = checkpoints.ensure("llama4")
    reference = harness.generate("patched", model, "auto")["tokens"]
    patched = harness.generate("patched", model, "runai-dist-tp2")["tokens"]
    base = harness.generate("base", model, "runai-dist-tp2")["tokens"]

    assert all(len(t) == 12 for t in reference)
    assert patched == reference
    assert base != reference
