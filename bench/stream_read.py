"""What each loader's reader delivers alone on this node, beside the bench's loads.

    python -m bench.stream_read MODEL_DIR DEVICE [READER ...] OUT.json

vLLM's own weight iterators over the checkpoint, with no model behind them:
`auto`'s (safetensors_weights_iterator) and runai's
(runai_safetensors_weights_iterator, with the streamer release on sys.path
and its memory limit from the environment, as the loader would leave them),
the latter with the streamer's default (private copies) and with views.
Each reading is timed twice: taking each tensor and letting it go (for
`auto`, a memory map: nothing is read until a consumer touches it), and
taking each tensor into memory of its own as a consumer must (DEVICE cuda:
a copy to the GPU, contiguous as the streamers yield them; cpu: a clone). The checkpoint is read
once first, so every reading starts from the page cache. GB/s = checkpoint
bytes / seconds; best of two. READERS, in their order, unless some are named;
runai reads as RUNAI_STREAMER_FS_STRATEGY says (recorded), which the
streamer resolves once per process.

Where a load is far below its reader here, the time goes in the model's
load_weights; where the reader alone is slow, in the reader.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from lab.streams import force_streamer_views
from lab.trees import checkpoint_bytes

READ_CHUNK = 64 << 20
# runai-views: the same streamer with owned=False (views into its reused
# buffers, what 0.15.7 always gave), which the fixed models can consume.
READERS = ("auto", "runai", "runai-views")


def iterator(reader: str, files: list[str]):
    from vllm.model_executor.model_loader import weight_utils

    if reader == "auto":
        return weight_utils.safetensors_weights_iterator(files, False)
    return weight_utils.runai_safetensors_weights_iterator(files, False)


def read(reader: str, files: list[str], take: str, device: str) -> tuple[float, int]:
    """Seconds for one reading, and the bytes of the tensors it yielded."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    taken = 0
    start = time.perf_counter()
    for _, tensor in iterator(reader, files):
        taken += tensor.numel() * tensor.element_size()
        if take == "copy":
            kept = tensor.to(device) if device == "cuda" else tensor.clone()
            del kept
        del tensor
    sync()
    return time.perf_counter() - start, taken


def main() -> None:
    model_dir, device, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[-1])
    readers = sys.argv[3:-1] or list(READERS)
    if unknown := set(readers) - set(READERS):
        sys.exit(f"unknown readers {sorted(unknown)}; known: {', '.join(READERS)}")
    files = sorted(str(p) for p in model_dir.glob("*.safetensors"))
    for path in files:  # into the page cache
        with open(path, "rb") as f:
            while f.read(READ_CHUNK):
                pass
    nbytes = checkpoint_bytes(model_dir)
    import importlib.metadata

    import runai_model_streamer

    rows = []
    for reader in readers:
        if reader == "runai-views":
            force_streamer_views()  # for the rest of this process: it comes last
        for take in ("none", "copy"):
            readings = [read(reader, files, take, device) for _ in range(2)]
            seconds = min(s for s, _ in readings)
            rows.append({"reader": reader, "take": take, "seconds": round(seconds, 3),
                         "gb_per_s": round(nbytes / seconds / 1e9, 2),
                         "readings_s": [round(s, 3) for s, _ in readings],
                         "bytes_taken": [taken for _, taken in readings]})
            print(f"{reader:11} take={take:5} {seconds:7.2f} s  {nbytes / seconds / 1e9:6.2f} GB/s",
                  flush=True)
    result = {"bytes": nbytes, "device": device, "torch_threads": torch.get_num_threads(),
              "runai_version": importlib.metadata.version("runai-model-streamer"),
              "runai_file": runai_model_streamer.__file__,
              "runai_fs_strategy": os.environ.get("RUNAI_STREAMER_FS_STRATEGY", "default"),
              "rows": rows}
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
