"""One measured load, in this process, through vLLM's own loader.

    python -m bench.measure MODEL_DIR LOAD_FORMAT MEMORY_LIMIT [--clone-every-tensor] OUT.json

Run once per tree and configuration (see bench/run.py). --clone-every-tensor
emulates the peer design that later upstream releases chose: the runai
weights iterator yields a clone of every tensor, so any model is safe from
a reused buffer, at the price of one more copy of every tensor. It wraps
the iterator in this process only; vLLM's files are untouched. The model is built
first; then a thread samples the process's anonymous memory (RssAnon in
/proc/self/status) every few milliseconds while `load_weights` runs. What
the loader adds over its start is the number that matters: the model's own
parameters are written (made resident) before it starts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

SAMPLE_EVERY_S = 0.005


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_anon_bytes() -> int:
    return status_bytes("RssAnon")


def reset_peak_rss() -> None:
    """Start the kernel's high-water mark of this process's RSS (VmHWM) anew."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Sampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_anon_bytes()))
            time.sleep(SAMPLE_EVERY_S)


def measured_load(load, model) -> dict:
    """Run load() while sampling this process's anonymous memory."""
    import torch

    # Fresh parameters are not resident until first written: touch them all
    # now, so that what grows during the load is what the loader holds.
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    sampler = Sampler()
    start_anon = rss_anon_bytes()
    # The sampler draws the curve; the kernel's high-water mark is the peak
    # however short it was (file pages included, so it bounds anon from above).
    reset_peak_rss()
    start_rss = status_bytes("VmRSS")
    sampler.start()
    start = time.perf_counter()
    load()
    load_s = time.perf_counter() - start
    peak_rss = status_bytes("VmHWM")
    sampler.stop.set()
    sampler.join()
    samples = sampler.samples + [(time.perf_counter() - sampler.t0, rss_anon_bytes())]
    peak = max(a for _, a in samples)
    return {"load_s": load_s, "start_anon": start_anon, "peak_anon_over_start": peak - start_anon,
            "peak_rss_over_start": peak_rss - start_rss,
            "samples": [(round(t, 4), a - start_anon) for t, a in samples]}


def clone_every_tensor() -> None:
    """The peer design: every tensor the runai iterator yields is a clone."""
    from vllm.model_executor.model_loader import runai_streamer_loader

    iterator = runai_streamer_loader.runai_safetensors_weights_iterator

    def cloning_iterator(*args, **kwargs):
        for name, tensor in iterator(*args, **kwargs):
            yield name, tensor.clone()

    runai_streamer_loader.runai_safetensors_weights_iterator = cloning_iterator


def main() -> None:
    args = sys.argv[1:]
    peer = "--clone-every-tensor" in args
    model_dir, load_format, memory_limit, out = [a for a in args if a != "--clone-every-tensor"]
    if peer:
        clone_every_tensor()

    from lab.model import build_model

    extra = {"memory_limit": int(memory_limit)} if load_format == "runai_streamer" else {}
    # bfloat16, as the checkpoint and real deployments are (vLLM's CPU default
    # would double every parameter to float32).
    config, model = build_model(model_dir, load_format, extra, dtype="bfloat16")
    from vllm.model_executor.model_loader import get_model_loader

    loader = get_model_loader(config.load_config)
    result = measured_load(lambda: loader.load_weights(model, config.model_config), model)
    with open(out, "w") as f:
        json.dump(result, f)
    os._exit(0)

if __name__ == "__main__":
    main()
