"""The audit's verdict on one architecture from the three loads of lab/streams.py."""

from __future__ import annotations

from lab.streams import Liveness, differing

# Holding more than this fraction of the checkpoint at once is materializing it.
MATERIALIZES_ABOVE = 0.5


def verdict(reference: dict, poisoned: dict | str, liveness: Liveness) -> tuple[str, dict]:
    """(verdict, evidence). poisoned is the state after the reused-buffer load,
    or the error that load raised while the reference load did not."""
    evidence = {"tensors": liveness.total, "peak_alive": liveness.peak_alive,
                "peak_alive_fraction": round(liveness.peak_alive / max(liveness.total, 1), 3),
                "peak_alive_bytes": liveness.peak_bytes, "total_bytes": liveness.total_bytes}
    if isinstance(poisoned, str):
        return "stale", {**evidence, "error_with_reused_buffer": poisoned}
    corrupted = differing(poisoned, reference)
    if corrupted:
        return "stale", {**evidence, "corrupted": corrupted}
    if evidence["peak_alive_fraction"] > MATERIALIZES_ABOVE:
        return "materializes", evidence
    return "safe", evidence
