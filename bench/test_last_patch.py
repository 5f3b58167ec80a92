"""docs/benchmarks-last-patch.md is generated from the committed run of
`python -m bench.last_patch` (fork with and without its last patch, on CPU)."""

import json

from bench import last_patch


def test_the_page_is_generated_from_the_committed_results():
    results = json.loads(last_patch.DOCS.with_suffix(".json").read_text())
    assert last_patch.DOCS.read_text() == last_patch.render(results)
    # Both trees in every row, each ratio the fork over the fork without it.
    for key, row in results["rows"].items():
        assert set(row) - {"spread"} == {*last_patch.TREES, "ratio"}, key
        assert row["ratio"] == row["patched"] / row["without-last"], key
    assert {"TP=1 auto: load time (s)", "TP=1 runai_streamer: load time (s)"} <= set(
        results["rows"])
    assert any(key.startswith("TP=2 engine") for key in results["rows"])
