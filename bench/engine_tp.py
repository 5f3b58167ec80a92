"""Load a checkpoint into the real engine at tensor parallel 2 and report
every worker's host memory during the load.

    python -m bench.engine_tp MODEL_DIR MEMORY_LIMIT [--layout=L] OUT.json

runai-model-streamer 0.17.0 in its default (copying) mode, not distributed:
each worker streams the checkpoint itself and keeps its shard, which is where
a `load_weights` that holds the whole iterator costs the whole checkpoint
once per worker. Engine settings are those of the proofs (lab/engine.py);
with --layout=ray1node or ray2nodes the workers are Ray actors on a loopback
Ray cluster this process starts and stops (lab/raycluster.py), the bug
report's setting.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    model_dir, memory_limit, out = sys.argv[1], sys.argv[2], sys.argv[-1]
    layout = next((a.split("=", 1)[1] for a in sys.argv[3:-1] if a.startswith("--layout=")),
                  "mp")
    from lab import cpushm
    from lab.engine import ENGINE_ARGS, ENGINE_ENV, executor_args
    from lab.raycluster import cluster_for

    args = {**ENGINE_ARGS, **executor_args(layout, "cpu")}
    os.environ.update(ENGINE_ENV)
    cpushm.sweep()  # a killed engine's segment must not block this one's port
    with cluster_for(layout):
        load(model_dir, int(memory_limit), out, args, layout)


def load(model_dir: str, memory_limit: int, out: str, engine_args: dict, layout: str) -> None:
    from vllm import LLM

    args = {**engine_args, "model": model_dir, "load_format": "runai_streamer",
            "model_loader_extra_config": {"memory_limit": memory_limit},
            "worker_extension_cls": "bench.workermem.LoadMemory"}
    llm = LLM(**args)
    ranks = sorted(llm.collective_rpc("load_memory"), key=lambda r: r["rank"])
    import runai_model_streamer

    with open(out, "w") as f:
        json.dump({"ranks": ranks, "engine_args": args, "layout": layout,
                   "runai_file": runai_model_streamer.__file__}, f)
    if layout != "mp":
        # The engine and its workers stop before the cluster under them goes.
        llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
