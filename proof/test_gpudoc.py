"""docs/gpu.md is what proof/gpudoc.py renders from the committed results of
a GPU run, never typed by hand; and the page says what the run showed."""

import copy
import json

from lab import expectations
from proof import demo, gpudoc, harness


def results() -> dict:
    return json.loads(gpudoc.DOCS_JSON.read_text())


def test_the_page_is_generated_from_the_committed_results():
    assert gpudoc.DOCS.read_text() == gpudoc.render(results())


def missing_runs(r: dict) -> list[tuple[str, str, str]]:
    """The GPU plan's runs (harness.engine_plan("cuda")) that have no row."""
    rows = {(row["model"], row["scenario"], row["tree"]) for row in r["rows"]}
    return [(f"{model} (engine)", scenario, tree)
            for model, tree, _, scenario in harness.engine_plan("cuda")
            if (f"{model} (engine)", scenario, tree) not in rows]


def test_the_committed_run_is_a_gpu_run_that_proved_the_fork():
    """Judged by lab/expectations and the GPU plan, as the demo judges, not by
    the JSON's own `expected` column or `problems`."""
    r = results()
    assert r["device"] == "cuda" and r["machine"]["gpu"]["count"] >= 1
    assert missing_runs(r) == []
    assert demo.verdict(r["rows"], r["serve"]) == []
    assert r["serve"]["identical"] is True
    for row in r["rows"]:
        assert row["expected"] == expectations.expected(row["model"], row["scenario"],
                                                        row["tree"]), row


def test_results_without_their_base_rows_or_with_a_clean_base_are_refused():
    r = results()
    no_base = copy.deepcopy(r)
    no_base["rows"] = [row for row in r["rows"] if row["tree"] != "base"]
    assert missing_runs(no_base) != []
    clean = copy.deepcopy(r)
    for row in clean["rows"]:
        row["differing_per_rank"] = [[] for _ in row["differing_per_rank"]]
        row["expected"] = "identical"
    assert demo.verdict(clean["rows"], clean["serve"]) != []


def test_an_edit_of_the_results_shows_on_the_page():
    r = results()
    r["serve"]["identical"] = False
    assert "Identical: NO." in gpudoc.render(r)
