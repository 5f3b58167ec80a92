"""vLLM's model for one rank on CPU, built from a checkpoint's config, and a
digest of what a tensor holds. Run in a process whose sys.path picks the
tree (lab/trees.py)."""

from __future__ import annotations

import hashlib
import tempfile


def digest(tensor) -> str:
    import torch

    data = tensor.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:
        data = data.view(torch.int16)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]


def build_model(model_dir: str, load_format: str = "auto", extra: dict | None = None,
                dtype: str = "auto", max_model_len: int | None = 256, **engine_args):
    """vLLM's model, built for one rank on CPU, not yet loaded. The vLLM
    config stays current until the next build: loading needs it."""
    import torch
    from vllm.config import set_current_vllm_config
    from vllm.distributed import (
        destroy_model_parallel,
        ensure_model_parallel_initialized,
        init_distributed_environment,
    )
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader.utils import initialize_model

    args = EngineArgs(model=model_dir, enforce_eager=True, dtype=dtype,
                      max_model_len=max_model_len, trust_remote_code=True, load_format=load_format,
                      model_loader_extra_config=extra or {}, **engine_args)
    config = args.create_engine_config()
    while _CONTEXT:
        _CONTEXT.pop().__exit__(None, None, None)
    _CONTEXT.append(set_current_vllm_config(config))
    _CONTEXT[-1].__enter__()
    if not torch.distributed.is_initialized():
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method=f"file://{tempfile.mktemp()}")
    # The groups depend on the model (MoE models get an expert-parallel one).
    destroy_model_parallel()
    ensure_model_parallel_initialized(1, 1)
    model = initialize_model(vllm_config=config)
    return config, model


_CONTEXT: list = []
