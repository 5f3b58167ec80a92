"""`make roll` on synthetic tiny upstreams: every verdict, and a failed roll
that changes nothing. Each patch carries a test that fails without its fix;
release 2.0 fixed one bug its own way, changed the code under another patch,
and changed what a third one relies on."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from dataclasses import asdict
from pathlib import Path

import pytest

from tools import (
    roll_judge,
    roll_proposal,
    roll_release,
    roll_upstream,
    roll_verdict,
    series,
    tree,
)
from tools.common import ForkError, git
from tools.test_tooling import commit, make_pin

V1 = {
    "pkg/__init__.py": "",
    "pkg/a.py": "def a():\n    return 0  # bug: should be 1\n",
    "pkg/b.py": "def b():\n    return 'B'  # bug: should be 'b'\n",
    "pkg/c.py": "def c():\n    return -1  # bug: should be 1\n",
    "pkg/d.py": "FACTOR = 2\n\n\n\n\n\n\ndef d():\n    return 1  # bug: FACTOR * d() should be 4\n",
    "tests/test_pkg.py": "def test_import():\n    import pkg  # noqa: F401\n",
}
V2 = {
    **V1,
    # Fixed upstream, differently from the patch.
    "pkg/a.py": "ONE = 1\n\n\ndef a():\n    return ONE\n",
    # Reworked where the patch edits: it no longer applies, the bug is still there.
    "pkg/b.py": "def b(upper=True):\n    return 'B' if upper else 'b'\n",
    # What the fix relies on changed: it applies, but its test fails.
    "pkg/d.py": "FACTOR = 3\n\n\n\n\n\n\ndef d():\n    return 1  # bug: FACTOR * d() should be 4\n",
}
FIXES = [
    ("pkg/a.py", "def a():\n    return 1\n", "tests/test_a.py",
     "from pkg.a import a\n\n\ndef test_a_is_one():\n    assert a() == 1\n", "[Bugfix] Fix a"),
    ("pkg/b.py", "def b():\n    return 'b'\n", "tests/test_b.py",
     "from pkg.b import b\n\n\ndef test_b_is_lower():\n    assert b() == 'b'\n", "[Bugfix] Fix b"),
    ("pkg/c.py", "def c():\n    return 1\n", "tests/test_c.py",
     "from pkg.c import c\n\n\ndef test_c_is_one():\n    assert c() == 1\n", "[Bugfix] Fix c"),
    ("pkg/d.py", V1["pkg/d.py"].replace("return 1  # bug: FACTOR * d() should be 4", "return 2"),
     "tests/test_d.py", "from pkg.d import FACTOR, d\n\n\ndef test_d_times_factor():\n"
     "    assert FACTOR * d() == 4\n", "[Bugfix] Fix d"),
]


def sdist(path: Path, version: str, files: dict) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**files, "PKG-INFO": "Metadata-Version: 2.1\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"pkg-{version}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def export_fixes(work: Path, fixes: list, base: str, patches: Path) -> Path:
    """One commit per fix (its code and, if any, its test file) on work, exported
    as a series into patches."""
    for path, text, test, test_text, subject in fixes:
        if test:
            (work / test).parent.mkdir(exist_ok=True)
            (work / test).write_text(test_text)
        commit(work, path=path, text=text, subject=subject,
               touches=[path] + ([test] if test else []))
        if test:  # commit() stages only `path`: amend the test file in.
            git(work, "add", test)
            git(work, "commit", "-q", "--amend", "--no-edit")
    patches.mkdir()
    rendered = series.render(work, base)
    for name, text in rendered.items():
        (patches / name).write_text(text)
    (patches / "series").write_text(series.series_text(rendered))
    return patches


@pytest.fixture
def upstreams(tmp_path):
    """v1.0 and v2.0 as base repositories, and a series of four fixes on v1.0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "series").write_text("")
    repos = {}
    for version, files in (("1.0", V1), ("2.0", V2)):
        archive = sdist(tmp_path / f"pkg-{version}.tar.gz", version, files)
        pin = make_pin(archive)
        pin["upstream"].update(version=version, tag=f"v{version}")
        repos[version] = tmp_path / f"v{version}"
        tree.materialize(archive, pin, empty, repos[version])
    work = tmp_path / "work"
    tree.materialize(tmp_path / "pkg-1.0.tar.gz", make_pin(tmp_path / "pkg-1.0.tar.gz"), empty,
                     work)
    patches = export_fixes(work, FIXES, "v1.0", tmp_path / "patches")
    listed = tmp_path / "upstream_tests.txt"
    listed.write_text("".join(f"{f[2]}\n" for f in FIXES))
    return {"repos": repos, "patches": patches, "listed": listed, "tmp": tmp_path, "fork": work}


def run_roll(upstreams, onto: str) -> list[roll_verdict.Verdict]:
    repo = upstreams["repos"][onto]
    current = (upstreams["repos"]["1.0"], sys.executable)
    return roll_judge.roll_series(repo, upstreams["patches"], sys.executable, current,
                            upstreams["listed"])


def test_every_verdict_on_a_newer_release(upstreams):
    verdicts = {v.patch.split("-", 2)[2].removesuffix(".patch"): v
                for v in run_roll(upstreams, "2.0")}
    a, b, c, d = verdicts["a"], verdicts["b"], verdicts["c"], verdicts["d"]

    assert a.verdict == "upstreamed"
    assert a.without_fix == {"test_a_is_one": "passed"}
    assert a.on_current_base == {"test_a_is_one": "failed"}  # the bug is real on 1.0

    assert b.verdict == "conflict" and b.applies == "conflict"
    assert any("pkg/b.py" in where for where in b.conflict), b.conflict

    assert c.verdict == "carried" and c.applies == "clean"
    assert c.without_fix == {"test_c_is_one": "failed"}
    assert c.with_fix == {"test_c_is_one": "passed"}

    assert d.verdict == "broken" and d.applies == "clean"
    assert d.with_fix == {"test_d_times_factor": "failed"}
    assert "assert" in d.errors["test_d_times_factor"]


def test_rolling_onto_the_same_release_carries_every_patch_byte_identical(upstreams, tmp_path):
    verdicts = run_roll(upstreams, "1.0")
    assert [v.verdict for v in verdicts] == ["carried"] * 4
    root = fake_root(tmp_path / "root", upstreams)
    roll_proposal.propose(tmp_path / "w", upstreams["repos"]["1.0"], {"upstream": {"tag": "v1.0"}},
                 verdicts, {"requirements_in": "x\n", "lock": "x==1\n"}, "1.0", root)
    assert [v.refreshed for v in verdicts] == ["byte-identical"] * 4


def fake_root(root: Path, upstreams) -> Path:
    (root / "env").mkdir(parents=True)
    (root / "patches").mkdir()
    for p in upstreams["patches"].iterdir():
        (root / "patches" / p.name).write_bytes(p.read_bytes())
    (root / "pin.toml").write_text('[upstream]\nversion = "1.0"\ntag = "v1.0"\n')
    (root / "env" / "requirements.in").write_text("old\n")
    (root / "env" / "requirements.lock").write_text("old==1\n")
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def propose_onto_2(upstreams, tmp_path, verdicts, series_of=None) -> Path:
    """A repository root holding the series (or only the patches named in
    series_of), and the roll's proposal for it under tmp_path/w."""
    root = fake_root(tmp_path / "root", upstreams)
    if series_of is not None:
        kept = [v.patch for v in verdicts if v.patch.split("-", 2)[2][0] in series_of]
        for path in (root / "patches").glob("*.patch"):
            if path.name not in kept:
                path.unlink()
        (root / "patches" / "series").write_text("".join(f"{name}\n" for name in kept))
        verdicts = [v for v in verdicts if v.patch in kept]
    roll_proposal.propose(tmp_path / "w", upstreams["repos"]["2.0"],
                          {"upstream": {"version": "2.0", "tag": "v2.0"}}, verdicts,
                          {"requirements_in": "new\n", "lock": "new==2\n"}, "2.0", root)
    return root


@pytest.mark.parametrize("verdict", ["conflict", "broken", "untested", ""])
def test_adoption_refuses_every_verdict_but_carried_and_upstreamed(upstreams, tmp_path,
                                                                     verdict):
    verdicts = run_roll(upstreams, "2.0")
    root = propose_onto_2(upstreams, tmp_path, verdicts, series_of="ac")
    before = snapshot(root)
    carried = next(v for v in verdicts if v.verdict == "carried")
    carried.verdict = verdict
    with pytest.raises(ForkError, match=rf"not adopting, nothing was changed: "
                                        rf"Bugfix-Fix-c.patch is {verdict or 'not judged'}"):
        roll_proposal.adopt(tmp_path / "w", verdicts, root)
    assert snapshot(root) == before


def test_adoption_refuses_a_series_patch_without_a_verdict(upstreams, tmp_path):
    verdicts = run_roll(upstreams, "2.0")
    root = propose_onto_2(upstreams, tmp_path, verdicts, series_of="ac")
    before = snapshot(root)
    good = [v for v in verdicts if v.verdict == "upstreamed"]  # c is left out
    with pytest.raises(ForkError, match="Bugfix-Fix-c.patch has no verdict"):
        roll_proposal.adopt(tmp_path / "w", good, root)
    assert snapshot(root) == before


def test_a_failed_roll_changes_nothing_and_a_good_one_is_adopted(upstreams, tmp_path):
    verdicts = run_roll(upstreams, "2.0")
    root = propose_onto_2(upstreams, tmp_path, verdicts)
    before = fake_root(tmp_path / "untouched", upstreams)
    assert snapshot(root) == snapshot(before)  # proposing writes only under the roll's directory
    with pytest.raises(ForkError, match="Fix-b.patch is conflict: .*Fix-d.patch is broken"):
        roll_proposal.adopt(tmp_path / "w", verdicts, root)
    assert snapshot(root) == snapshot(before)

    # A series whose every patch is carried or upstreamed is adopted whole;
    # the upstreamed patch moves, nothing is lost.
    root = propose_onto_2(upstreams, tmp_path / "good", verdicts, series_of="ac")
    roll_proposal.adopt(tmp_path / "good" / "w", verdicts, root)
    assert (root / "patches" / "series").read_text() == "Bugfix-Fix-c.patch\n"
    assert (root / "pin.toml").read_text() == '[upstream]\nversion = "2.0"\ntag = "v2.0"\n'
    upstreamed = (root / "patches" / "upstreamed" / "Bugfix-Fix-a.patch").read_text()
    assert "\nApplied-Upstream: 2.0, shown by its tests (make roll)\n" in upstreamed
    assert not (root / "patches" / "Bugfix-Fix-a.patch").exists()
    assert (root / "patches" / "Bugfix-Fix-c.patch").exists()
    assert (root / "env" / "requirements.lock").read_text() == "new==2\n"
    assert json.loads(json.dumps([asdict(v) for v in verdicts]))  # the report serializes


def test_the_proposed_cuda_pin_takes_the_platform_from_the_wheels_name():
    assert roll_release.wheel_platform("vllm-0.21.0-1-cp38-abi3-manylinux_2_24_x86_64.whl") \
        == "manylinux_2_24_x86_64"
    assert roll_release.wheel_platform("vllm-0.22.0-cp38-abi3-manylinux_2_28_x86_64."
                               "manylinux_2_31_x86_64.whl") == "manylinux_2_28_x86_64"


# -- verdicts that used to mislead (each was wrong in an earlier roll.py) -----

# Release 3.0 fixed nothing; each patch is judged against 2.0's code for c.
V3 = {**V1, "tests/test_e.py": "from pkg.c import c\n\n\ndef test_c_is_positive():\n"
      "    assert c() >= -1\n"}
MISLEADING = [
    # Edits an existing test (stricter), adds no test function, and that test
    # fails with the fix: nothing judges the fix.
    ("pkg/c.py", "def c():\n    return 0\n", "tests/test_e.py",
     "from pkg.c import c\n\n\ndef test_c_is_positive():\n    assert c() > 0\n",
     "[Bugfix] Tighten e"),
    # Touches no test file, applies cleanly.
    ("pkg/a.py", "def a():\n    return 1\n", None, None, "[Bugfix] Fix a without a test"),
    # Its test passes on the new release without the fix, and on the current
    # base too: it tests nothing.
    ("pkg/d.py", V1["pkg/d.py"].replace("return 1  # bug", "return 1  # fine"),
     "tests/test_g.py", "def test_always():\n    assert True\n", "[Bugfix] Fix g"),
]


@pytest.fixture
def misleading(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "series").write_text("")
    archive = sdist(tmp_path / "pkg-3.0.tar.gz", "3.0", V3)
    pin = make_pin(archive)
    pin["upstream"].update(version="3.0", tag="v3.0")
    work = tmp_path / "work"
    tree.materialize(archive, pin, empty, work)
    new, current = tmp_path / "new", tmp_path / "current"
    tree.materialize(archive, pin, empty, new)
    tree.materialize(archive, pin, empty, current)
    patches = export_fixes(work, MISLEADING, "v3.0", tmp_path / "patches")
    listed = tmp_path / "upstream_tests.txt"
    listed.write_text("tests/test_e.py\ntests/test_g.py\n")
    verdicts = roll_judge.roll_series(new, patches, sys.executable, (current, sys.executable),
                                      listed, history=[work])
    return {v.patch.split("-", 1)[1].removesuffix(".patch"): v for v in verdicts}


def test_a_patch_that_adds_no_test_function_is_untested_not_carried(misleading):
    e = misleading["Tighten-e"]
    assert e.new_tests == [] and e.applies == "clean"
    assert e.verdict == "untested" and "adds no test function" in e.note


def test_a_clean_patch_without_a_test_file_is_untested_not_conflict(misleading):
    f = misleading["Fix-a-without-a-test"]
    assert f.applies == "clean" and f.tests_from == ""
    assert f.verdict == "untested" and "touches no test file" in f.note


def test_tests_that_pass_on_both_bases_do_not_make_a_patch_upstreamed(misleading):
    g = misleading["Fix-g"]
    assert g.without_fix == {"test_always": "passed"}
    assert g.on_current_base == {"test_always": "passed"}
    assert g.verdict == "untested" and "prove nothing" in g.note


def test_a_reference_test_that_passes_on_both_bases_does_not_hide_an_upstream_fix():
    # The bug's test fails on the current base and passes on the new release;
    # the patch's reference test passes everywhere and is named as no evidence.
    v = roll_verdict.Verdict(patch="p.patch", applies="conflict", tests_from="whole files",
                     new_tests=["test_bug", "test_reference"],
                     without_fix={"test_bug": "passed", "test_reference": "passed"},
                     on_current_base={"test_bug": "failed", "test_reference": "passed"})
    roll_verdict.decide(v)
    assert v.verdict == "upstreamed"
    assert "test_bug fail on the current base" in v.note
    assert "test_reference pass on both and judge nothing" in v.note
    v.on_current_base = {"test_bug": "passed", "test_reference": "passed"}
    roll_verdict.decide(v)
    assert v.verdict == "untested" and "prove nothing" in v.note


def test_every_verdict_says_what_it_rests_on(upstreams):
    verdicts = run_roll(upstreams, "2.0")
    assert all(v.note for v in verdicts), verdicts
    carried = next(v for v in verdicts if v.verdict == "carried")
    assert "test_c_is_one" in carried.note and "with it, all pass" in carried.note


# -- the roll's environment and downloads -------------------------------------

def test_torchs_companions_are_pinned_to_its_release():
    reqs = ['torchaudio; platform_machine != "s390x"', "torchvision", "transformers>=4.56"]
    assert roll_release.companions(reqs, "2.11.0") == ([
        'torchaudio===2.11.0; platform_machine != "s390x"', "torchvision===0.26.0",
        "transformers>=4.56"], [])
    assert roll_release.companions(["torchvision"], "2.9.1")[0] == ["torchvision===0.24.1"]
    # torchaudio's last release is 2.11: a newer torch has none that loads.
    on_registry = {("torchaudio", "2.11.1"), ("torchvision", "0.29.0")}
    reqs, notes = roll_release.companions(reqs, "2.14.0", lambda name, v: (name, v) in on_registry)
    assert reqs == ["torchvision===0.29.0", "transformers>=4.56"]
    assert notes == ["torchaudio left out: no torchaudio 2.14.0 for torch 2.14.0"]


def test_a_release_without_cpu_kernels_takes_torch_from_its_requirements(tmp_path):
    req = tmp_path / "requirements"
    req.mkdir()
    (req / "common.txt").write_text("regex\ntransformers >= 4.56.0  # comment\n")
    (req / "cpu.txt").write_text(
        "--extra-index-url https://example.invalid/whl/cpu\n-r common.txt\n"
        'torch==2.12.0+cpu; platform_machine == "x86_64"\n'
        'torch==2.12.0; platform_system == "Darwin"\ntorchaudio\n'
        "triton @ https://example.invalid/triton-3.8.0+cpu.whl ; python_version == '3.11'\n")
    torch, others = roll_release.sdist_cpu_requirements(tmp_path)
    assert torch == "2.12.0"
    assert others == ["regex", "transformers >= 4.56.0", "torchaudio"]


def download_sdist(downloads: Path) -> Path:
    return roll_release.cached_download(downloads, "vllm-9.9.9.tar.gz", "vllm==9.9.9", "py", [],
                                        "sdist")


def test_a_cached_download_that_changed_is_refused_with_both_hashes(tmp_path, monkeypatch):
    calls = []

    def download(requirement, dest, python, args):
        calls.append(requirement)
        (dest / "vllm-9.9.9.tar.gz").write_bytes(b"the sdist")
        return dest / "vllm-9.9.9.tar.gz"

    monkeypatch.setattr(roll_release, "pip_download_unpinned", download)
    first = download_sdist(tmp_path)
    again = download_sdist(tmp_path)
    assert first == again and len(calls) == 1
    first.write_bytes(b"something else")
    with pytest.raises(ForkError, match=r"changed since it was downloaded: sha256 [0-9a-f]{64}, "
                                        r"recorded [0-9a-f]{64}"):
        download_sdist(tmp_path)
    # A file cached without a recorded hash (an older roll) is fetched again.
    (tmp_path / "vllm-9.9.9.tar.gz.sha256").unlink()
    download_sdist(tmp_path)
    assert len(calls) == 2


def test_without_kernels_a_test_that_needs_them_did_not_run_and_says_why(tmp_path):
    (tmp_path / "test_k.py").write_text(
        "def test_needs_kernels():\n    raise ImportError(\"cannot import name '_C' from "
        "'vllm' (vllm._C)\")\n\n\ndef test_plain():\n    assert False, 'a real failure'\n")
    outcomes, errors = roll_judge.run_tests(tmp_path, sys.executable, ["test_k.py"],
                                            kernels=False)
    assert outcomes == {"test_needs_kernels": "not run", "test_plain": "failed"}
    assert errors["test_needs_kernels"].startswith("needs the CPU kernels")
    outcomes, _ = roll_judge.run_tests(tmp_path, sys.executable, ["test_k.py"], kernels=True)
    assert outcomes["test_needs_kernels"] == "failed"


def test_a_test_whose_setup_fails_did_not_run(tmp_path):
    """As on 0.34.0, where the CPU platform refuses to start in the fixture."""
    (tmp_path / "test_s.py").write_text(
        "import pytest\n\n\n@pytest.fixture\ndef engine():\n    raise RuntimeError("
        "'vLLM on x86 CPUs requires Triton (triton-cpu)')\n\n\n"
        "def test_bug(engine):\n    assert False\n\n\ndef test_ran():\n    pass\n")
    outcomes, errors = roll_judge.run_tests(tmp_path, sys.executable, ["test_s.py"])
    assert outcomes == {"test_bug": "not run", "test_ran": "passed"}
    assert "triton-cpu" in errors["test_bug"]


def test_a_conflict_whose_tests_did_not_run_is_untested_and_says_why():
    why = 'failed on setup with "RuntimeError: vLLM on x86 CPUs requires Triton (triton-cpu)"'
    v = roll_verdict.Verdict(patch="p.patch", applies="conflict", conflict=["hunk a.py:3"],
                             tests_from="whole files", new_tests=["test_bug", "test_ref"],
                             without_fix={"test_bug": "not run", "test_ref": "not run"},
                             skipped={"test_bug": why, "test_ref": why})
    roll_verdict.decide(v)
    assert v.verdict == "untested"
    assert v.note == ("does not apply: hunk a.py:3; whether the new release still has the bug "
                      "is not known: its tests did not run (the release's CPU platform needs "
                      "triton-cpu, which no package registry serves)")
    assert roll_verdict.summary(v.without_fix) == "not run"
    # One that ran is evidence; the one that did not is named.
    v.without_fix = {"test_bug": "failed", "test_ref": "not run"}
    v.skipped = {"test_ref": why}
    roll_verdict.decide(v)
    assert v.verdict == "conflict"
    assert roll_verdict.summary(v.without_fix) == "0/1 pass, 1 not run"


def test_a_fix_whose_tests_do_not_run_with_it_is_untested_not_broken():
    v = roll_verdict.Verdict(patch="p.patch", applies="clean", tests_from="the patch",
                             new_tests=["test_bug"], without_fix={"test_bug": "failed"},
                             errors_without_fix={"test_bug": "assert 0 == 1"},
                             with_fix={"test_bug": "not run"},
                             errors={"test_bug": "failed on setup with OSError"})
    roll_verdict.decide(v)
    assert v.verdict == "untested" and "test_bug did not run" in v.note


def test_where_a_patch_conflicts_the_roll_quotes_what_upstream_wrote_instead(upstreams):
    patch = upstreams["patches"] / "Bugfix-Fix-b.patch"
    lines = roll_upstream.upstream_instead(patch, upstreams["repos"]["2.0"], "v2.0",
                                           upstreams["repos"]["1.0"], "v1.0")
    assert lines == ["pkg/b.py: b (rewritten since the current base)"]
    unchanged = roll_upstream.upstream_instead(upstreams["patches"] / "Bugfix-Fix-c.patch",
                                               upstreams["repos"]["2.0"], "v2.0",
                                               upstreams["repos"]["1.0"], "v1.0")
    assert unchanged == ["pkg/c.py: c (unchanged since the current base)"]
    assert roll_upstream.loaders(upstreams["repos"]["2.0"], "v2.0") == [
        "vllm/model_executor/model_loader/weight_utils.py: no "
        "runai_safetensors_weights_iterator in v2.0", "requires: no runai-model-streamer"]


def test_the_quote_shows_how_a_function_treats_its_weights():
    source = ("class M:\n    def load_weights(self, weights):\n        kept = []\n"
              "        for name, w in weights:\n            kept.append((name, w.clone()))\n"
              "        return self.loader.load_weights(kept)\n")
    node = roll_upstream.functions(source)["M.load_weights"]
    assert roll_upstream.quote(source, node) == [
        "L4: for name, w in weights:", "L5: kept.append((name, w.clone()))",
        "L6: return self.loader.load_weights(kept)"]
    assert roll_upstream.enclosing(source, {5}) == ["M.load_weights"]


def test_an_adoption_that_fails_half_way_changes_nothing(upstreams, tmp_path, monkeypatch):
    verdicts = run_roll(upstreams, "2.0")
    root = propose_onto_2(upstreams, tmp_path, verdicts, series_of="ac")
    before = snapshot(root)
    writes = []

    def full_disk(path, text):
        if len(writes) == 3:
            raise OSError(28, "No space left on device", str(path))
        writes.append(path)
        path.write_text(text)

    monkeypatch.setattr("tools.common.atomic_write", full_disk)
    with pytest.raises(OSError):
        roll_proposal.adopt(tmp_path / "w", verdicts, root)
    assert len(writes) == 3 and snapshot(root) == before


def test_upstreams_own_tests_of_a_patchs_files_run_against_the_fork(upstreams, tmp_path):
    """Release 4.0 has its own tests/test_c.py; they run on the fork's fix, and
    a failure is quoted (here upstream expects what the fix does not do)."""
    files = {**V1, "tests/test_c.py": "from pkg.c import c\n\n\ndef test_c_is_one():\n"
             "    assert c() == 1\n\n\ndef test_c_is_two():\n    assert c() == 2\n"}
    archive = sdist(tmp_path / "pkg-4.0.tar.gz", "4.0", files)
    pin = make_pin(archive)
    pin["upstream"].update(version="4.0", tag="v4.0")
    release = tmp_path / "v4.0"
    tree.materialize(archive, pin, upstreams["patches"].parent / "empty", release)
    patch = upstreams["patches"] / "Bugfix-Fix-c.patch"
    v = roll_verdict.Verdict(patch.name)
    roll_judge.second_opinion(v, patch, release, "v4.0", upstreams["fork"], sys.executable,
                        upstreams["listed"])
    assert v.upstream_tests == ["tests/test_c.py"]
    assert v.upstream_on_fork == {"test_c_is_one": "passed", "test_c_is_two": "failed"}
    assert "assert 1 == 2" in v.upstream_on_fork_errors["test_c_is_two"]
    # A patch whose files the release has no tests for gets no second opinion.
    other = roll_verdict.Verdict("Bugfix-Fix-a.patch")
    roll_judge.second_opinion(other, upstreams["patches"] / other.patch, release, "v4.0",
                        upstreams["fork"], sys.executable, upstreams["listed"])
    assert other.upstream_tests == [] and other.upstream_on_fork == {}


def test_a_test_file_that_does_not_import_says_why(tmp_path):
    (tmp_path / "test_x.py").write_text("from pkg.renamed import thing  # noqa: F401\n\n\n"
                                        "def test_x():\n    pass\n")
    outcomes, errors = roll_judge.run_tests(tmp_path, sys.executable, ["test_x.py"])
    assert list(outcomes.values()) == ["not run"]
    assert "ModuleNotFoundError: No module named 'pkg'" in next(iter(errors.values()))


def test_a_test_that_passes_on_the_current_base_but_fails_on_the_new_release_does_not_fit():
    """As Nano VL's copy-loader reference on 0.34.0, whose renamed vision
    weights leave 171 parameters unloaded: a conflict verdict would say the bug
    is still upstream, which the test cannot see."""
    v = roll_verdict.Verdict(
        patch="p.patch", applies="conflict", conflict=["hunk a.py:9"],
        tests_from="whole files", new_tests=["test_bug", "test_reference"],
        without_fix={"test_bug": "passed", "test_reference": "failed"},
        errors_without_fix={"test_reference": "171 parameters not loaded"},
        on_current_base={"test_bug": "failed", "test_reference": "passed"})
    roll_verdict.decide(v)
    assert v.verdict == "untested"
    assert v.note == ("does not apply: hunk a.py:9; its tests no longer fit the new release: "
                      "test_reference passes on the current base but fails here (171 "
                      "parameters not loaded)")
