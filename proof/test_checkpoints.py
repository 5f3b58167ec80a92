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


def test_the_tiny_llama4_takes_an_image_through_its_own_processor():
    """`vllm serve MODEL` (the README's first command) keeps vLLM's default
    image limit, so the engine profiles Llama 4's vision tower with a dummy
    image before serving. That needs what a real checkpoint has: the
    processor's configuration, the image tokens at the config's ids, and
    vision widths whose forward pass fits together. transformers' own
    processor and model check all three on one image."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Llama4ForConditionalGeneration

    model_dir = checkpoints.ensure("llama4")
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Llama4ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16)
    config, tokenizer = model.config, processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<|patch|>", "<|image_start|>", "<|image_end|>"]) \
        == [config.image_token_index, config.boi_token_index, config.eoi_token_index]
    side = config.vision_config.image_size
    inputs = processor(text=f"{processor.fake_image_token} What is this?",
                       images=[Image.new("RGB", (side, side), "gray")], return_tensors="pt")
    patches = int((inputs["input_ids"] == config.image_token_index).sum())
    assert patches > 0
    with torch.no_grad():
        # Raises if the image's features do not fill its patch tokens.
        out = model(**inputs)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]
