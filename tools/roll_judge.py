"""The roll's evidence on one patch: does it apply onto the new release, do
its tests fail there without the fix and pass with it, do they fail on the
current base, and what do the release's own tests of its files say about
the fork's fix. roll_verdict.decide() turns that into a verdict.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tools import lint
from tools.common import ROOT, CommandFailed, ForkError, git, read_series, run, say
from tools.roll_verdict import FAILED, NOT_RUN, PASSED, SKIPPED, Verdict, decide

UPSTREAM_TESTS = ROOT / "env" / "upstream_tests.txt"
PLUGINS = Path(__file__).resolve().parent / "pytest_plugins"
# A release whose CPU platform refuses to start without triton-cpu says this.
TRITON_CPU_CHECK = "requires Triton (triton-cpu)"
TEST_FILE = re.compile(r"(^|/)tests/(.*/)?test_[^/]*\.py$")
NEW_TEST = re.compile(r"^\+[ \t]*(?:async[ \t]+)?def (test_\w+)\(", re.MULTILINE)

# -- one patch ------------------------------------------------------------------

def patch_files(patch: Path) -> list[str]:
    return list(dict.fromkeys(lint.parse(patch).files))


def new_tests(patch: Path) -> list[str]:
    """The test functions the patch adds: the tests that judge its fix."""
    return sorted(set(NEW_TEST.findall(patch.read_text())))


def test_args(files: list[str], listed: Path = UPSTREAM_TESTS) -> list[str]:
    """The patch's test files plus the deselects env/upstream_tests.txt has for them."""
    from tools.pytest_on import series_test_args

    tests = [f for f in files if TEST_FILE.search(f)]
    extra = []
    args = series_test_args(listed) if listed.exists() else []
    for i, arg in enumerate(args):
        if arg == "--deselect" and args[i + 1].split("::")[0] in tests:
            extra += [arg, args[i + 1]]
    return tests + extra


# What a test says when it needs vLLM's compiled kernels and the tree has none.
NEEDS_KERNELS = re.compile(r"vllm\._C|_C_AVX|torch\.ops\._C|_custom_ops|"
                           r"has no attribute '_C'|no kernel image")


def needs_triton_cpu(repo: Path) -> bool:
    """Whether the release's CPU platform stops without triton-cpu."""
    cpu = repo / "vllm" / "platforms" / "cpu.py"
    return cpu.exists() and TRITON_CPU_CHECK in cpu.read_text()


def run_tests(repo: Path, python: str, args: list[str],
              kernels: bool = True, lift_triton_check: bool = False) -> tuple[dict, dict]:
    """pytest in repo (imported from repo); {test name: outcome}, {name: why it
    failed, was skipped or did not run}. A test that errs on setup or whose
    module does not import did not run; so, without kernels, did a test whose
    failure names them. lift_triton_check: run with the plugin that lifts the
    platform's triton-cpu check (pytest_plugins/lift_triton_check.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
        plugins = []
        if lift_triton_check:
            env["PYTHONPATH"] += f":{PLUGINS}"
            plugins = ["-p", "lift_triton_check"]
        cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins,
               f"--junitxml={report}", *args]
        try:
            run(cmd, f"pytest in {repo}", env=env, cwd=repo, timeout=1800)
        except CommandFailed as failed:
            # Failing tests are a verdict, not an error; no report is.
            if failed.returncode is None or not report.exists():
                raise ForkError(f"pytest did not run in {repo}: {failed}") from None
        outcomes, errors = {}, {}
        for case in ET.parse(report).iter("testcase"):
            name = case.get("name", "")
            outcomes[name], errors[name] = case_outcome(case, kernels)
            if not errors[name]:
                del errors[name]
        return outcomes, errors


def case_outcome(case: ET.Element, kernels: bool) -> tuple[str, str]:
    """(outcome, why) of one junit testcase."""
    failure = next((c for c in case if c.tag == "failure"), None)
    error = next((c for c in case if c.tag == "error"), None)
    skipped = next((c for c in case if c.tag == "skipped"), None)
    if error is not None and "teardown" in (error.get("message") or ""):
        error = None  # it ran; only cleaning up after it failed
    element = next((e for e in (failure, error, skipped) if e is not None), None)
    if element is None:
        return PASSED, ""
    message = element.get("message") or ""
    if message == "collection failure" and element.text:
        # The module did not import: say why (its last line).
        lines = [line for line in element.text.splitlines() if line.strip()]
        message = f"collection failure: {lines[-1].lstrip('E ').strip()}"
    message = message[:300]
    if element is skipped:
        return SKIPPED, message
    if element is error:
        return NOT_RUN, message
    if not kernels and NEEDS_KERNELS.search(f"{message}\n{failure.text}"):
        return NOT_RUN, f"needs the CPU kernels, and this release has none: {message}"
    return FAILED, message


def outcomes_of(names: list[str], outcomes: dict) -> dict[str, str]:
    """Outcome per new test; a parametrized test passes only if every case
    ran and none failed."""
    result = {}
    for name in names:
        cases = [o for n, o in outcomes.items() if n == name or n.startswith(name + "[")]
        result[name] = (NOT_RUN if not cases else FAILED if FAILED in cases
                        else NOT_RUN if NOT_RUN in cases
                        else SKIPPED if set(cases) == {SKIPPED} else PASSED)
    return result


def reasons_for(names: list[str], outcomes: dict, errors: dict,
                wanted: tuple[str, ...]) -> dict[str, str]:
    """{test: why} for the named tests whose outcome is in `wanted`: the first
    case's message, or, for a test that was never collected, the module's."""
    summary = outcomes_of(names, outcomes)
    modules = [e for n, e in errors.items() if e.startswith("collection failure")]
    found = {}
    for name in names:
        if summary[name] not in wanted:
            continue
        cases = [e for n, e in errors.items() if n == name or n.startswith(name + "[")]
        found[name] = (cases or modules or ["not collected"])[0]
    return found


def try_am(repo: Path, patch: Path) -> tuple[str, list[str]]:
    """Apply a patch as a commit: clean, 3-way, or conflict with the hunks that
    did not apply (file:line) and the files the 3-way merge left in conflict."""
    am = ["am", "-k", "--committer-date-is-author-date"]
    proc = git(repo, *am, str(patch), check=False)
    if proc.returncode == 0:
        return "clean", []
    hunks = re.findall(r"patch failed: (\S+:\d+)", proc.stdout + proc.stderr)
    git(repo, "am", "--abort", check=False)
    proc = git(repo, *am, "-3", str(patch), check=False)
    if proc.returncode == 0:
        return "3-way", []
    output = proc.stdout + proc.stderr
    git(repo, "am", "--abort", check=False)
    files = re.findall(r"CONFLICT \([^)]*\): .*? in (\S+)", output)
    found = [f"hunk {h}" for h in hunks] + [f"conflict in {f}" for f in files]
    return "conflict", found or [line for line in output.splitlines()
                                 if line.startswith("error:")][:5]


def judge(repo: Path, patch: Path, python: str, current: tuple[Path, str] | None = None,
          listed: Path = UPSTREAM_TESTS, kernels: bool = True) -> Verdict:
    """The verdict on one patch, on top of repo's HEAD; HEAD moves on only if
    the patch is carried. `current` is (tree, python) of the base the series
    is pinned to now, where tests that pass without the fix must fail."""
    v = Verdict(patch.name, new_tests=new_tests(patch))
    lift = needs_triton_cpu(repo)
    if lift:
        v.lifted = ("the release's CPU platform needs triton-cpu, which no package registry "
                    "serves: its tests ran with that check lifted (they build the model and "
                    "call load_weights; no Triton kernel runs)")
    files = patch_files(patch)
    tests = [f for f in files if TEST_FILE.search(f)]
    args = test_args(files, listed)
    start = git(repo, "rev-parse", "HEAD").stdout.strip()
    v.applies, v.conflict = try_am(repo, patch)
    applied = git(repo, "rev-parse", "HEAD").stdout.strip() if v.applies != "conflict" else ""
    git(repo, "reset", "-q", "--hard", start)

    # The patch's test files alone, on the new base and the patches carried so far.
    v.tests_from = tests_alone(repo, patch, tests, applied)
    if v.tests_from and v.new_tests:
        say(f"{patch.name}: its tests without the fix")
        outcomes, errors = run_tests(repo, python, args, kernels, lift)
        v.without_fix = outcomes_of(v.new_tests, outcomes)
        v.errors_without_fix = reasons_for(v.new_tests, outcomes, errors, (FAILED,))
        v.skipped = reasons_for(v.new_tests, outcomes, errors, (SKIPPED, NOT_RUN))
    git(repo, "reset", "-q", "--hard", start)
    if tests:
        git(repo, "clean", "-fq", "--", *tests)

    judged = [t for t, o in v.without_fix.items() if o in (PASSED, FAILED)]
    if judged and current:
        # Where they must fail if they pass here; and where a test that fails
        # here must fail too, or it no longer fits the new release.
        say(f"{patch.name}: the same tests on the current base")
        v.on_current_base = outcomes_of(v.new_tests, current_base_outcomes(
            patch, tests, args, *current))
    if judged and applied and not all(v.without_fix[t] == PASSED for t in judged):
        git(repo, "reset", "-q", "--hard", applied)
        say(f"{patch.name}: its tests with the fix")
        outcomes, errors = run_tests(repo, python, args, kernels, lift)
        v.with_fix = outcomes_of(v.new_tests, outcomes)
        v.errors = reasons_for(v.new_tests, outcomes, errors, (FAILED, NOT_RUN))
    decide(v)
    git(repo, "reset", "-q", "--hard", applied if v.verdict == "carried" else start)
    return v



def tests_alone(repo: Path, patch: Path, tests: list[str], applied: str) -> str:
    """Put the patch's test files, and nothing else of it, into repo's work
    tree. Say how: from the applied patch, by a 3-way merge of its test hunks,
    or (when upstream reworked the same files) as the fork's whole files."""
    if not tests:
        return ""
    if applied:
        git(repo, "checkout", applied, "--", *tests)
        return "the patch"
    if git(repo, "apply", "--3way", *[f"--include={t}" for t in tests], str(patch),
           check=False).returncode == 0 and not git(repo, "diff", "--name-only",
                                                    "--diff-filter=U").stdout.strip():
        return "3-way merge"
    git(repo, "reset", "-q", "--hard")
    post_images = post_image_blobs(patch)
    for test in tests:
        blob = git(repo, "cat-file", "blob", post_images[test], check=False)
        if blob.returncode != 0:
            return ""
        (repo / test).parent.mkdir(parents=True, exist_ok=True)
        (repo / test).write_text(blob.stdout)
    return "whole files"


def post_image_blobs(patch: Path) -> dict[str, str]:
    """{path: blob} of every file as the patch leaves it (format-patch --full-index)."""
    blobs, current = {}, None
    for line in patch.read_text().splitlines():
        header = lint.DIFF_HEADER.match(line)
        if header:
            current = lint.unquote_path(header.group(2))
        elif current and line.startswith("index "):
            blobs[current] = line.split()[1].split("..")[1]
    return blobs


@contextlib.contextmanager
def scratch_worktree(tree: Path):
    """A worktree of tree's HEAD, with what tree has beside its commits (the
    CPU kernels, _version.py) linked in; removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / tree.name
        git(tree, "worktree", "add", "-q", "--detach", str(repo), "HEAD")
        try:
            extra = git(tree, "ls-files", "--others", "--ignored", "--exclude-standard").stdout
            for name in extra.split():
                if name.endswith((".so", "_version.py")) and (tree / name).is_file():
                    os.link(tree / name, repo / name)
            yield repo
        finally:
            git(tree, "worktree", "remove", "--force", str(repo), check=False)


def current_base_outcomes(patch: Path, tests: list[str], args: list[str], base: Path,
                          python: str) -> dict:
    """The patch's tests (its test files only) on the base the series is pinned to."""
    with scratch_worktree(base) as repo:
        if git(repo, "apply", *[f"--include={t}" for t in tests], str(patch),
               check=False).returncode != 0:
            raise ForkError(f"{patch.name}: its tests do not apply to the current base")
        return run_tests(repo, python, args)[0]


def second_opinion(v: Verdict, patch: Path, release: Path, tag: str, fork: Path, python: str,
                   listed: Path = UPSTREAM_TESTS) -> None:
    """Upstream's own tests of the files the patch touches, as the new release
    has them, run against the fork's fix (fork's HEAD, this venv). They may
    fail for reasons outside the patch: the report quotes each assertion."""
    files = {}
    for name in patch_files(patch):
        if TEST_FILE.search(name):
            text = git(release, "show", f"{tag}:{name}", check=False)
            if text.returncode == 0:
                files[name] = text.stdout
    v.upstream_tests = sorted(files)
    if not files:
        return
    say(f"{patch.name}: {tag}'s own tests of its files, against the fork's fix")
    with scratch_worktree(fork) as repo:
        for name, text in files.items():
            (repo / name).write_text(text)
        outcomes, errors = run_tests(repo, python, test_args(list(files), listed))
    v.upstream_on_fork = outcomes
    v.upstream_on_fork_errors = {k: e for k, e in errors.items() if outcomes[k] == "failed"}


def roll_series(repo: Path, patches: Path, python: str, current: tuple[Path, str] | None,
                listed: Path = UPSTREAM_TESTS, history: list[Path] = (),
                kernels: bool = True) -> list[Verdict]:
    """Judge every patch of the series in order. `history`: repositories that
    hold the series' current base and commits; their objects let git's 3-way
    merge find each patch's pre-image."""
    for number, source in enumerate([*history, *([current[0]] if current else [])]):
        git(repo, "fetch", "-q", "--no-tags", str(source), f"+HEAD:refs/roll/history-{number}")
    verdicts = []
    names = read_series(patches)
    start = time.monotonic()
    for number, name in enumerate(names, 1):
        say(f"[{number}/{len(names)}] {name} ({time.monotonic() - start:.0f} s so far)")
        verdicts.append(judge(repo, patches / name, python, current, listed, kernels))
        say(f"{name}: {verdicts[-1].verdict}")
    return verdicts
