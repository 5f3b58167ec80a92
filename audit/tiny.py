"""Tiny checkpoints for the audit, from transformers alone (no downloads).

An architecture in vLLM's registry that transformers also implements gets the
transformers config class with every size shrunk, and the transformers model
built from it writes the checkpoint with `save_pretrained`: the parameter
names and shapes a real checkpoint of that architecture has. The models the
fork's proof already generates (Llama 4, Nemotron Nano VL, NemotronH) reuse
those checkpoints.
"""

from __future__ import annotations

import inspect
from pathlib import Path

# Sizes for every config key that names one; only keys the config already has,
# with an integer value, are changed.
TINY = {
    **dict.fromkeys(["hidden_size", "d_model", "n_embd", "embed_dim", "word_embed_proj_dim"], 64),
    **dict.fromkeys(["intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size",
                     "encoder_ffn_dim", "decoder_ffn_dim", "intermediate_size_mlp"], 128),
    **dict.fromkeys(["moe_intermediate_size", "expert_intermediate_size"], 32),
    "shared_expert_intermediate_size": 64,
    "expert_ffn_hidden_size": 32,
    # A vision tower's output feeds the text model, so it has the text width.
    "out_hidden_size": 64,
    "hidden_dim": 64,
    "vocab_size_per_layer_input": 512,
    **dict.fromkeys(["num_attention_heads", "n_head", "n_heads", "num_heads",
                     "encoder_attention_heads", "decoder_attention_heads"], 4),
    **dict.fromkeys(["num_key_value_heads", "n_kv_heads", "multi_query_group_num"], 2),
    **dict.fromkeys(["head_dim", "kv_channels", "attention_head_dim"], 16),
    # Four layers: a per-layer buffer then stays well below the whole model.
    **dict.fromkeys(["num_hidden_layers", "n_layer", "n_layers", "num_layers",
                     "encoder_layers", "decoder_layers"], 4),
    "vocab_size": 512,
    **dict.fromkeys(["num_experts", "num_local_experts", "n_routed_experts",
                     "moe_num_experts"], 4),
    **dict.fromkeys(["num_experts_per_tok", "moe_topk"], 2),
    "n_shared_experts": 1,
    **dict.fromkeys(["kv_lora_rank", "q_lora_rank"], 32),
    **dict.fromkeys(["qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"], 16),
    **dict.fromkeys(["image_size"], 64),
    **dict.fromkeys(["patch_size"], 16),
}

# Models the proof generates already, with real names (see proof/checkpoints).
PROOF_CHECKPOINTS = {
    "Llama4ForConditionalGeneration": "llama4",
    "NemotronH_Nano_VL_V2": "nemotron_vl",
    "NemotronHForCausalLM": "nemotron_h",
}


class NotBuildable(Exception):
    """This architecture has no tiny checkpoint here; the message says why."""


def transformers_model_types() -> dict[str, str]:
    """{transformers model class name: model_type} over every auto mapping."""
    from transformers.models.auto import modeling_auto

    types: dict[str, str] = {}
    for attr in sorted(dir(modeling_auto)):
        if attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES"):
            for model_type, names in getattr(modeling_auto, attr).items():
                for name in names if isinstance(names, (list, tuple)) else [names]:
                    types.setdefault(name, model_type)
    return types


def _overrides(config_class) -> dict:
    from transformers import PretrainedConfig

    default = config_class()
    overrides = {}
    for key in inspect.signature(config_class.__init__).parameters:
        value = getattr(default, key, None)
        if isinstance(value, PretrainedConfig):
            overrides[key] = type(value)(**_overrides(type(value)))
        elif key in TINY and isinstance(value, int) and not isinstance(value, bool):
            overrides[key] = TINY[key]
    for key, value in vars(default).items():  # sub-configs set in __init__
        if key.endswith("_config") and isinstance(value, PretrainedConfig) \
                and key not in overrides:
            overrides[key] = type(value)(**_overrides(type(value)))
    # Special tokens must stay inside the shrunk vocabulary.
    if "vocab_size" in overrides:
        high = [k for k, v in vars(default).items()
                if k.endswith(("_token_id", "_token_index")) and isinstance(v, int)
                and not isinstance(v, bool) and v >= TINY["vocab_size"]]
        for i, key in enumerate(sorted(high)):
            overrides[key] = TINY["vocab_size"] - 1 - i
    return overrides


def tiny_config(arch: str, model_type: str):
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    try:
        config = config_class(**_overrides(config_class))
    except Exception as e:  # noqa: BLE001 - any config error means "not buildable"
        raise NotBuildable(f"tiny {config_class.__name__}: {type(e).__name__}: {e}") from e
    config.architectures = [arch]
    return config


def write_checkpoint(arch: str, model_type: str, dest) -> None:
    import torch
    import transformers

    config = tiny_config(arch, model_type)
    model_class = getattr(transformers, arch, None)
    if model_class is None:
        raise NotBuildable(f"transformers has no class {arch}")
    torch.manual_seed(0)
    try:
        model = model_class(config)
    except Exception as e:  # noqa: BLE001
        raise NotBuildable(f"transformers {arch}(tiny config): {type(e).__name__}: {e}") from e
    model.save_pretrained(dest)
    # transformers 5 saves some models under legacy names that are not what
    # either of its formats reads back (Llava: `model.language_model.model.*`).
    # Real checkpoints made since 4.52 use the in-memory names, so those are
    # kept too, for the audit to try when the saved names are rejected.
    from safetensors.torch import save_file

    alternative = Path(dest) / IN_MEMORY_NAMES
    alternative.mkdir()
    save_file({name: tensor.detach().clone().contiguous()
               for name, tensor in model.state_dict().items()},
              str(alternative / "model.safetensors"))
    config.save_pretrained(alternative)


IN_MEMORY_NAMES = "in-memory-names"
NOT_IN_TRANSFORMERS = ("no tiny config without downloads: transformers does not implement "
                       "this architecture, so its config only exists in the model's hub "
                       "repository")


def generate(dest, only: list[str] | None = None) -> dict:
    """{architecture: {"dir": path} or {"reason": why not}} for every
    architecture in vLLM's registry (or `only`), generating what is missing."""
    import shutil

    import transformers
    from vllm.model_executor.models.registry import ModelRegistry

    transformers.logging.set_verbosity_error()
    dest = Path(dest)
    types = transformers_model_types()
    index = {}
    for arch in sorted(only or ModelRegistry.get_supported_archs()):
        if arch in PROOF_CHECKPOINTS:
            index[arch] = {"proof": PROOF_CHECKPOINTS[arch]}
            continue
        if arch not in types:
            index[arch] = {"reason": NOT_IN_TRANSFORMERS}
            continue
        model_dir = dest / arch
        failed = dest / f"{arch}.failed"
        if failed.exists():
            index[arch] = {"reason": failed.read_text()}
            continue
        if not (model_dir / "config.json").exists():
            partial = dest / f"{arch}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                write_checkpoint(arch, types[arch], partial)
            except NotBuildable as e:
                failed.write_text(str(e).replace("\n", " ")[:300])
                index[arch] = {"reason": failed.read_text()}
                continue
            partial.rename(model_dir)
        index[arch] = {"dir": str(model_dir)}
    return index


if __name__ == "__main__":
    import json
    import os
    import sys

    dest, *only, out = sys.argv[1:]
    os.makedirs(dest, exist_ok=True)
    with open(out, "w") as f:
        json.dump(generate(dest, only), f)
    os._exit(0)
