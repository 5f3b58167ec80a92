"""What every engine worker loaded, read from inside the worker.

Named as vLLM's `worker_extension_cls` (see proof/generate.py), this module
is imported in each worker process before the model is loaded. Importing it
wraps the loader's `process_weights_after_loading` so that a digest of every
parameter is taken right after `load_weights` returns: on CPU that step
repacks linear weights and empties the originals, so afterwards the loaded
bytes are gone. The engine then asks every rank for its digests with
`LLM.collective_rpc("loaded_param_digests")`.

Digests are of the exact bytes (proof.loadcheck.digest): two runs compare
equal only if every rank loaded bit-identical parameters, whatever the CPU
rounds differently.

With LAB_LIVENESS=1 (lab/engine.LIVENESS_ENV) each worker also
weighs, after each step of the model's `load_weights`, the host tensors of
the stream it still holds (lab/streams.Liveness), as proof/loadcheck.py does
in one process; and each rank says which Ray node it ran on.
"""

from __future__ import annotations

import os
import sys

from vllm.model_executor.model_loader import base_loader

from lab.model import digest
from lab.streams import Liveness, force_streamer_views

_LOADED: dict[str, str] = {}
_PROBES: list[Liveness] = []
_process_weights_after_loading = base_loader.process_weights_after_loading
_initialize_model = base_loader.initialize_model


def _digest_then_process(model, model_config, target_device):
    _LOADED.clear()
    _LOADED.update({name: digest(p) for name, p in model.named_parameters()})
    return _process_weights_after_loading(model, model_config, target_device)


def _initialize_probed_model(*args, **kwargs):
    """The model the loader builds, its load_weights watched by Liveness."""
    model = _initialize_model(*args, **kwargs)
    original = model.load_weights

    def probed_load_weights(weights):
        probe = Liveness(lambda: weights, copy=False, model=model)
        _PROBES.append(probe)
        return original(probe)

    model.load_weights = probed_load_weights
    return model


# Only once per process, even if the module is imported again.
if base_loader.process_weights_after_loading is _process_weights_after_loading:
    base_loader.process_weights_after_loading = _digest_then_process
    if os.environ.get("LAB_LIVENESS") == "1":
        base_loader.initialize_model = _initialize_probed_model
    # Part of the loader under test (lab/engine.LOADER_ENV), in every worker.
    if os.environ.get("LAB_STREAMER_VIEWS") == "1":
        force_streamer_views()


def kernel_library() -> str:
    """File name of the vLLM CPU kernel build mapped into this process."""
    with open("/proc/self/maps") as maps:
        names = {line.rsplit("/", 1)[-1].strip() for line in maps if "/vllm/_C" in line}
    return ",".join(sorted(names)) or "none"


class LoadedParamDigests:
    """Mixed into vLLM's worker class; called through collective_rpc."""

    def loaded_param_digests(self) -> dict:
        from vllm.distributed import get_tensor_model_parallel_rank

        if not _LOADED:
            raise RuntimeError("no digests: the model was not loaded through BaseModelLoader")
        found = {"rank": get_tensor_model_parallel_rank(), "kernels": kernel_library(),
                 "params": dict(_LOADED), "pid": os.getpid()}
        if _PROBES:
            found.update({
                "peak_held_bytes": max(p.peak_held_bytes for p in _PROBES),
                "overheld_steps": sum(len(p.overheld) for p in _PROBES),
                "streamed_bytes": sum(p.total_bytes for p in _PROBES)})
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            found["ray_node"] = ray.util.get_node_ip_address()
        return found

    def param_digests_now(self) -> dict:
        """Every parameter as it is now (after reloads), and whether each
        Mamba2 layer's conv weights still share storage with its conv1d
        weight: the alias that layerwise reload must not break. Only on
        devices that keep weights as loaded (GPUs)."""
        from vllm.distributed import get_tensor_model_parallel_rank
        from vllm.model_executor.layers.mamba.mamba_mixer2 import MambaMixer2

        model = self.model_runner.get_model()
        mixers = [m for m in model.modules() if isinstance(m, MambaMixer2)]
        kept = all(m.conv_weights.untyped_storage().data_ptr()
                   == m.conv1d.weight.untyped_storage().data_ptr() for m in mixers)
        return {"rank": get_tensor_model_parallel_rank(), "mamba_alias_kept": kept,
                "params": {name: digest(p) for name, p in model.named_parameters()}}
