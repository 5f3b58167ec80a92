"""The engine settings every proof and bench engine run shares, and the loaders
that are all a run may change against its reference (see proof/generate.py).

Two devices, one set of comparisons. VLLM_FORK_DEVICE (`make demo
DEVICE=cuda`) picks the settings: on CPU the engine runs at tensor parallel
2 (the streamer's distributed mode over gloo), on one GPU at tensor
parallel 1 with every streaming loader. Within a device, a run and its
reference differ in LOADERS[loader] alone.
"""

from __future__ import annotations

import os

from tools.common import RUNAI_SIDE_VERSIONS

PROMPTS = ["The capital of France is", "Streaming loaders reuse"]
MAX_TOKENS = 12
DEVICES = ("cpu", "cuda")
DEVICE = os.environ.get("VLLM_FORK_DEVICE", "cpu")
if DEVICE not in DEVICES:
    raise SystemExit(f"VLLM_FORK_DEVICE={DEVICE}: known devices are {', '.join(DEVICES)}")

# Shared by every engine run on every device, reference and subject alike.
COMMON_ARGS = dict(enforce_eager=True, max_model_len=256, max_num_seqs=4, dtype="bfloat16",
                   # Nano VL ships its configuration as code, as the real checkpoints do.
                   trust_remote_code=True,
                   limit_mm_per_prompt={"image": 0},
                   worker_extension_cls="proof.rankdigest.LoadedParamDigests")
DEVICE_ARGS = {
    "cpu": dict(tensor_parallel_size=2, distributed_executor_backend="mp",
                # A fixed KV cache: without it, vLLM 0.21's CPU worker refuses
                # to start unless 92 % of the NUMA node's memory is free, so
                # a run would depend on what else the machine is doing.
                kv_cache_memory_bytes=1 << 30),
    "cuda": dict(tensor_parallel_size=1,
                 # Several engines share the one GPU side by side: a fixed KV
                 # cache, and a small claim on the GPU, so that no engine's
                 # memory profile counts the others' memory.
                 kv_cache_memory_bytes=2 * 10**9, gpu_memory_utilization=0.1,
                 # The tiny Nemotron models have head size 16, which only
                 # flash-attention takes (Triton attention needs 32).
                 attention_backend="FLASH_ATTN",
                 # Profiling Nano VL's vision tower with dummy video takes a
                 # minute and loads nothing.
                 skip_mm_profiling=True),
}
DEVICE_ENV = {
    "cpu": {
        # gloo on CPU needs the streamer's opt-in; buffers of 0 bytes minimum
        # let the streamer size them to this tiny model, so they are reused.
        # Both only matter to the streamer, and are set for `auto` runs too.
        "RUNAI_STREAMER_DIST": "1",
        "RUNAI_STREAMER_DIST_BUFFER_MIN_BYTESIZE": "0",
        # Automatic thread binding fails on a single NUMA node.
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",
    },
    "cuda": {
        # flashinfer is not among vLLM's hard requirements, and its sampler
        # is vLLM's default on GPUs.
        "VLLM_USE_FLASHINFER_SAMPLER": "0",
        # OMP_NUM_THREADS is left to vLLM, whose workers then run torch on one
        # thread, as users get it; ten engines side by side with more threads
        # each would spin on the node's cores against each other.
        # With flashinfer installed (vLLM's CUDA requirements bring it), vLLM
        # 0.21 runs bf16 MoE on Hopper with FlashInfer's CUTLASS kernels, which
        # it compiles from source on a node's first use; on a fresh H200 no
        # tiny Llama 4 engine came up within 540 s. Triton's MoE kernels, as
        # before flashinfer was installed, compute from the same loaded bytes.
        "VLLM_USE_FLASHINFER_MOE_FP16": "0",
    },
}
# Where the CPU engine's two workers run: vLLM's multiprocess executor on this
# host (mp), or its Ray executor on a Ray cluster on this machine's loopback
# (lab/raycluster.py) of one node holding both workers, or of two nodes with
# one worker each: the bug report's setting, and the multi-node path.
# Layout -> Ray nodes (None: no Ray).
LAYOUTS = {"mp": None, "ray1node": 1, "ray2nodes": 2}
RAY_LAYOUTS = [layout for layout, nodes in LAYOUTS.items() if nodes]
# Under Ray, the runs of the copy-returning streamer also weigh, in every
# worker after each step of the model's load_weights, the host tensors of the
# stream it still holds (proof/rankdigest.py): that is where the checkpoint
# piles up. Weighing walks every object of the worker (half a minute a run),
# so only these runs weigh. It is an observer, not a setting: it passes the
# loader's own tensors through and keeps none, so it cannot make a run equal
# its reference (it could only make it differ); it is left out when runs are
# compared (OBSERVER_ENV_KEYS).
WEIGHED_LOADERS = ("runai-0.17.0-copy",)
LIVENESS_ENV = {"LAB_LIVENESS": "1"}
OBSERVER_ENV_KEYS = set(LIVENESS_ENV)
# Under Ray, the CPU loaders and the copy-returning streamer of the bug report.
RAY_LOADERS = ["auto", "runai-0.15.7-dist", "runai-0.17.0-copy"]
TENSOR_PARALLEL = DEVICE_ARGS[DEVICE]["tensor_parallel_size"]
# Back-compat names for the current device (bench, processor check).
ENGINE_ARGS = {**COMMON_ARGS, **DEVICE_ARGS[DEVICE]}
ENGINE_ENV = DEVICE_ENV[DEVICE]

# The only engine arguments a run may change against its reference. A
# streamer memory limit of None is filled in per checkpoint (engine_args):
# just room for its largest tensor, so that the streamer reuses its buffer.
LOADERS = {
    "auto": {"load_format": "auto"},
    "runai-0.15.7-dist": {"load_format": "runai_streamer",
                          "model_loader_extra_config": {"distributed": True}},
    "runai-0.15.7-reuse": {"load_format": "runai_streamer",
                           "model_loader_extra_config": {"memory_limit": None}},
    # runai 0.17.x's default: a private copy of every tensor (copy), and with
    # owned=False: views into reused buffers (views). vLLM 0.21 has no option
    # for the latter, so each worker changes the streamer's default
    # (lab/streams.force_streamer_views, asked for by LOADER_ENV).
    **{f"runai-{version}-{mode}": {"load_format": "runai_streamer",
                                   "model_loader_extra_config": {"memory_limit": None}}
       for version in RUNAI_SIDE_VERSIONS for mode in ("copy", "views")},
}
LOADER_KEYS = {"load_format", "model_loader_extra_config"}
# Environment that is part of a loader, like its arguments.
LOADER_ENV = {loader: {"LAB_STREAMER_VIEWS": "1"} for loader in LOADERS
              if loader.endswith("-views")}
LOADER_ENV_KEYS = {key for env in LOADER_ENV.values() for key in env}
# Which loaders each device's engine runs use (the others need what the
# device lacks: distributed streaming needs TP > 1, on CPU only gloo).
DEVICE_LOADERS = {
    "cpu": ["auto", "runai-0.15.7-dist"],
    "cuda": ["auto", "runai-0.15.7-reuse",
             *(f"runai-{version}-{mode}" for version in RUNAI_SIDE_VERSIONS
               for mode in ("copy", "views"))],
}
# Environment that can change what the engine computes, recorded with the run.
RECORDED_ENV_PREFIXES = ("VLLM_", "RUNAI_", "OMP_", "ATEN_", "ONEDNN_", "HF_", "TOKENIZERS_",
                         "LAB_", "CUDA_", "NCCL_")


def loader_args(model_dir: str, loader: str) -> dict:
    if loader not in LOADERS:
        raise SystemExit(f"unknown loader {loader}; known: {', '.join(LOADERS)}")
    args = {k: (dict(v) if isinstance(v, dict) else v) for k, v in LOADERS[loader].items()}
    extra = args.get("model_loader_extra_config", {})
    if "memory_limit" in extra and extra["memory_limit"] is None:
        from pathlib import Path

        from lab.trees import streamer_memory_limit

        extra["memory_limit"] = streamer_memory_limit(Path(model_dir))
    return args


def check_layout(layout: str, device: str) -> None:
    if layout not in LAYOUTS:
        raise SystemExit(f"unknown layout {layout}; known: {', '.join(LAYOUTS)}")
    if layout != "mp" and device != "cpu":
        raise SystemExit(f"layout {layout} is for CPU runs only")


def executor_args(layout: str, device: str = DEVICE) -> dict:
    """What a layout changes in the engine arguments: the executor."""
    check_layout(layout, device)
    return {} if layout == "mp" else {"distributed_executor_backend": "ray"}


def engine_args(model_dir: str, loader: str, device: str = DEVICE, layout: str = "mp") -> dict:
    return {"model": model_dir, **COMMON_ARGS, **DEVICE_ARGS[device],
            **executor_args(layout, device), **loader_args(model_dir, loader)}


def engine_env(loader: str, device: str = DEVICE, layout: str = "mp") -> dict:
    """Environment an engine run starts with: the device's, then the loader's
    (and under Ray, the weighing of the copy-returning streamer)."""
    check_layout(layout, device)
    weighed = layout != "mp" and loader in WEIGHED_LOADERS
    return {**DEVICE_ENV[device], **LOADER_ENV.get(loader, {}),
            **(LIVENESS_ENV if weighed else {})}


def recorded_env() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(RECORDED_ENV_PREFIXES)}
