"""`make roll` on synthetic tiny upstreams: every verdict, and a failed roll
that changes nothing. Each patch carries a test that fails without its fix;
release 2.0 fixed one bug its own way, changed the code under another patch,
and changed what a third one relies on."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from tools import roll, series, tree
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
    for path, text, test, test_text, subject in FIXES:
        (work / test).parent.mkdir(exist_ok=True)
        (work / test).write_text(test_text)
        commit(work, path=path, text=text, subject=subject, touches=[path, test])
        # commit() stages only `path`: amend the test file in.
        git(work, "add", test)
        git(work, "commit", "-q", "--amend", "--no-edit")
    patches = tmp_path / "patches"
    patches.mkdir()
    rendered = series.render(work, "v1.0")
    for name, text in rendered.items():
        (patches / name).write_text(text)
    (patches / "series").write_text(series.series_text(rendered))
    listed = tmp_path / "upstream_tests.txt"
    listed.write_text("".join(f"{f[2]}\n" for f in FIXES))
    return {"repos": repos, "patches": patches, "listed": listed, "tmp": tmp_path}


def run_roll(upstreams, onto: str) -> list[roll.Verdict]:
    repo = upstreams["repos"][onto]
    current = (upstreams["repos"]["1.0"], sys.executable)
    return roll.roll_series(repo, upstreams["patches"], sys.executable, current,
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
    roll.propose(tmp_path / "w", upstreams["repos"]["1.0"], {"upstream": {"tag": "v1.0"}},
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


def test_a_failed_roll_changes_nothing_and_a_good_one_is_adopted(upstreams, tmp_path):
    verdicts = run_roll(upstreams, "2.0")
    root = fake_root(tmp_path / "root", upstreams)
    before = snapshot(root)
    new_pin = {"upstream": {"version": "2.0", "tag": "v2.0"}}
    env = {"requirements_in": "new\n", "lock": "new==2\n"}
    roll.propose(tmp_path / "w", upstreams["repos"]["2.0"], new_pin, verdicts, env, "2.0", root)
    assert snapshot(root) == before  # proposing writes only under the roll's directory
    with pytest.raises(ForkError, match="Fix-b.patch, .*Fix-d.patch must be refreshed"):
        roll.adopt(tmp_path / "w", verdicts, root)
    assert snapshot(root) == before

    # Without the patches that need a person, the roll is adopted whole.
    good = [v for v in verdicts if v.verdict in ("carried", "upstreamed")]
    roll.adopt(tmp_path / "w", good, root)
    assert (root / "patches" / "series").read_text() == "Bugfix-Fix-c.patch\n"
    assert (root / "pin.toml").read_text() == '[upstream]\nversion = "2.0"\ntag = "v2.0"\n'
    upstreamed = (root / "patches" / "upstreamed" / "Bugfix-Fix-a.patch").read_text()
    assert "\nApplied-Upstream: 2.0, shown by its tests (make roll)\n" in upstreamed
    assert (root / "env" / "requirements.lock").read_text() == "new==2\n"
    assert json.loads(json.dumps([roll.asdict(v) for v in verdicts]))  # the report serializes


def test_the_proposed_cuda_pin_takes_the_platform_from_the_wheels_name():
    assert roll.wheel_platform("vllm-0.21.0-1-cp38-abi3-manylinux_2_24_x86_64.whl") \
        == "manylinux_2_24_x86_64"
    assert roll.wheel_platform("vllm-0.22.0-cp38-abi3-manylinux_2_28_x86_64."
                               "manylinux_2_31_x86_64.whl") == "manylinux_2_28_x86_64"
