"""This node's host-to-device limits, beside the GPU bench's loads.

    python -m bench.h2d MODEL_DIR OUT.json

The largest tensor of the checkpoint, read from its safetensors file (in the
page cache after the bench's loads), copied to the GPU contiguously from
pageable memory, and from pinned memory; best of three each.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open


def best_gb_per_s(copy, nbytes: int) -> float:
    best = float("inf")
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        copy()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e9


def main() -> None:
    model, out = Path(sys.argv[1]), Path(sys.argv[2])
    largest = None
    for path in sorted(model.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                shape = f.get_slice(name).get_shape()
                size = torch.Size(shape).numel()
                if largest is None or size > largest[0]:
                    largest = (size, path, name)
    _, path, name = largest
    with safe_open(str(path), "pt") as f:
        pageable = f.get_tensor(name)
    nbytes = pageable.numel() * pageable.element_size()
    pinned = pageable.pin_memory()
    result = {"tensor": name, "bytes": nbytes,
              "pageable_gb_per_s": best_gb_per_s(lambda: pageable.to("cuda"), nbytes),
              "pinned_gb_per_s": best_gb_per_s(lambda: pinned.to("cuda", non_blocking=True),
                                               nbytes)}
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
