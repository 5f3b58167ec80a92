"""Audit architectures against one vLLM tree, in this process.

    python -m audit.worker OUT.jsonl ARCH=MODEL_DIR...

The tree is the one on PYTHONPATH (audit.run sets it). For each checkpoint
directory, vLLM builds the model from its config on CPU three times, and the
model's own `load_weights` gets the checkpoint three ways (audit.streams).
One JSON line per architecture is appended to OUT.jsonl as soon as it is
known, so the parent can tell which one hung or crashed the process.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def checkpoint(model_dir: Path):
    """A callable giving the checkpoint's tensors in file order, each call anew."""
    from safetensors import safe_open

    tensors = []
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, "pt") as f:
            tensors += [(name, f.get_tensor(name)) for name in f.keys()]
    if not tensors:
        raise ValueError(f"{model_dir}: no safetensors files")
    return lambda: iter(tensors)


def short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().replace("\n", " ")
    return text[:300]


def audit(arch: str, model_dir: Path) -> dict:
    import torch

    from audit import judge
    from audit.tiny import IN_MEMORY_NAMES
    from lab import streams
    from lab.model import build_model

    def load(model_dir, weights):
        # Multimodal configs may need the tokenizer (image token ids).
        needs_tokenizer = (model_dir / "tokenizer_config.json").exists()
        try:
            # max_model_len from the config: some encoders allow fewer than 256.
            _, model = build_model(str(model_dir), max_model_len=None,
                                   skip_tokenizer_init=not needs_tokenizer)
        except Exception as e:  # noqa: BLE001 - any failure here is "could not build"
            raise NotBuilt(f"vLLM cannot build it on CPU: {short(e)}") from e
        streams.zero_state(model)
        with torch.no_grad():
            model.load_weights(weights)
        return streams.state_of(model)

    # The saved names first, then transformers' in-memory names if it made them.
    rejected = None
    for candidate in (model_dir, model_dir / IN_MEMORY_NAMES):
        if not (candidate / "config.json").exists():
            continue
        source = checkpoint(candidate)
        try:
            reference = load(candidate, streams.private_copies(source))
            break
        except NotBuilt as e:
            return {"architecture": arch, "verdict": "not_built", "evidence": {"reason": str(e)}}
        except Exception as e:  # noqa: BLE001
            rejected = rejected or f"load_weights rejects the checkpoint: {short(e)}"
    else:
        return {"architecture": arch, "verdict": "not_built", "evidence": {"reason": rejected}}
    try:
        poisoned = load(candidate, streams.reused_buffer(source))
    except Exception as e:  # noqa: BLE001 - failing only on reused buffers is a finding
        poisoned = short(e)
    liveness = streams.Liveness(source)
    load(candidate, liveness)
    verdict, evidence = judge.verdict(reference, poisoned, liveness)
    if candidate != model_dir:
        evidence["names"] = "transformers in-memory names"
    return {"architecture": arch, "verdict": verdict, "evidence": evidence}


class NotBuilt(Exception):
    pass


def main() -> None:
    out = Path(sys.argv[1])
    jobs = [(arch, Path(d)) for arch, d in (a.split("=", 1) for a in sys.argv[2:])]
    import torch

    torch.set_num_threads(1)
    from vllm.model_executor.models import registry

    # vLLM inspects each model class in a new interpreter, so that CUDA is
    # never initialized in the parent. There is no CUDA here, and a new
    # interpreter per architecture would be most of the audit's time.
    registry._run_in_subprocess = lambda fn: fn()
    for arch, model_dir in jobs:
        try:
            result = audit(arch, model_dir)
        except Exception as e:  # noqa: BLE001 - one architecture must not stop the rest
            traceback.print_exc()
            result = {"architecture": arch, "verdict": "not_built",
                      "evidence": {"reason": f"audit error: {short(e)}"}}
        with out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"  {result['architecture']}: {result['verdict']}", flush=True)
    os._exit(0)  # skip vLLM's distributed teardown: nothing to flush


if __name__ == "__main__":
    main()
