"""The PR bodies' Test Result numbers are read from the body and matched
against what the tests print (tools/bodies.py); no test runs here."""

from tools import bodies, lint
from tools.common import PATCHES, load_pin, read_series

BODY = """## Purpose

Why.

## Test Result

With this change: `6 passed`.

Against v0.21.0: `4 failed, 2 passed`. From a reused buffer
`43 of 43 differ`; with copies `21 of 53 steps held more of
the checkpoint`. The reference passes on both.

Fork-Touches: a.py
"""
PRINTED = {
    "patched": "....... 6 passed, 14 warnings in 30.0s",
    "base": "E AssertionError: 43 of 43 differ\nE AssertionError: 21 of 53 steps held more of "
            "the checkpoint than allowed\n4 failed, 2 passed, 9 warnings in 40.1s",
}


def test_the_spans_of_each_paragraph_belong_to_its_run():
    assert bodies.claims(BODY, "v0.21.0") == {
        "patched": ["6 passed"],
        "base": ["4 failed, 2 passed", "43 of 43 differ",
                 "21 of 53 steps held more of the checkpoint"]}


def test_a_body_that_matches_its_runs_has_no_problem():
    assert bodies.mismatches("p.patch", bodies.claims(BODY, "v0.21.0"), PRINTED) == []


def test_changing_one_number_in_a_body_is_named():
    changed = BODY.replace("`43 of 43 differ`", "`42 of 43 differ`")
    assert bodies.mismatches("p.patch", bodies.claims(changed, "v0.21.0"), PRINTED) == [
        "p.patch: Test Result says `42 of 43 differ` against the base, but the tests did "
        "not print it"]
    changed = BODY.replace("`6 passed`", "`7 passed`")
    assert bodies.mismatches("p.patch", bodies.claims(changed, "v0.21.0"), PRINTED) == [
        "p.patch: Test Result says `7 passed` with this change, but the tests did not print it"]


def test_every_patch_of_the_series_claims_results_on_both_trees():
    tag = load_pin()["upstream"]["tag"]
    for name in read_series():
        spans = bodies.claims(lint.parse(PATCHES / name).body, tag)
        assert spans["patched"] and spans["base"], name
