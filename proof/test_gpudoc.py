"""docs/gpu.md is what proof/gpudoc.py renders from the committed results of
a GPU run, never typed by hand; and the page says what the run showed."""

import json

from proof import gpudoc


def results() -> dict:
    return json.loads(gpudoc.DOCS_JSON.read_text())


def test_the_page_is_generated_from_the_committed_results():
    assert gpudoc.DOCS.read_text() == gpudoc.render(results())


def test_the_committed_run_is_a_gpu_run_that_proved_the_fork():
    r = results()
    assert r["device"] == "cuda" and r["machine"]["gpu"]["count"] >= 1
    assert r["problems"] == [] and r["serve"]["identical"] is True
    for row in r["rows"]:
        if row["tree"] == "patched":
            assert all(not names for names in row["differing_per_rank"]), row["scenario"]
            assert row["tokens_identical"] is True
        elif row["expected"] == "corrupted":
            assert all(row["differing_per_rank"]), row["scenario"]


def test_an_edit_of_the_results_shows_on_the_page():
    r = results()
    r["serve"]["identical"] = False
    assert "Identical: NO." in gpudoc.render(r)
