"""What a proof ran on: the machine, its accelerator, and how vLLM was installed.

    python -m proof.machine OUT.json

Run with the patched tree first on sys.path (harness). Everything is read,
nothing assumed: docs/gpu.md is generated from it.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys


def cpu() -> dict:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("model name")), "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    return {"model": model, "avx512f": "avx512f" in flags, "avx2": "avx2" in flags}


def gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.split()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        driver = "unknown"
    return {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "driver": driver, "cuda": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}


def install() -> dict:
    """vLLM's installed version (its local part says how: `+cpu`, or
    `.precompiled` for upstream's precompiled-kernels route) and whether the
    install is editable."""
    dist = importlib.metadata.distribution("vllm")
    direct = dist.read_text("direct_url.json")
    editable = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
    return {"vllm_version": dist.version, "editable": editable}


def main() -> None:
    import torch
    import vllm

    result = {"python": platform.python_version(), "torch": torch.__version__,
              "cpu": cpu(), "gpu": gpu(), "vllm_file": vllm.__file__, **install()}
    with open(sys.argv[-1], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
