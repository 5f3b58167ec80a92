"""The patch workflow never loses work: `tree` and `export` under failures.

Crash consistency, in the spirit of git's and SQLite's own tests: a failure
(an exception, Ctrl-C, or SIGKILL) is injected at every step boundary of
`tree` and of `export` (tools.common.fault_point). Afterwards the tree and
patches/ are exactly as before or exactly as after, and the next plain run
succeeds and ends exactly as after. SIGKILL cannot be caught, so there the
next run must finish the job. Then one test per defect found by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import export, lint, record, series, switch, tree
from tools.common import ROOT, ForkError, git, load_pin, tree_lock
from tools.test_tooling import FIX_A, FIX_B, commit, make_pin, make_sdist

DRIVER = """
import json, signal, sys
from pathlib import Path
# The faults send SIGINT to this process, which must act on it like a user's
# Ctrl-C even when the test run was started with SIGINT ignored (nohup, &).
signal.signal(signal.SIGINT, signal.default_int_handler)
from tools import export, tree
from tools.common import main_wrapper

verb, workdir = sys.argv[1], Path(sys.argv[2])
def main():
    if verb == "tree":
        pin = json.loads((workdir / "pin.json").read_text())
        tree.materialize(workdir / "pkg-1.0.tar.gz", pin, workdir / "patches", workdir / "dest",
                         force="--force" in sys.argv)
    else:
        export.export(workdir / "dest", workdir / "patches", base="v1.0")
main_wrapper(main)
"""


def run_verb(verb: str, workdir: Path, fault: str = "", *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_FORK_TEST_FAULT": fault}
    return subprocess.run([sys.executable, "-c", DRIVER, verb, str(workdir), *extra], env=env,
                          text=True, capture_output=True, timeout=120)


def state(workdir: Path) -> dict:
    """Everything a developer would see of the tree and patches/."""
    dest = workdir / "dest"
    return {
        "HEAD": git(dest, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip(),
        "head": git(dest, "rev-parse", "HEAD").stdout.strip(),
        "main": git(dest, "rev-parse", "main").stdout.strip(),
        "status": git(dest, "status", "--porcelain", "--untracked-files=all").stdout,
        "kernel": (dest / "pkg" / "kernel.so").read_text(),
        "built-from": record.read(dest),
        "journal": switch.read_journal(dest),
        "patches": {p.name: p.read_text() for p in sorted((workdir / "patches").iterdir())},
    }


@pytest.fixture
def team(tmp_path):
    """A synthetic upstream and a series of two patches, in patches/ of a
    `template` directory: dest built from FIX_A alone (with an untracked
    kernel file, as the CPU kernels are), and patches/ at FIX_A + FIX_B, as
    after a pull. Also `exported`: a template where dest has a new commit
    that patches/ does not have yet."""
    sdist = make_sdist(tmp_path / "pkg-1.0.tar.gz")
    pin = make_pin(sdist)
    work = tmp_path / "work"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "series").write_text("")
    tree.materialize(sdist, pin, tmp_path / "empty", work)
    commit(work, **FIX_A)
    only_a = series.render(work, "v1.0")
    commit(work, **FIX_B)
    both = series.render(work, "v1.0")

    def template(name: str, files: dict[str, str]) -> Path:
        d = tmp_path / name
        (d / "patches").mkdir(parents=True)
        for file, text in files.items():
            (d / "patches" / file).write_text(text)
        (d / "patches" / "series").write_text(series.series_text(files))
        shutil.copy(sdist, d / sdist.name)
        (d / "pin.json").write_text(json.dumps(pin))
        tree.materialize(sdist, pin, d / "patches", d / "dest")
        (d / "dest" / "pkg" / "kernel.so").write_text("untracked kernel")
        return d

    pulled = template("pulled", only_a)
    for file, text in both.items():
        (pulled / "patches" / file).write_text(text)
    (pulled / "patches" / "series").write_text(series.series_text(both))
    exported = template("exported", only_a)
    commit(exported / "dest", **FIX_B)
    return {"sdist": sdist, "pin": pin, "pulled": pulled, "exported": exported, "tmp": tmp_path}


def expected_after(team, name: str, verb: str) -> dict:
    copy = team["tmp"] / f"{name}-after"
    shutil.copytree(team[name], copy)
    proc = run_verb(verb, copy)
    assert proc.returncode == 0, proc.stderr
    return state(copy)


def steps(team, name: str, verb: str) -> list[str]:
    copy = team["tmp"] / f"{name}-trace"
    shutil.copytree(team[name], copy)
    proc = run_verb(verb, copy, "trace")
    assert proc.returncode == 0, proc.stderr
    return [line.split(": ", 1)[1] for line in proc.stderr.splitlines()
            if line.startswith("fault point: ")]


@pytest.mark.parametrize("action", ["raise", "sigint", "sigkill"])
@pytest.mark.parametrize(("name", "verb"), [("pulled", "tree"), ("exported", "export")])
def test_a_failure_at_any_step_leaves_before_or_after(team, name, verb, action):
    before = state(team[name])
    after = expected_after(team, name, verb)
    assert before != after
    every_step = steps(team, name, verb)
    assert len(every_step) >= (9 if verb == "tree" else 5), every_step
    for step in every_step:
        copy = team["tmp"] / f"{name}-{step}-{action}"
        shutil.copytree(team[name], copy)
        proc = run_verb(verb, copy, f"{step}:{action}")
        assert proc.returncode != 0 or step == "done", (step, proc.stderr)
        if action == "sigint" and proc.returncode != 0:
            assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
        now = state(copy)
        if action != "sigkill":
            assert now in (before, after), f"{verb} failed at {step}: {now}"
        elif now not in (before, after):
            # Killed mid-switch or mid-export: the journal says how to finish.
            assert now["journal"] or (now["built-from"] or {}).get("pending"), (step, now)
        proc = run_verb(verb, copy)
        assert proc.returncode == 0, (step, proc.stderr)
        assert state(copy) == after, f"the run after a failure at {step} did not end as after"


# -- one test per defect found by hand (issue: "never lose work") ------------

def test_export_refuses_when_patches_moved_on_and_says_make_tree(team):
    pulled = team["pulled"]
    before = state(pulled)
    with pytest.raises(ForkError, match="the tree is out of date.*make tree"):
        export.export(pulled / "dest", pulled / "patches", base="v1.0")
    assert state(pulled) == before
    # The drift gate names the right side too.
    assert export.export(pulled / "dest", pulled / "patches", base="v1.0", check=True)
    assert "make tree" in export.refusal(pulled / "dest", pulled / "patches", "v1.0")
    # After `make tree`, nothing is left to export.
    tree.materialize(team["sdist"], team["pin"], pulled / "patches", pulled / "dest")
    assert export.export(pulled / "dest", pulled / "patches", base="v1.0") == []


def test_export_keeps_a_hand_written_patch_the_tree_does_not_have(team):
    d = team["exported"]
    new = d / "patches" / "Local-hand-written.patch"
    new.write_text((team["pulled"] / "patches" / "Bugfix-Test-it.patch").read_text())
    with (d / "patches" / "series").open("a") as f:
        f.write("Local-hand-written.patch\n")
    with pytest.raises(ForkError, match="has new commits too"):
        export.export(d / "dest", d / "patches", base="v1.0")
    assert new.exists()
    assert "Local-hand-written.patch" in (d / "patches" / "series").read_text()


def test_tree_refuses_when_main_has_unexported_work_and_head_is_detached(team):
    d = team["pulled"]
    commit(d / "dest", path="pkg/extra.py", text="X = 1\n", subject="[Misc] Local work")
    work = git(d / "dest", "rev-parse", "main").stdout.strip()
    git(d / "dest", "checkout", "-q", "--detach", "HEAD~1")
    with pytest.raises(ForkError, match="refs/heads/main .* not in patches/"):
        tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
    assert git(d / "dest", "rev-parse", "main").stdout.strip() == work


def test_force_discards_edits_and_an_interrupted_git_am(team):
    d = team["pulled"]
    (d / "dest" / "README.md").write_text("local edit\n")
    # A git am that stopped half-way, as a failed apply by hand leaves it.
    proc = git(d / "dest", "am", str(d / "patches" / "Bugfix-Use-the-right-value.patch"),
               check=False)
    assert proc.returncode != 0 and (d / "dest" / ".git" / "rebase-apply").exists()
    with pytest.raises(ForkError, match="uncommitted|git am"):
        tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
    tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest", force=True)
    assert not (d / "dest" / ".git" / "rebase-apply").exists()
    assert git(d / "dest", "status", "--porcelain", "--untracked-files=no").stdout == ""
    assert export.export(d / "dest", d / "patches", base="v1.0", check=True) == []
    assert (d / "dest" / "pkg" / "kernel.so").exists()


def test_a_second_run_while_one_holds_the_tree_is_refused_clearly(team):
    d = team["pulled"]
    with tree_lock(d / "dest"):
        with pytest.raises(ForkError, match=r"another `make tree` or `make export`.*pid \d+"):
            tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
        with pytest.raises(ForkError, match="another"):
            export.export(d / "dest", d / "patches", base="v1.0")


def test_a_run_started_while_another_is_inside_is_refused_and_corrupts_nothing(team):
    d = team["pulled"]
    after = expected_after(team, "pulled", "tree")
    release = team["tmp"] / "release"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_FORK_TEST_FAULT": "unpack:pause",
           "VLLM_FORK_TEST_RELEASE": str(release)}
    first = subprocess.Popen([sys.executable, "-c", DRIVER, "tree", str(d)], env=env,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The first run holds the tree's lock, paused half-way: the two overlap.
        assert first.stderr.readline().strip() == "paused at unpack"
        second = run_verb("tree", d)
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        release.touch()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0 and "Traceback" not in err, err
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert "another `make tree`" in second.stderr, second.stderr
    assert state(d) == after


def test_an_orphaned_base_worktree_is_made_again(team):
    d = team["pulled"]
    pin = {**team["pin"]}
    tree.ensure_base_worktree(pin, d / "dest", d / "base")
    shutil.rmtree(d / "dest")
    tree.materialize(team["sdist"], pin, d / "patches", d / "dest")
    tree.ensure_base_worktree(pin, d / "dest", d / "base")
    assert git(d / "base", "describe", "--tags").stdout.strip() == "v1.0"


def test_a_malformed_pin_is_a_message(tmp_path):
    pin = tmp_path / "pin.toml"
    pin.write_text("[upstream\nname = 'vllm'\n")
    with pytest.raises(ForkError, match="not valid TOML"):
        load_pin(pin)
    good = (ROOT / "pin.toml").read_text()
    sha = good.split('sdist_sha256 = "')[1][:64]
    pin.write_text(good.replace(sha, sha.upper()))
    with pytest.raises(ForkError, match="64 lowercase hex"):
        load_pin(pin)


def test_a_directory_in_place_of_a_download_is_a_message(tmp_path):
    from tools import fetch

    (tmp_path / "downloads" / "pkg-1.0.tar.gz").mkdir(parents=True)
    with pytest.raises(ForkError, match="is not a file"):
        fetch.pip_download("pkg==1.0", "0" * 64, "pkg-1.0.tar.gz", [], "python3", tmp_path)
    with pytest.raises(ForkError, match="not 64 lowercase hex"):
        fetch.verify(tmp_path, "A" * 64)


def test_lint_reports_odd_patches_instead_of_crashing(team):
    patches = team["pulled"] / "patches"
    text = (patches / "Bugfix-Use-the-right-value.patch").read_text()
    quoted = text.replace("diff --git a/pkg/__init__.py b/pkg/__init__.py",
                          'diff --git "a/pkg/caf\\303\\251.py" "b/pkg/caf\\303\\251.py"')
    (patches / "Bugfix-Use-the-right-value.patch").write_text(quoted)
    (patches / "Bugfix-Test-it.patch").write_bytes(b"From 0\nSubject: \xff\xfe\n")
    problems = lint.lint_series(patches, series_tests=None)
    assert any("touches pkg/café.py, which it does not declare" in p for p in problems), problems
    assert any("Bugfix-Test-it.patch: is not UTF-8" in p for p in problems), problems


def test_a_patch_that_does_not_apply_gives_no_advice_about_a_deleted_repository(team):
    d = team["pulled"]
    (d / "patches" / "series").write_text("Bugfix-Test-it.patch\nBugfix-Test-it.patch\n")
    with pytest.raises(ForkError) as err:
        tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
    assert "does not apply" in str(err.value)
    assert "--continue" not in str(err.value) and "hint:" not in str(err.value)


def test_a_bad_series_entry_is_reported_before_anything_is_applied(team, capsys):
    d = team["pulled"]
    before = state(d)
    with (d / "patches" / "series").open("a") as f:
        f.write("missing.patch\n")
    with pytest.raises(ForkError, match="lists missing.patch, which does not exist"):
        tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
    assert "applied" not in capsys.readouterr().out
    assert state(d)["head"] == before["head"]


def test_an_empty_series_says_so(team, capsys):
    d = team["tmp"] / "fresh"
    (d / "patches").mkdir(parents=True)
    (d / "patches" / "series").write_text("# nothing yet\n")
    commits = tree.materialize(team["sdist"], team["pin"], d / "patches", d / "dest")
    assert len(commits) == 1
    assert "series is empty" in capsys.readouterr().out


def test_sigint_is_held_only_while_switching(team):
    """The held-off window is short: Ctrl-C before the switch stops the run
    at once (exit 130) and changes nothing."""
    d = team["pulled"]
    before = state(d)
    proc = run_verb("tree", d, "unpack:sigint")
    assert proc.returncode == 130 and state(d) == before
