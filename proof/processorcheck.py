"""Run a checkpoint's multimodal processor the way the engine does when it
profiles: vLLM's dummy inputs for every modality the prompt limits leave on.

    python -m proof.processorcheck MODEL_DIR OUT.json

The engine does this before it loads any weight, with the same engine
arguments as proof.generate; a tiny config that lacks a field the processor
reads fails here as it would there. Writes, per modality, the dummy prompt's
length, or the error.
"""

from __future__ import annotations

import json
import sys
import traceback


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    from vllm.engine.arg_utils import EngineArgs
    from vllm.multimodal import MULTIMODAL_REGISTRY

    from lab.engine import ENGINE_ARGS

    args = EngineArgs(model=model_dir, trust_remote_code=True, dtype=ENGINE_ARGS["dtype"],
                      max_model_len=ENGINE_ARGS["max_model_len"], enforce_eager=True,
                      limit_mm_per_prompt=ENGINE_ARGS["limit_mm_per_prompt"])
    model_config = args.create_model_config()
    info = MULTIMODAL_REGISTRY.get_processing_info(model_config)
    limits = model_config.get_multimodal_config().limit_per_prompt
    results = {}
    for modality in info.get_supported_mm_limits():
        if modality in limits and limits[modality].count == 0:
            continue
        try:
            inputs = MULTIMODAL_REGISTRY.get_dummy_mm_inputs(model_config, {modality: 1})
            results[modality] = {"prompt_tokens": len(inputs["prompt_token_ids"])}
        except Exception as e:  # the point is to report it
            results[modality] = {"error": f"{type(e).__name__}: {e}",
                                 "traceback": traceback.format_exc()[-2000:]}
    with open(out, "w") as f:
        json.dump({"architecture": model_config.architecture, "modalities": results}, f)


if __name__ == "__main__":
    main()
