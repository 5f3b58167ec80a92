"""Start the real vLLM engine on CPU, read back what every rank loaded, and
generate greedily.

    python -m proof.generate MODEL_DIR LOADER OUT.json

Every run uses the same engine settings (lab/engine.py): tensor
parallel 2 on the mp executor, bfloat16, one core per worker. Only the loader
(LOADERS) differs between a run and its reference, so the two can be compared
exactly; a different parallel layout rounds differently and greedy tokens of a
random tiny model flip on near-ties.

Loaders: `auto` (the reference) and `runai-0.15.7-dist`: runai-model-streamer
0.15.7 in distributed mode, over gloo, with the streamer's buffers made small
enough that a tiny model reuses them. Run once per tree (see harness.py).
Writes, per rank, a digest of every parameter right after loading (see
proof/rankdigest.py), the generated token ids, and the settings it ran with.
"""

from __future__ import annotations

import json
import os
import sys

from lab.engine import ENGINE_ENV, MAX_TOKENS, PROMPTS, engine_args, recorded_env


def main() -> None:
    model_dir, loader, out = sys.argv[1:4]
    os.environ.update(ENGINE_ENV)
    from vllm import LLM, SamplingParams

    args = engine_args(model_dir, loader)
    llm = LLM(**args)
    ranks = sorted(llm.collective_rpc("loaded_param_digests"), key=lambda r: r["rank"])
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    import vllm

    result = {
        "engine_args": args,
        "env": recorded_env(),
        "vllm_file": vllm.__file__,
        "ranks": ranks,
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "text": [o.outputs[0].text for o in outputs],
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
