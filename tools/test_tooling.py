"""Unit tests of the series tooling on a tiny synthetic upstream (no network)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from tools import export, fetch, lint, tree
from tools.common import ForkError, git

AUTHOR = "Ada Dev <ada@example.org>"


def make_sdist(path: Path) -> Path:
    files = {
        "pkg-1.0/README.md": "tiny upstream\n",
        "pkg-1.0/pkg/__init__.py": "VALUE = 1\n\n\ndef f():\n    return VALUE\n",
        "pkg-1.0/tests/test_pkg.py": "def test_f():\n    pass\n",
        "pkg-1.0/CMakeLists.txt": "project(pkg)\n",
        "pkg-1.0/.gitignore": "/pkg/_version.py\n",
        "pkg-1.0/pkg/_version.py": "__version__ = '1.0'\n",
        "pkg-1.0/PKG-INFO": "Metadata-Version: 2.1\n",
        "pkg-1.0/setup.cfg": "[egg_info]\n",
        "pkg-1.0/pkg.egg-info/PKG-INFO": "Metadata-Version: 2.1\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_pin(sdist: Path) -> dict:
    return {"upstream": {"name": "pkg", "version": "1.0", "tag": "v1.0", "commit": "abc",
                         "date": "2026-01-01T00:00:00+00:00",
                         "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest()}}


def commit(repo: Path, path: str, text: str, subject: str, body: str | None = None,
           touches: list[str] | None = None, signoff: bool = True) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    if body is None:
        body = "## Purpose\nWhy.\n\n## Test Plan\npytest\n\n## Test Result\n1 passed\n"
    trailers = "".join(f"Fork-Touches: {t}\n" for t in (touches or [path]))
    if signoff:
        trailers += f"Signed-off-by: {AUTHOR}\n"
    name, email = AUTHOR[:-1].split(" <")
    git(repo, "commit", "-q", "-m", f"{subject}\n\n{body}\n{trailers}",
        env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
             "GIT_AUTHOR_DATE": "2026-02-01T00:00:00+00:00"})


@pytest.fixture
def upstream(tmp_path):
    sdist = make_sdist(tmp_path / "pkg-1.0.tar.gz")
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "series").write_text("")
    return sdist, make_pin(sdist), patches


def series_from_edits(tmp_path, sdist, pin, patches, edits) -> list[tuple[str, str]]:
    """Materialize, commit `edits` in the tree, export them into patches/."""
    work = tmp_path / "work"
    tree.materialize(sdist, pin, patches, work)
    for edit in edits:
        commit(work, **edit)
    export.export(work, patches, base="v1.0")
    return tree.materialize(sdist, pin, patches, tmp_path / "check")


FIX_A = {"path": "pkg/__init__.py", "text": "VALUE = 2\n\n\ndef f():\n    return VALUE\n",
         "subject": "[Bugfix] Use the right value"}
FIX_B = {"path": "tests/test_pkg.py", "text": "def test_f():\n    assert True\n",
         "subject": "[Bugfix] Test it"}


def test_cached_download_with_wrong_hash_is_refused(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "pkg-1.0.tar.gz").write_bytes(b"not the pinned file")
    with pytest.raises(ForkError, match="sha256 mismatch"):
        fetch.pip_download("pkg==1.0", "0" * 64, "pkg-1.0.tar.gz", [], "python3", tmp_path)


def test_verify_accepts_the_pinned_hash(tmp_path, upstream):
    sdist, pin, _ = upstream
    fetch.verify(sdist, pin["upstream"]["sdist_sha256"])


def test_base_commit_drops_sdist_metadata_and_is_tagged(tmp_path, upstream):
    sdist, pin, patches = upstream
    commits = tree.materialize(sdist, pin, patches, tmp_path / "t")
    assert len(commits) == 1
    files = git(tmp_path / "t", "ls-files").stdout.split()
    assert "PKG-INFO" not in files and "setup.cfg" not in files
    assert not any(f.startswith("pkg.egg-info") for f in files)
    # Ignored by upstream's .gitignore: kept on disk, not committed.
    assert "pkg/_version.py" not in files and (tmp_path / "t/pkg/_version.py").exists()
    assert git(tmp_path / "t", "describe", "--tags").stdout.strip() == "v1.0"


def test_wrong_base_tree_is_refused(tmp_path, upstream):
    sdist, pin, patches = upstream
    pin["upstream"]["base_tree"] = "0" * 40
    with pytest.raises(ForkError, match="base tree"):
        tree.materialize(sdist, pin, patches, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_materialize_twice_gives_identical_hashes(tmp_path, upstream):
    sdist, pin, patches = upstream
    first = series_from_edits(tmp_path, sdist, pin, patches, [FIX_A, FIX_B])
    again = tree.materialize(sdist, pin, patches, tmp_path / "again")
    rebuilt_in_place = tree.materialize(sdist, pin, patches, tmp_path / "again")
    assert len(first) == 3
    assert first == again == rebuilt_in_place


def test_export_round_trip_has_no_diff(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_A, FIX_B])
    assert (patches / "series").read_text().splitlines() == [
        "Bugfix-Use-the-right-value.patch", "Bugfix-Test-it.patch"]
    assert export.export(tmp_path / "check", patches, base="v1.0", check=True) == []
    text = (patches / "Bugfix-Use-the-right-value.patch").read_text()
    assert "Subject: [Bugfix] Use the right value" in text
    assert text.startswith("From " + "0" * 40)


def test_export_check_reports_an_unexported_commit(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_A])
    commit(tmp_path / "check", **FIX_B)
    changes = export.export(tmp_path / "check", patches, base="v1.0", check=True)
    assert "added Bugfix-Test-it.patch" in changes


def test_patch_that_does_not_apply_names_it_and_leaves_nothing(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_A])
    good = tree.materialize(sdist, pin, patches, tmp_path / "dest")
    # The upstream line the patch changes is no longer there.
    broken = make_sdist(tmp_path / "other.tar.gz")
    with tarfile.open(broken) as tar:
        members = {m.name: tar.extractfile(m).read() if m.isfile() else None
                   for m in tar.getmembers()}
    members["pkg-1.0/pkg/__init__.py"] = b"VALUE = 7\n\n\ndef f():\n    return VALUE\n"
    with tarfile.open(broken, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ForkError) as err:
        tree.materialize(broken, make_pin(broken), patches, tmp_path / "dest")
    assert "Bugfix-Use-the-right-value.patch does not apply" in str(err.value)
    assert "-VALUE = 1" in str(err.value)  # the rejected hunk is shown
    # The existing tree is untouched and no scratch repository is left.
    assert git(tmp_path / "dest", "rev-parse", "HEAD").stdout.strip() == good[-1][0]
    assert not (tmp_path / ".dest.new").exists()


def test_rebuild_refuses_to_drop_unexported_work(tmp_path, upstream):
    sdist, pin, patches = upstream
    tree.materialize(sdist, pin, patches, tmp_path / "dest")
    commit(tmp_path / "dest", **FIX_A)
    with pytest.raises(ForkError, match="make export"):
        tree.materialize(sdist, pin, patches, tmp_path / "dest")
    (tmp_path / "dest/README.md").write_text("edited\n")
    with pytest.raises(ForkError, match="uncommitted"):
        tree.materialize(sdist, pin, patches, tmp_path / "dest")
    git(tmp_path / "dest", "checkout", "README.md")
    # Once exported, the same commits are in patches/: rebuilding is safe.
    export.export(tmp_path / "dest", patches, base="v1.0")
    assert len(tree.materialize(sdist, pin, patches, tmp_path / "dest")) == 2
    commit(tmp_path / "dest", **FIX_B)
    # --force is the explicit way to throw the work away.
    commits = tree.materialize(sdist, pin, patches, tmp_path / "dest", force=True)
    assert len(commits) == 2


def test_lint_passes_a_clean_series(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_A, FIX_B])
    assert lint.lint_series(patches, series_tests=None) == []


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({**FIX_A, "touches": ["tests/test_pkg.py"]},
         "touches pkg/__init__.py, which it does not declare"),
        ({**FIX_A, "body": "Just a fix.\n"}, "body lacks a '## Purpose' section"),
        ({**FIX_A, "signoff": False}, "no Signed-off-by"),
        ({**FIX_A, "subject": "Use the right value"}, "lacks a [Tag] prefix"),
        ({**FIX_A, "path": "CMakeLists.txt", "text": "project(x)\n"},
         "touches build file CMakeLists.txt"),
        ({**FIX_A, "text": "VALUE = 2  \n"}, "trailing whitespace"),
    ],
    ids=["undeclared-file", "no-body", "no-signoff", "no-tag", "build-file", "whitespace"],
)
def test_lint_catches(tmp_path, upstream, edit, problem):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [edit])
    problems = lint.lint_series(patches, series_tests=None)
    assert any(problem in p for p in problems), problems


def test_lint_catches_unlisted_and_missing_patches(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_A])
    (patches / "stray.patch").write_text("")
    (patches / "series").write_text("Bugfix-Use-the-right-value.patch\ngone.patch\n")
    problems = lint.lint_series(patches, series_tests=None)
    assert "stray.patch: not listed in patches/series" in problems
    assert "series: gone.patch is listed but does not exist" in problems


def test_lint_catches_a_test_file_that_make_test_would_not_run(tmp_path, upstream):
    sdist, pin, patches = upstream
    series_from_edits(tmp_path, sdist, pin, patches, [FIX_B])
    listed = tmp_path / "upstream_tests.txt"
    listed.write_text("# nothing listed\n")
    problems = lint.lint_series(patches, series_tests=listed)
    assert any("tests/test_pkg.py is not in env/upstream_tests.txt" in p for p in problems)
    listed.write_text("tests/test_pkg.py\n")
    assert lint.lint_series(patches, series_tests=listed) == []


def test_a_gpu_page_from_another_series_is_a_warning_naming_it(tmp_path):
    import json

    from tools import lint

    (tmp_path / "docs").mkdir()
    current = {"fork_commit": "abc", "series_fingerprint": "f" * 16, "tree_head": "def"}
    (tmp_path / "docs" / "gpu-results.json").write_text(json.dumps({"series": current}))
    (tmp_path / "docs" / "benchmarks-gpu.json").write_text(
        json.dumps({"series": {**current, "series_fingerprint": "0" * 16}}))
    assert lint.stale_gpu_pages(tmp_path, current) == [
        f"docs/benchmarks-gpu.md is from series {'0' * 16}, not the current series "
        f"{'f' * 16}: remake it on a GPU node with `make bench DEVICE=cuda`"]
    (tmp_path / "docs" / "gpu-results.json").write_text("{}")
    assert "docs/gpu.md is from a series it does not name" in lint.stale_gpu_pages(
        tmp_path, current)[0]


def test_a_relock_keeps_every_locked_version_but_those_requirements_in_names():
    from tools.lock import kept_versions, package_name

    lock = "# generated\nray==2.47.0\nmsgpack==1.2.4\nTorch==2.11.0\nzipp==3.20.0\n"
    requirements_in = "# comment naming zipp\ntorch==2.11.0\nRay[default]==2.48.0\n\n"
    assert kept_versions(lock, requirements_in) == ["msgpack==1.2.4", "zipp==3.20.0"]
    assert package_name("huggingface_hub==1.10.2") == "huggingface-hub"
    assert package_name("setuptools-scm>=8") == "setuptools-scm"
