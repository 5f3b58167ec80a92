"""Load a checkpoint into a model in this process, through vLLM's own loader.

    python -m proof.loadcheck MODEL_DIR SCENARIO MEMORY_LIMIT OUT.json

Run once per tree (base or patched, chosen by PYTHONPATH; see harness.py).
It builds the model from its config with vLLM's model init, fills every
parameter with NaN, then loads weights through vLLM's loader for the
scenario and writes, per parameter, a digest of the loaded bytes, plus the
loader's metrics: streamed tensors alive at once (weak references to every
yielded tensor), peak RSS and load seconds.

The CPU platform repacks linear weights when the engine starts, so
parameters are compared here, right after `model.load_weights`, and not
through a running engine.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from lab.expectations import HELD_BYTES_JUDGED
from lab.model import build_model, digest
from lab.streams import Liveness, force_streamer_views
from tools.common import RUNAI_SIDE_VERSIONS

# name: load format. Which runai-model-streamer is imported is decided by
# the harness (sys.path); the memory limit comes from the command line.
SCENARIOS = {
    "auto": "safetensors",
    # A streamer buffer far smaller than the checkpoint: the streamer reuses
    # it, so tensors it yielded earlier now show later data.
    "runai-0.15.7-reuse": "runai_streamer",
    # runai 0.17.x's default: a private copy of every tensor.
    # runai 0.17.x with owned=False: views into reused buffers. vLLM 0.21
    # has no option for it (it calls stream_files without `owned`), so this
    # process changes the streamer's default; vLLM is untouched.
    **{f"runai-{version}-{mode}": "runai_streamer"
       for version in RUNAI_SIDE_VERSIONS for mode in ("copy", "views")},
}


def run(model_dir: str, scenario: str, memory_limit: int) -> dict:
    import torch
    from vllm.model_executor.model_loader import get_model_loader

    load_format = SCENARIOS[scenario]
    if scenario.endswith("-views"):
        force_streamer_views()
    extra = {"memory_limit": memory_limit} if load_format == "runai_streamer" else {}
    config, model = build_model(model_dir, load_format, extra)
    loader = get_model_loader(config.load_config)
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))

    # Observe the stream where the loader hands it to the model.
    probes = []
    original = model.load_weights

    def probed_load_weights(weights):
        # Weighing what the load holds walks every object after each step:
        # only where it is judged.
        probe = Liveness(lambda: weights, copy=False,
                         model=model if scenario in HELD_BYTES_JUDGED else None)
        probes.append(probe)
        return original(probe)

    model.load_weights = probed_load_weights
    start = time.perf_counter()
    loader.load_weights(model, config.model_config)
    load_s = time.perf_counter() - start

    params = {name: digest(p) for name, p in model.named_parameters()}
    unloaded = sorted(name for name, p in model.named_parameters()
                      if p.is_floating_point() and torch.isnan(p).any())
    return {
        "params": params,
        "unloaded": unloaded,
        "streamed_tensors": sum(p.total for p in probes),
        "peak_alive_tensors": max((p.peak_alive for p in probes), default=0),
        # Bytes of host tensors the load held of the stream (lab/streams.py),
        # and the steps where that was more than allowed.
        "peak_held_bytes": max((p.peak_held_bytes for p in probes), default=0),
        "overheld_steps": sum(len(p.overheld) for p in probes),
        "overheld": [line for p in probes for line in p.overheld][-1:],
        "streamed_bytes": sum(p.total_bytes for p in probes),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # The load alone: the time the probe spent weighing is left out.
        "load_s": round(load_s - sum(p.probe_s for p in probes), 3),
    }


def main() -> None:
    model_dir, scenario, memory_limit, out = sys.argv[1:5]
    result = run(model_dir, scenario, int(memory_limit))
    import vllm

    result["vllm_file"] = vllm.__file__
    import runai_model_streamer

    result["runai_file"] = runai_model_streamer.__file__
    with open(out, "w") as f:
        json.dump(result, f)
    os._exit(0)  # skip vLLM's distributed teardown: nothing to flush


if __name__ == "__main__":
    main()
