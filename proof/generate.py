"""Start the real vLLM engine on CPU and generate greedily.

    python -m proof.generate MODEL_DIR SCENARIO OUT.json

Scenarios: `auto` (the reference) and `runai-dist-tp2`: runai-model-streamer
0.15.7 in distributed mode, tensor parallel 2 over gloo, with the streamer's
buffers made small enough that a tiny model reuses them. Run once per tree
(see harness.py). Writes the generated token ids.
"""

from __future__ import annotations

import json
import os
import sys

PROMPTS = ["The capital of France is", "Streaming loaders reuse"]


def engine_args(model_dir: str, scenario: str) -> dict:
    args = dict(model=model_dir, enforce_eager=True, max_model_len=256, max_num_seqs=4,
                dtype="bfloat16", limit_mm_per_prompt={"image": 0})
    if scenario == "runai-dist-tp2":
        args.update(load_format="runai_streamer", tensor_parallel_size=2,
                    distributed_executor_backend="mp",
                    model_loader_extra_config={"distributed": True})
    elif scenario != "auto":
        raise SystemExit(f"unknown scenario {scenario}")
    return args


def main() -> None:
    model_dir, scenario, out = sys.argv[1:4]
    if scenario == "runai-dist-tp2":
        # gloo on CPU needs the streamer's opt-in; buffers of 0 bytes minimum
        # let the streamer size them to this tiny model, so they are reused.
        os.environ["RUNAI_STREAMER_DIST"] = "1"
        os.environ["RUNAI_STREAMER_DIST_BUFFER_MIN_BYTESIZE"] = "0"
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0|1"
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_args(model_dir, scenario))
    params = SamplingParams(temperature=0.0, max_tokens=12)
    outputs = llm.generate(PROMPTS, params)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    with open(out, "w") as f:
        json.dump({"tokens": tokens, "text": [o.outputs[0].text for o in outputs]}, f)


if __name__ == "__main__":
    main()
