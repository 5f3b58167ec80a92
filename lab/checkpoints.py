"""Tiny checkpoints, generated offline: real safetensors, real parameter names.

    python -m lab.checkpoints KIND       (prints the checkpoint's directory)

Kinds: llama4 (Llama4ForConditionalGeneration: text + vision, MoE, chunked
attention 128), nemotron_h (NemotronH with Mamba2 layers), nemotron_vl
(NemotronH_Nano_VL_V2 with a RADIO vit_small vision tower and a local
configuration module, as the real checkpoints ship it), and llama4_bench
(the benchmark's: Llama 4 widths, 2.1 GB, its largest tensors 64 MiB).

Llama 4 and NemotronH come from transformers' own model classes, so names
and shapes are what `save_pretrained` writes (NemotronH renamed to
`backbone.*`, as NVIDIA's checkpoints are). The VL model has no
transformers class: its vision names are derived from vLLM's RADIO model
through the reverse of its loader's mapping. Values are seeded random
numbers, so every tensor differs from every other one. Each checkpoint is
cached under the fork's cache directory, keyed by this file's contents, with
a manifest of sha256 sums that is checked on every use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lab.trees import PYTHON  # noqa: E402
from tools.common import CACHE, TREE, ForkError, main_wrapper, read_json, run  # noqa: E402

# Checkpoints of other versions of this file, unused this long, are deleted.
STALE_AFTER_S = 7 * 24 * 3600
KINDS = ("llama4", "nemotron_h", "nemotron_vl", "llama4_bench")
SEED = 1234
SHARDS = 3

NEMOTRON_H = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  head_dim=16, num_key_value_heads=2, ssm_state_size=16, mamba_num_heads=8,
                  mamba_head_dim=16, max_position_embeddings=512, tie_word_embeddings=False)
NEMOTRON_H_LAYERS = ["mamba", "attention", "mamba"]
# Llama 4's image tokens as its processor names them, numbered from the
# config's image_token_index in this order: as in Scout's config, that index
# is the patch token's and boi / eoi are the image's start and end.
LLAMA4_IMAGE_TOKENS = ("<|patch|>", "<|image_start|>", "<|image_end|>", "<|image|>",
                       "<|tile_x_separator|>", "<|tile_y_separator|>")


def _random_like(shapes: dict, dtype) -> dict:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    return {name: (torch.randn(shape, generator=gen) * 0.05).to(dtype)
            for name, shape in shapes.items()}


def _write_shards(tensors: dict, dest: Path) -> None:
    from safetensors.torch import save_file

    names = list(tensors)
    weight_map = {}
    for i in range(SHARDS):
        file = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[i::SHARDS]}
        save_file(part, dest / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def _tiny_tokenizer(dest: Path, vocab_size: int, extra_special: tuple[str, ...] = (),
                    image_tokens_from: int | None = None):
    """A byte-level BPE trained on a few sentences, saved as a HF fast tokenizer.

    image_tokens_from: the id of Llama 4's first image token (its config's
    image_token_index); the ids between the BPE's last and it are reserved
    special tokens, as in Llama's own tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = ["The capital of France is Paris.", "Streaming loaders reuse buffers.",
              "Weights are copied into parameters one tensor at a time."] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size - 8, min_frequency=1,
                            special_tokens=["<|begin_of_text|>", "<|eot|>", "<|pad|>",
                                            *extra_special])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|begin_of_text|>",
                                  eos_token="<|eot|>", pad_token="<|pad|>")
    if image_tokens_from is not None:
        reserved = [f"<|reserved_special_token_{i}|>"
                    for i in range(image_tokens_from - len(tok))]
        tok.add_special_tokens({"additional_special_tokens": [*reserved, *LLAMA4_IMAGE_TOKENS]})
        ids = tok.convert_tokens_to_ids(list(LLAMA4_IMAGE_TOKENS))
        if ids != list(range(image_tokens_from, image_tokens_from + len(ids))) \
                or len(tok) > vocab_size:
            raise ForkError(f"Llama 4's image tokens got ids {ids}, not {image_tokens_from} on "
                            f"in a vocabulary of {vocab_size}")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}assistant:")
    tok.save_pretrained(dest)
    return tok


def _nemotron_h_model():
    import torch
    from transformers import NemotronHConfig, NemotronHForCausalLM

    torch.manual_seed(SEED)
    config = NemotronHConfig(**NEMOTRON_H, layers_block_type=NEMOTRON_H_LAYERS, n_groups=2,
                             conv_kernel=4, expand=2, chunk_size=64)
    model = NemotronHForCausalLM(config)
    shapes = {("backbone." + n[len("model."):] if n.startswith("model.") else n): tuple(p.shape)
              for n, p in model.state_dict().items()}
    return config, shapes


def make_nemotron_h(dest: Path) -> None:
    import torch

    config, shapes = _nemotron_h_model()
    config.architectures = ["NemotronHForCausalLM"]
    config.torch_dtype = "bfloat16"
    config.save_pretrained(dest)
    _write_shards(_random_like(shapes, torch.bfloat16), dest)
    _tiny_tokenizer(dest, NEMOTRON_H["vocab_size"])


def _llama4_config(text: dict, vision: dict):
    from transformers import Llama4Config

    # The image tokens sit at the top of the vocabulary, clear of the BPE's.
    top = text["vocab_size"]
    config = Llama4Config(text_config=text, vision_config=vision, image_token_index=top - 12,
                          boi_token_index=top - 11, eoi_token_index=top - 10)
    config.torch_dtype = "bfloat16"
    return config


def make_llama4(dest: Path) -> None:
    import torch
    from transformers import Llama4ForConditionalGeneration

    torch.manual_seed(SEED)
    # head_dim 32: the smallest that vLLM's CPU attention kernels take.
    text = dict(vocab_size=512, hidden_size=128, intermediate_size=64, intermediate_size_mlp=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                num_local_experts=2, num_experts_per_tok=1, interleave_moe_layer_step=1,
                attention_chunk_size=128, max_position_embeddings=1024, rope_theta=500000.0,
                no_rope_layers=[1, 0], tie_word_embeddings=False,
                bos_token_id=0, eos_token_id=1, pad_token_id=2)
    # Widths that a forward pass of the vision tower takes, as `vllm serve`'s
    # profiling makes one: the pixel shuffle (ratio 0.5) turns hidden 32 into
    # the adapter's input of 4 x 32 = intermediate_size, and the adapter's
    # output is the projector's input (Scout: 1408 -> 5632, 4096 -> 4096).
    vision = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=1,
                  num_attention_heads=2, image_size=56, patch_size=14, pixel_shuffle_ratio=0.5,
                  projector_input_dim=64, projector_output_dim=64, vision_output_dim=64,
                  rope_theta=10000)
    config = _llama4_config(text, vision)
    model = Llama4ForConditionalGeneration(config)
    config.save_pretrained(dest)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    _write_shards(_random_like(shapes, torch.bfloat16), dest)
    # `vllm serve` with its defaults profiles image inputs: it needs the image
    # processor's configuration and the image tokens at the config's ids.
    from transformers import Llama4ImageProcessorFast, Llama4Processor

    tok = _tiny_tokenizer(dest, text["vocab_size"], image_tokens_from=config.image_token_index)
    side = vision["image_size"]
    image = Llama4ImageProcessorFast(size={"height": side, "width": side}, max_patches=4)
    Llama4Processor(image_processor=image, tokenizer=tok, patch_size=vision["patch_size"],
                    pixel_shuffle_ratio=vision["pixel_shuffle_ratio"],
                    chat_template=tok.chat_template).save_pretrained(dest)


def make_llama4_bench(dest: Path) -> None:
    """Real widths (hidden 2048, head_dim 128, 8 experts), enough layers for
    2 GiB. Written one tensor at a time: generating it holds one shard."""
    import torch
    from safetensors.torch import save_file
    from transformers import Llama4ForConditionalGeneration

    layers = 15
    text = dict(vocab_size=16384, hidden_size=2048, intermediate_size=1024,
                intermediate_size_mlp=4096, num_hidden_layers=layers, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, num_local_experts=8, num_experts_per_tok=1,
                interleave_moe_layer_step=1, attention_chunk_size=8192,
                max_position_embeddings=4096, rope_theta=500000.0,
                no_rope_layers=[int((i + 1) % 4 != 0) for i in range(layers)],
                tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    vision = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=2, image_size=112, patch_size=14, pixel_shuffle_ratio=0.5,
                  projector_input_dim=512, projector_output_dim=2048, vision_output_dim=512,
                  rope_theta=10000)
    config = _llama4_config(text, vision)
    with torch.device("meta"):
        model = Llama4ForConditionalGeneration(config)
    config.save_pretrained(dest)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    gen = torch.Generator().manual_seed(SEED)
    names = list(shapes)
    shards = [names[i::6] for i in range(6)]
    weight_map, total = {}, 0
    for i, part in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=gen) * 0.02).to(torch.bfloat16)
                   for n in part}
        save_file(tensors, dest / file, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({n: file for n in part})
        del tensors
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    _tiny_tokenizer(dest, 512)


VL_CONFIG_MODULE = '''\
"""Configuration of a tiny NemotronH_Nano_VL_V2 (generated for the fork's proofs).

The real checkpoints ship their configuration as remote code; this one does
the same, with vLLM's own NemotronH configuration for the text model.
"""
from transformers import PretrainedConfig


class NemotronHNanoVLV2Config(PretrainedConfig):
    model_type = "NemotronH_Nano_VL_V2"

    def __init__(self, text_config=None, vision_config=None, **kwargs):
        from vllm.transformers_utils.configs.nemotron_h import NemotronHConfig

        self.text_config = NemotronHConfig(**(text_config or {}))
        self.vision_config = PretrainedConfig(**(vision_config or {}))
        super().__init__(**kwargs)
'''


def make_nemotron_vl(dest: Path) -> None:
    import torch

    (dest / "configuration_tiny_nano_vl.py").write_text(VL_CONFIG_MODULE)
    text_config = dict(NEMOTRON_H, architectures=["NemotronHForCausalLM"], model_type="nemotron_h",
                       num_hidden_layers=3, hybrid_override_pattern="M*M", mamba_n_groups=2,
                       mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=64, torch_dtype="bfloat16")
    config = {
        "architectures": ["NemotronH_Nano_VL_V2"], "model_type": "NemotronH_Nano_VL_V2",
        "auto_map": {"AutoConfig": "configuration_tiny_nano_vl.NemotronHNanoVLV2Config"},
        "torch_dtype": "bfloat16", "text_config": text_config,
        "vision_config": {"args": {"model": "vit_small_patch16_224"}, "patch_size": 16,
                          "preferred_resolution": [224, 224]},
        "force_image_size": 224, "patch_size": 16, "downsample_ratio": 0.5,
        "template": "nemotron-h", "ps_version": "v2", "image_tag_type": "internvl",
        "vit_hidden_size": 384, "projector_hidden_size": 128,
        "norm_mean": [0.48145466, 0.4578275, 0.40821073],
        "norm_std": [0.26862954, 0.26130258, 0.27577711],
        "img_context_token_id": 500, "vocab_size": NEMOTRON_H["vocab_size"],
        # As the released checkpoints have it. vLLM's processor reads it when
        # the engine profiles the vision tower with dummy video, which GPUs do
        # (proof/processorcheck.py shows it on CPU).
        "use_thumbnail": True,
    }
    (dest / "config.json").write_text(json.dumps(config, indent=1))
    # The model encodes its image tags with the tokenizer while it is built.
    _tiny_tokenizer(dest, NEMOTRON_H["vocab_size"], ("<img>", "</img>", "<image>"))

    _, lm_shapes = _nemotron_h_model()
    shapes = {f"language_model.{n}": s for n, s in lm_shapes.items()}
    # Vision tower and projector: vLLM's parameters, named as in the HF
    # checkpoint (RadioModel.load_weights maps model.blocks.N -> encoder.layers.N).
    from lab.model import build_model

    _, model = build_model(str(dest), "dummy", {})
    for name, param in model.named_parameters():
        if name.startswith("mlp1."):
            shapes[name] = tuple(param.shape)
        elif name.startswith("vision_model.model."):
            sub = name[len("vision_model."):]
            sub = sub.replace("model.encoder.layers.", "model.blocks.", 1)
            shapes[f"vision_model.radio_model.{sub}"] = tuple(param.shape)
    _write_shards(_random_like(shapes, torch.bfloat16), dest)


def _manifest(dest: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dest.iterdir()) if p.is_file() and p.name != "manifest.json"}


# Checkpoints are keyed by the code that makes them (read once, at import).
SOURCE_KEY = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def path_for(kind: str) -> Path:
    return CACHE / "checkpoints" / f"{kind}-{SOURCE_KEY}"


def ensure(kind: str) -> Path:
    """The checkpoint's directory, generated (in a subprocess) if not cached."""
    if kind not in KINDS:
        raise ForkError(f"unknown checkpoint {kind!r}; kinds: {', '.join(KINDS)}")
    dest = path_for(kind)
    manifest = dest / "manifest.json"
    if manifest.exists():
        if read_json(manifest) != _manifest(dest):
            raise ForkError(f"{dest} does not match its manifest (corrupt or edited); "
                            "delete the directory to generate it again")
        os.utime(manifest)  # in use: not stale (below)
        return dest
    # Checkpoints made by other versions of this file are of no use here, but
    # another clone of the repository may be using them right now: only
    # those unused for a week go.
    for other in dest.parent.glob(f"{kind}-*"):
        mark = other / "manifest.json" if (other / "manifest.json").exists() else other
        if other.name != dest.name and time.time() - mark.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(other, ignore_errors=True)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"==> generating the {kind} checkpoint", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": f"{TREE}:{ROOT}", "HF_HUB_OFFLINE": "1"}
    # The interpreter of the proofs: .venv on CPU, the GPU environment's on a
    # GPU node (make demo DEVICE=cuda), so a GPU node needs no CPU venv.
    run([PYTHON, "-m", "lab.checkpoints", "--generate", kind, partial],
        f"generating the {kind} checkpoint", env=env, cwd=ROOT)
    (partial / "manifest.json").write_text(json.dumps(_manifest(partial), indent=1))
    partial.rename(dest)
    return dest


def main() -> None:
    if sys.argv[1] == "--generate":
        kind, dest = sys.argv[2], Path(sys.argv[3])
        {"llama4": make_llama4, "nemotron_h": make_nemotron_h, "nemotron_vl": make_nemotron_vl,
         "llama4_bench": make_llama4_bench}[kind](dest)
        os._exit(0)
    main_wrapper(lambda: print(ensure(sys.argv[1])))


if __name__ == "__main__":
    main()
