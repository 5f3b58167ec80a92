"""A Llama-4-Scout-shaped slice at Scout's real widths, generated offline.

    python -m bench.scout [DEST]      (prints the checkpoint's directory)

Scout's text widths (hidden 5120, 16 experts of 8192, dense MLP 16384, 40
query and 8 KV heads of 128, vocabulary 202048) with LAYERS MoE layers and a
small vision tower: every layer's fused expert gate_up_proj is 2.5 GiB, the
size of Scout's largest tensor. Names and shapes come from transformers'
own Llama 4 class (built on the meta device); values are random, made on
the GPU when there is one. Cached beside the tiny checkpoints, keyed by
this file; a manifest of every file's size and safetensors header is checked
on every use (hashing 20 GiB would take longer than loading it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

from tools.common import CACHE, ForkError, main_wrapper, say

# One MoE layer (about 8 GiB, its experts 3.75 GiB): the slow loads the bench
# compares against (0.2 GB/s) still fit in a minute each.
LAYERS = 1
TEXT = dict(vocab_size=202048, hidden_size=5120, intermediate_size=8192,
            intermediate_size_mlp=16384, num_hidden_layers=LAYERS, num_attention_heads=40,
            num_key_value_heads=8, head_dim=128, num_local_experts=16, num_experts_per_tok=1,
            interleave_moe_layer_step=1, attention_chunk_size=8192,
            max_position_embeddings=4096, rope_theta=500000.0,
            no_rope_layers=[int((i + 1) % 4 != 0) for i in range(LAYERS)],
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
VISION = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
              num_attention_heads=2, image_size=112, patch_size=14, pixel_shuffle_ratio=0.5,
              projector_input_dim=512, projector_output_dim=5120, vision_output_dim=512,
              rope_theta=10000)
KEY = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def path() -> Path:
    return CACHE / "checkpoints" / f"llama4_scout-{KEY}"


def header(file: Path) -> bytes:
    with file.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return f.read(size)


def manifest(dest: Path) -> dict:
    return {p.name: {"bytes": p.stat().st_size,
                     "header_sha256": hashlib.sha256(header(p)).hexdigest()}
            for p in sorted(dest.glob("*.safetensors"))}


def generate(dest: Path) -> None:
    """One shard per decoder layer, plus one for everything else; one shard
    in memory at a time."""
    import torch
    from safetensors.torch import save_file
    from transformers import Llama4ForConditionalGeneration

    from lab.checkpoints import _llama4_config, _tiny_tokenizer

    config = _llama4_config(TEXT, VISION)
    with torch.device("meta"):
        model = Llama4ForConditionalGeneration(config)
    config.save_pretrained(dest)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device).manual_seed(1234)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        layer = (name.split(".layers.")[1].split(".")[0].zfill(3)
                 if name.startswith("language_model.model.layers.") else "rest")
        groups.setdefault(layer, []).append(name)
    weight_map, total = {}, 0
    for i, (group, names) in enumerate(sorted(groups.items())):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.randn(shapes[n], generator=gen, device=device,
                                   dtype=torch.bfloat16) * 0.02).cpu() for n in names}
        save_file(tensors, dest / file, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in tensors.values())
        weight_map.update({n: file for n in names})
        say(f"  wrote {file} ({group}: {sum(t.numel() * 2 for t in tensors.values()) / 2**30:.1f}"
            " GiB)")
        del tensors
    (dest / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    _tiny_tokenizer(dest, 512)


def ensure() -> Path:
    dest = path()
    if (dest / "manifest.json").exists():
        if json.loads((dest / "manifest.json").read_text()) != manifest(dest):
            raise ForkError(f"{dest} does not match its manifest (corrupt or cut short); "
                            "delete the directory to generate it again")
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    say(f"generating a Llama-4-Scout-shaped checkpoint ({LAYERS} layers) "
        f"in {partial}")
    generate(partial)
    (partial / "manifest.json").write_text(json.dumps(manifest(partial), indent=1))
    partial.rename(dest)
    return dest


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main_wrapper(lambda: print(ensure()))
