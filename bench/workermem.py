"""Host memory of every engine worker while it loads, read inside the worker.

Named as vLLM's `worker_extension_cls` by bench/engine_tp.py, this module is
imported in each tensor-parallel worker before the model is loaded. It wraps
the runai streamer loader's `load_weights`: the worker's (sharded)
parameters are written first, so that they are resident, then a thread
samples the worker's anonymous memory while the loader runs, as
bench/measure.py does for one process. `collective_rpc("load_memory")`
returns each worker's numbers.
"""

from __future__ import annotations

import os
import sys

from vllm.model_executor.model_loader.runai_streamer_loader import RunaiModelStreamerLoader

from bench.measure import measured_load

_MEASURED: dict = {}
_load_weights = RunaiModelStreamerLoader.load_weights


def _measured_load_weights(self, model, model_config) -> None:
    result = measured_load(lambda: _load_weights(self, model, model_config), model)
    _MEASURED.update({k: v for k, v in result.items() if k != "samples"})


if RunaiModelStreamerLoader.load_weights is _load_weights:
    RunaiModelStreamerLoader.load_weights = _measured_load_weights


class LoadMemory:
    """Mixed into vLLM's worker class; called through collective_rpc."""

    def load_memory(self) -> dict:
        from vllm.distributed import get_tensor_model_parallel_rank

        if not _MEASURED:
            raise RuntimeError("nothing measured: the model was not loaded by the runai loader")
        found = {"rank": get_tensor_model_parallel_rank(), "pid": os.getpid(), **_MEASURED}
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            found["ray_node"] = ray.util.get_node_ip_address()
        return found
