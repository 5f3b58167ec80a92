"""The table of expectations judges runs the same way wherever it is read."""

import pytest

from lab import expectations
from lab.expectations import problems


def test_every_tree_of_every_row_has_an_outcome():
    for (model, scenario), by_tree in expectations.EXPECTED.items():
        # A row across the trees is the fork's, judged against base's run.
        trees = {"patched"} if scenario in expectations.ACROSS_TREES else {"base", "patched"}
        assert set(by_tree) == trees, (model, scenario)
        assert set(by_tree.values()) <= {"identical", "corrupted", "materializes"}
    assert not {s for m, s in expectations.EXPECTED if m == "llama4 (engine)"} ^ set(
        expectations.ENGINE_SCENARIOS + expectations.CUDA_SCENARIOS
        + expectations.RAY_SCENARIOS + expectations.ACROSS_TREES)


def test_the_fork_must_load_what_base_loads_with_auto_on_every_rank():
    for scenario in ("auto-tp2", "auto-tp2-ray2nodes", "auto-tp1"):
        args = ("llama4 (engine)", expectations.across_trees(scenario), "patched")
        assert problems(*args, [0, 0], tokens_identical=True) == []
        assert problems(*args, [0, 1]) != []
    assert expectations.across_trees("auto-tp2-ray1node") in expectations.ACROSS_TREES


def test_a_fix_must_be_identical_on_every_rank_and_in_tokens():
    args = ("llama4 (engine)", "runai-0.15.7-dist-tp2", "patched")
    assert problems(*args, [0, 0], tokens_identical=True) == []
    assert problems(*args, [0, 0], tokens_identical=None) == []  # tokens no evidence
    assert problems(*args, [0, 3]) != []
    assert problems(*args, [0, 0], tokens_identical=False) != []


def test_the_bug_must_show_on_every_rank():
    args = ("llama4 (engine)", "runai-0.15.7-dist-tp2", "base")
    assert problems(*args, [16, 16]) == []
    assert problems(*args, [16, 0]) != []
    assert problems(*args, [16, 16], tokens_identical=True) != []


def test_materializing_and_streaming_are_judged_by_the_bytes_held():
    assert problems("llama4", "runai-0.17.0-copy", "base", [0], overheld_steps=21) == []
    assert problems("llama4", "runai-0.17.0-copy", "base", [0], overheld_steps=0) != []
    assert problems("llama4", "runai-0.17.0-copy", "patched", [0], overheld_steps=0) == []
    assert problems("llama4", "runai-0.17.0-copy", "patched", [0], overheld_steps=1) != []
    # Under Ray, per rank: base must hold the copies on every rank.
    ray = ("llama4 (engine)", "runai-0.17.0-copy-tp2-ray2nodes")
    assert problems(*ray, "base", [0, 0], overheld_steps=[40, 38]) == []
    assert problems(*ray, "base", [0, 0], overheld_steps=[40, 0]) != []
    assert problems(*ray, "patched", [0, 0], overheld_steps=[0, 0]) == []
    assert problems(*ray, "patched", [0, 0], overheld_steps=[0, 2]) != []
    # An expectation of holding the stream cannot be met unweighed.
    assert problems(*ray, "base", [0, 0]) != []
    # A reused buffer is judged by what it corrupts, not by its own size.
    assert problems("llama4", "runai-0.15.7-reuse", "patched", [0], overheld_steps=9) == []


def test_an_unknown_row_is_an_error_not_a_pass():
    with pytest.raises(KeyError, match="no expectation"):
        problems("llama4", "runai-9.9", "patched", [0])
