"""Each patch's "Test Result" must say what its tests print today.

    python3 -m tools.bodies

Runs every patch's test files (with env/upstream_tests.txt's deselects) on
the patched tree and, with the same test files, against the unchanged base
(tools/pytest_on.py). In the body's "## Test Result", a paragraph that begins
"With this change" speaks of the patched run and one that begins "Against
v<base>" of the base run: every `code span` in it must appear in that run's
output (whitespace aside), such as `6 passed` or `43 of 43 differ`. The
patched run must also pass. A body whose number no longer matches fails,
naming the patch, the span and the run; `make test` runs this.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tools import lint
from tools.common import (
    PATCHES,
    TREE,
    load_pin,
    main_wrapper,
    read_series,
    say,
)

SPAN = re.compile(r"`([^`]+)`")


def claims(body: str, base_tag: str) -> dict[str, list[str]]:
    """{"patched": spans, "base": spans} from a body's Test Result section."""
    section = re.split(r"^## Test Result\s*$", body, maxsplit=1, flags=re.M)
    found: dict[str, list[str]] = {"patched": [], "base": []}
    if len(section) < 2:
        return found
    text = re.split(r"^## ", section[1], maxsplit=1, flags=re.M)[0]
    for paragraph in text.split("\n\n"):
        start = paragraph.lstrip()
        tree = ("patched" if start.startswith("With this change")
                else "base" if start.startswith(f"Against {base_tag}") else None)
        if tree:
            found[tree] += [" ".join(span.split()) for span in SPAN.findall(paragraph)]
    return found


def mismatches(name: str, spans: dict[str, list[str]], outputs: dict[str, str]) -> list[str]:
    """Every span its run did not print, as one line each."""
    problems = []
    for tree, text in outputs.items():
        printed = " ".join(text.split())
        problems += [f"{name}: Test Result says `{span}` {WHERE[tree]}, but the tests "
                     f"did not print it" for span in spans[tree] if span not in printed]
    return problems


WHERE = {"patched": "with this change", "base": "against the base"}


def run_tests(tree: str, args: list[str]) -> tuple[int, str]:
    from tools.pytest_on import command

    cmd, env = command(tree, ["-q", "--tb=line", *args])
    proc = subprocess.run(cmd, cwd=TREE, env=env, capture_output=True, text=True,
                          errors="replace", timeout=1800)
    return proc.returncode, proc.stdout + proc.stderr


def check(patches: Path = PATCHES) -> list[str]:
    from tools.roll_judge import patch_files, test_args

    base_tag = load_pin()["upstream"]["tag"]
    problems = []
    for name in read_series(patches):
        patch = patches / name
        args = test_args(patch_files(patch))
        if not args:
            continue
        spans = claims(lint.parse(patch).body, base_tag)
        outputs = {}
        for tree in ("patched", "base"):
            code, outputs[tree] = run_tests(tree, args)
            summary = next((line for line in reversed(outputs[tree].splitlines())
                            if re.search(r"\d+ (passed|failed)", line)), "no summary")
            say(f"{name[:60]}: {tree}: {summary.strip('= ')}")
            if tree == "patched" and code != 0:
                problems.append(f"{name}: its tests fail with this change ({summary.strip('= ')})")
        problems += mismatches(name, spans, outputs)
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    say("every Test Result matches what its tests print, on both trees")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
