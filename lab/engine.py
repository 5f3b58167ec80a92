"""The engine settings every proof and bench engine run shares, and the loaders
that are all a run may change against its reference (see proof/generate.py)."""

from __future__ import annotations

import os

PROMPTS = ["The capital of France is", "Streaming loaders reuse"]
MAX_TOKENS = 12
TENSOR_PARALLEL = 2

# Shared by every engine run, reference and subject alike.
ENGINE_ARGS = dict(enforce_eager=True, max_model_len=256, max_num_seqs=4, dtype="bfloat16",
                   limit_mm_per_prompt={"image": 0}, tensor_parallel_size=TENSOR_PARALLEL,
                   distributed_executor_backend="mp",
                   # A fixed KV cache: without it, vLLM 0.21's CPU worker refuses
                   # to start unless 92 % of the NUMA node's memory is free, so
                   # a run would depend on what else the machine is doing.
                   kv_cache_memory_bytes=1 << 30,
                   worker_extension_cls="proof.rankdigest.LoadedParamDigests")
ENGINE_ENV = {
    # gloo on CPU needs the streamer's opt-in; buffers of 0 bytes minimum let
    # the streamer size them to this tiny model, so they are reused. Both
    # only matter to the streamer, and are set for `auto` runs too.
    "RUNAI_STREAMER_DIST": "1",
    "RUNAI_STREAMER_DIST_BUFFER_MIN_BYTESIZE": "0",
    # Automatic thread binding fails on a single NUMA node.
    "VLLM_CPU_OMP_THREADS_BIND": "0|1",
}
# The only engine arguments a run may change against its reference.
LOADERS = {
    "auto": {"load_format": "auto"},
    "runai-0.15.7-dist": {"load_format": "runai_streamer",
                          "model_loader_extra_config": {"distributed": True}},
}
LOADER_KEYS = {"load_format", "model_loader_extra_config"}
# Environment that can change what the engine computes, recorded with the run.
RECORDED_ENV_PREFIXES = ("VLLM_", "RUNAI_", "OMP_", "ATEN_", "ONEDNN_", "HF_", "TOKENIZERS_")


def engine_args(model_dir: str, loader: str) -> dict:
    if loader not in LOADERS:
        raise SystemExit(f"unknown loader {loader}; known: {', '.join(LOADERS)}")
    return {"model": model_dir, **ENGINE_ARGS, **LOADERS[loader]}


def recorded_env() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(RECORDED_ENV_PREFIXES)}
