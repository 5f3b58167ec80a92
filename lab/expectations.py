"""What every proof run must show: model x scenario x tree -> expected outcome.

`make demo` judges its rows with this table and the pytest proofs assert
with it, so the two cannot disagree. Each run is compared with a reference
that differs from it only in the loader (the same tree's `auto` run, or for
the reload the weights before the first reload).

Outcomes:
- identical:    every parameter, on every rank, equals the reference's, and
                greedy tokens too where they are evidence;
- corrupted:    on every rank some parameter differs from the reference (the
                bug shows);
- materializes: values identical, but the load holds more of the stream in
                host memory than it may (lab/streams.Liveness: the groups
                buffered by design plus twice the largest tensor): with a
                copying loader, the checkpoint in host memory.
"""

from __future__ import annotations

from tools.common import RUNAI_SIDE_VERSIONS

IDENTICAL, CORRUPTED, MATERIALIZES = "identical", "corrupted", "materializes"

# In-process loads through vLLM's own loader (proof/loadcheck.py).
# Every newer streamer release in both of its modes: copies (its default) and
# views (owned=False).
COPY_SCENARIOS = [f"runai-{v}-copy" for v in RUNAI_SIDE_VERSIONS]
VIEWS_SCENARIOS = [f"runai-{v}-views" for v in RUNAI_SIDE_VERSIONS]
LOAD_SCENARIOS = ["auto", "runai-0.15.7-reuse", *COPY_SCENARIOS, *VIEWS_SCENARIOS]
# The engine on CPU at tensor parallel 2 (proof/generate.py): runai 0.15.7
# in distributed mode against `auto`; the reference is run twice, so that
# tokens count only when it repeats itself.
ENGINE_SCENARIOS = ["auto-tp2", "auto-tp2 (repeat)", "runai-0.15.7-dist-tp2"]
# The engine on CPU under vLLM's Ray executor (lab/engine.LAYOUTS), one Ray
# node or two: the same runs, and the copy-returning streamer too.
RAY_LAYOUTS = ("ray1node", "ray2nodes")
RAY_SCENARIOS = [f"{scenario}-tp2-{layout}{repeat}"
                 for layout in RAY_LAYOUTS
                 for scenario, repeat in [("auto", ""), ("auto", " (repeat)"),
                                          ("runai-0.15.7-dist", ""), ("runai-0.17.0-copy", "")]]
# The engine on one GPU at tensor parallel 1: every streaming loader of the
# in-process loads, against `auto`, for both fixed models; and NemotronH
# reloaded in place through the engine.
CUDA_MODELS = ("llama4 (engine)", "nemotron_vl (engine)")
CUDA_COPY = [f"runai-{version}-copy-tp1" for version in RUNAI_SIDE_VERSIONS]
CUDA_VIEWS = [f"runai-{version}-views-tp1" for version in RUNAI_SIDE_VERSIONS]
CUDA_SCENARIOS = ["auto-tp1", "auto-tp1 (repeat)", "runai-0.15.7-reuse-tp1",
                  *CUDA_COPY, *CUDA_VIEWS]



def across_trees(scenario: str) -> str:
    """The row that compares the fork's `auto` engine run with base's."""
    return f"{scenario} vs base"


# The fork's `auto` engine runs against base's, per layout and device: what
# `auto` loads is the same on both trees (commit 4 reorders copies, no value).
ACROSS_TREES = [across_trees(s) for s in ("auto-tp2", "auto-tp1")] + [
    across_trees(s) for s in RAY_SCENARIOS if s.startswith("auto-") and "(repeat)" not in s]

EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    **{(model, scenario): {"patched": IDENTICAL}
       for model in ("llama4 (engine)", *CUDA_MODELS) for scenario in ACROSS_TREES},
    **{(model, "auto"): {"base": IDENTICAL, "patched": IDENTICAL}
       for model in ("llama4", "nemotron_vl")},
    # A streamer buffer far smaller than the checkpoint, handed out as views.
    **{(model, scenario): {"base": CORRUPTED, "patched": IDENTICAL}
       for model in ("llama4", "nemotron_vl")
       for scenario in ("runai-0.15.7-reuse", *VIEWS_SCENARIOS)},
    # Private copies load correct values on both trees; base Llama 4 holds
    # them. (Base Nano VL lists them too, but the tiny checkpoint's language
    # model is smaller than twice its largest vision tensor: its bytes do not
    # tell. The patch's own test uses a checkpoint where they do.)
    **{("llama4", scenario): {"base": MATERIALIZES, "patched": IDENTICAL}
       for scenario in COPY_SCENARIOS},
    **{("nemotron_vl", scenario): {"base": IDENTICAL, "patched": IDENTICAL}
       for scenario in COPY_SCENARIOS},
    **{("llama4 (engine)", scenario): {"base": IDENTICAL, "patched": IDENTICAL}
       for scenario in ("auto-tp2", "auto-tp2 (repeat)")},
    ("llama4 (engine)", "runai-0.15.7-dist-tp2"): {"base": CORRUPTED, "patched": IDENTICAL},
    ("nemotron_h", "layerwise-reload-x10"): {"base": CORRUPTED, "patched": IDENTICAL},
    # The same engine under vLLM's Ray executor, both workers on one Ray node
    # or one on each of two: a reused buffer breaks base on every rank, and
    # every rank of base holds the copies.
    **{("llama4 (engine)", scenario): {"base": IDENTICAL, "patched": IDENTICAL}
       for scenario in RAY_SCENARIOS if scenario.startswith("auto-")},
    **{("llama4 (engine)", f"runai-0.15.7-dist-tp2-{layout}"): {"base": CORRUPTED,
                                                                "patched": IDENTICAL}
       for layout in RAY_LAYOUTS},
    **{("llama4 (engine)", f"runai-0.17.0-copy-tp2-{layout}"): {"base": MATERIALIZES,
                                                                "patched": IDENTICAL}
       for layout in RAY_LAYOUTS},
    # On a GPU the engine's own loaders: a reused buffer (0.15.7, or 0.17.x's
    # views) breaks base; private copies load right on both trees.
    **{(model, scenario): {"base": IDENTICAL, "patched": IDENTICAL}
       for model in CUDA_MODELS
       for scenario in ("auto-tp1", "auto-tp1 (repeat)", *CUDA_COPY)},
    **{(model, scenario): {"base": CORRUPTED, "patched": IDENTICAL}
       for model in CUDA_MODELS
       for scenario in ("runai-0.15.7-reuse-tp1", *CUDA_VIEWS)},
    ("nemotron_h (engine)", "layerwise-reload-x10-tp1"): {"base": CORRUPTED, "patched": IDENTICAL},
}

# Where a load's host memory is judged: the copy-returning loader, whose every
# tensor is the load's own (scenarios starting with it: in-process and under
# Ray). A reused buffer is judged by its corruption.
HELD_BYTES_JUDGED = tuple(COPY_SCENARIOS)


def expected(model: str, scenario: str, tree: str) -> str:
    try:
        return EXPECTED[(model, scenario)][tree]
    except KeyError:
        raise KeyError(f"no expectation for {model} / {scenario} / {tree}") from None


def problems(model: str, scenario: str, tree: str, differing_per_rank: list[int],
             tokens_identical: bool | None = None,
             overheld_steps: int | list[int] | None = None) -> list[str]:
    """How a run falls short of its expectation; [] when it meets it.

    differing_per_rank: how many parameters differ from the reference on each
    rank (one entry for an in-process load). tokens_identical: None when
    tokens are no evidence. overheld_steps: the steps of the load that held
    more of the stream than allowed, where that was measured (a list: per
    rank)."""
    want = expected(model, scenario, tree)
    found = []
    if want == CORRUPTED:
        if not all(differing_per_rank):
            found.append(f"expected corrupted parameters on every rank, found "
                         f"{differing_per_rank} differing")
        if tokens_identical is True:
            found.append("expected other tokens than the reference, found the same")
        return found
    if any(differing_per_rank):
        found.append(f"expected every parameter identical, {differing_per_rank} differ")
    if tokens_identical is False:
        found.append("expected the reference's tokens, found others")
    if overheld_steps is not None and scenario.startswith(HELD_BYTES_JUDGED):
        per_rank = overheld_steps if isinstance(overheld_steps, list) else [overheld_steps]
        if want == MATERIALIZES and not all(per_rank):
            found.append("expected the load to hold more of the stream than allowed "
                         f"on every rank, steps that did: {per_rank}")
        if want == IDENTICAL and any(per_rank):
            found.append(f"expected the load to hold no more of the stream than allowed, "
                         f"steps that did: {per_rank}")
    elif want == MATERIALIZES:
        found.append("expected the load to hold the stream, but what it held was not weighed")
    return found
