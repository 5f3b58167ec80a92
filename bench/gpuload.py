"""Load a checkpoint into the real engine on one GPU, timing the load inside
the worker.

    python -m bench.gpuload MODEL_DIR LOAD_FORMAT MEMORY_LIMIT OUT.json EXECUTOR

MEMORY_LIMIT is the streamer's `memory_limit` in bytes, or `default` for
runai's own; EXECUTOR is vLLM's `distributed_executor_backend` (`mp` or
`uni`). The worker also records how many threads torch had for the load.
Named as vLLM's `worker_extension_cls`, this module is imported in the
worker before the model is loaded and wraps both loaders' `load_weights`,
recording when the load began and ended (wall clock), so
that bench/gpu.py, sampling the host memory of the whole process tree from
outside, can take its peak during the load.
"""

from __future__ import annotations

import json
import os
import sys
import time

from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
from vllm.model_executor.model_loader.runai_streamer_loader import RunaiModelStreamerLoader

_WINDOW: dict = {}


def _timed(load_weights):
    def load(self, model, model_config):
        import torch

        # The threads torch copies on in this worker: what vLLM's executor left it.
        _WINDOW["torch_threads"] = torch.get_num_threads()
        _WINDOW["start"] = time.time()
        try:
            return load_weights(self, model, model_config)
        finally:
            _WINDOW["end"] = time.time()

    load.timed = True
    return load


# Only in the copy of this module that vLLM imports as the worker extension.
# Run as the driver it is also `__main__`, and multiprocessing's spawn imports
# that again as `__mp_main__` in the engine's and the workers' processes: a
# copy patched there would record into its own window, which LoadWindow,
# imported as bench.gpuload, never reads.
if __name__ == "bench.gpuload":
    for _cls in (DefaultModelLoader, RunaiModelStreamerLoader):
        if not getattr(_cls.load_weights, "timed", False):
            _cls.load_weights = _timed(_cls.load_weights)


class LoadWindow:
    """Mixed into vLLM's worker class; called through collective_rpc."""

    def load_window(self) -> dict:
        if "end" not in _WINDOW:
            raise RuntimeError("no load timed: the model was not loaded by either loader")
        return dict(_WINDOW)


def engine_args(model_dir: str, load_format: str, memory_limit: str,
                executor: str = "mp") -> dict:
    extra = {} if memory_limit == "default" else {"memory_limit": int(memory_limit)}
    return {"model": model_dir, "load_format": load_format, "model_loader_extra_config": extra,
            "tensor_parallel_size": 1, "distributed_executor_backend": executor,
            "enforce_eager": True, "max_model_len": 256,
            "max_num_seqs": 1, "dtype": "bfloat16", "limit_mm_per_prompt": {"image": 0},
            "kv_cache_memory_bytes": 2 * 10**9, "gpu_memory_utilization": 0.5,
            "skip_mm_profiling": True, "worker_extension_cls": "bench.gpuload.LoadWindow"}


def main() -> None:
    model_dir, load_format, memory_limit, out, executor = sys.argv[1:6]
    from vllm import LLM

    args = engine_args(model_dir, load_format, memory_limit, executor)
    llm = LLM(**args)
    (window,) = llm.collective_rpc("load_window")
    import runai_model_streamer

    with open(out, "w") as f:
        json.dump({"window": window, "engine_args": args,
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                   "runai_file": runai_model_streamer.__file__}, f)
    os._exit(0)


if __name__ == "__main__":
    main()
