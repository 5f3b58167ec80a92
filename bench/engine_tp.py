"""Load a checkpoint into the real engine at tensor parallel 2 and report
every worker's host memory during the load.

    python -m bench.engine_tp MODEL_DIR MEMORY_LIMIT OUT.json

runai-model-streamer 0.17.0 in its default (copying) mode, not distributed:
each worker streams the checkpoint itself and keeps its shard, which is where
a `load_weights` that holds the whole iterator costs the whole checkpoint
once per worker. Engine settings are those of the proofs (lab/engine.py).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    model_dir, memory_limit, out = sys.argv[1:4]
    from lab.engine import ENGINE_ARGS, ENGINE_ENV

    os.environ.update(ENGINE_ENV)
    from vllm import LLM

    args = {**ENGINE_ARGS, "model": model_dir, "load_format": "runai_streamer",
            "model_loader_extra_config": {"memory_limit": int(memory_limit)},
            "worker_extension_cls": "bench.workermem.LoadMemory"}
    llm = LLM(**args)
    ranks = sorted(llm.collective_rpc("load_memory"), key=lambda r: r["rank"])
    import runai_model_streamer

    with open(out, "w") as f:
        json.dump({"ranks": ranks, "engine_args": args,
                   "runai_file": runai_model_streamer.__file__}, f)


if __name__ == "__main__":
    main()
