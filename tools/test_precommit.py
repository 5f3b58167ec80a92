"""tools/precommit.py: the derived configuration (fast, synthetic), the DCO
check, and the gate itself on a throwaway commit with a lint error in a clone
of the real tree."""

import subprocess
import sys
import textwrap

import pytest

from tools import precommit
from tools.common import ROOT, TREE, ForkError, git

UPSTREAM_CONFIG = """\
default_stages: [pre-commit, manual]
repos:
- repo: https://github.com/astral-sh/ruff-pre-commit
  rev: v0.14.0
  hooks:
  - id: ruff-check
    args: [--output-format, github, --fix]
- repo: https://github.com/DavidAnson/markdownlint-cli2
  rev: v0.21.0
  hooks:
  - id: markdownlint-cli2
    language_version: lts
- repo: https://github.com/astral-sh/uv-pre-commit
  rev: 0.11.1
  hooks:
  - id: pip-compile
    args: [requirements/cuda.in, --torch-backend, cu130]
    files: ^requirements/cuda\\.in$
  - id: pip-compile
    alias: pip-compile-docs
    args: [requirements/docs.in, -o, requirements/docs.txt]
    files: ^requirements/docs\\.(in|txt)$
- repo: local
  hooks:
  - id: mypy-local
    entry: python tools/mypy.py
    language: python
    stages: [pre-commit]
  - id: check-spdx-header
    entry: python tools/check_spdx_header.py
    language: python
"""


@pytest.fixture
def upstream_tree(tmp_path):
    (tmp_path / ".pre-commit-config.yaml").write_text(UPSTREAM_CONFIG)
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "docs.in").write_text("mkdocs<2\n")
    return tmp_path


def test_remote_hooks_become_local_with_the_same_tool_version_and_args(upstream_tree):
    derived = precommit.derive(upstream_tree)
    hooks = {h["id"]: h for h in derived["config"]["repos"][0]["hooks"]}
    assert [r["repo"] for r in derived["config"]["repos"]] == ["local"]
    ruff = hooks["ruff-check"]
    assert ruff["entry"] == "ruff check --force-exclude"
    assert ruff["additional_dependencies"] == ["ruff==0.14.0"]
    assert ruff["args"] == ["--output-format", "github", "--fix"]  # upstream's, not the default
    # Node from the system, not downloaded by pre-commit.
    assert hooks["markdownlint-cli2"]["language_version"] == "system"
    assert hooks["markdownlint-cli2"]["additional_dependencies"] == ["markdownlint-cli2@0.21.0"]
    assert hooks["pip-compile-docs"]["additional_dependencies"] == ["uv==0.11.1"]
    assert hooks["pip-compile-docs"]["files"] == r"^requirements/docs\.(in|txt)$"
    # Local hooks are kept exactly.
    assert hooks["check-spdx-header"] == {"id": "check-spdx-header", "language": "python",
                                          "entry": "python tools/check_spdx_header.py"}
    # What CI runs: the manual stage.
    assert "mypy-local" not in derived["in_ci"]
    assert "check-spdx-header" in derived["in_ci"]
    # A pip-compile that needs PyTorch's index is reported, not run.
    assert [u["id"] for u in derived["unreproducible"]] == ["pip-compile"]


def test_an_unknown_remote_hook_is_an_error_not_a_silent_skip(upstream_tree):
    config = upstream_tree / ".pre-commit-config.yaml"
    config.write_text(config.read_text().replace(
        "repos:\n", "repos:\n- repo: https://example.invalid/new-linter\n  rev: v1\n"
                    "  hooks:\n  - id: new-linter\n", 1))
    with pytest.raises(ForkError, match="new-linter"):
        precommit.derive(upstream_tree)


def test_findings_ignore_shifted_line_numbers_but_not_new_findings():
    before = "x.py:10:5: F401 `os` imported but unused\nFound 1 error.\n"
    shifted = "x.py:12:5: F401 `os` imported but unused\nFound 1 error.\n"
    more = shifted + "x.py:40:1: F841 local variable `y` is assigned to but never used\n"
    assert not precommit.findings(shifted) - precommit.findings(before)
    assert list((precommit.findings(more) - precommit.findings(before)).elements()) == [
        "x.py:N:N: FN local variable `y` is assigned to but never used"]


def test_dco_needs_a_signoff_by_the_author(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("x\n")
    git(tmp_path, "add", "f")
    git(tmp_path, "commit", "-q", "-m", "[Bugfix] x\n\n## Purpose\n\n## Test Plan\n\n"
        "## Test Result\n\nSigned-off-by: Someone Else <else@example.invalid>")
    assert precommit.dco_problems(tmp_path, "HEAD") == [
        "no Signed-off-by: matches the author 'vLLM upstream <upstream@vllm.invalid>'"]


@pytest.mark.skipif(not (TREE / ".git").exists(), reason="needs `make tree`")
def test_a_lint_error_in_a_commit_fails_naming_the_hook(tmp_path):
    clone = tmp_path / "vllm"
    git(tmp_path, "clone", "-q", "--shared", str(TREE), str(clone))
    target = clone / "tests" / "models" / "test_llama4_weight_loading.py"
    target.write_text(target.read_text() + "\n\ndef test_throwaway():\n    unused = 1\n")
    line = target.read_text().splitlines().index("    unused = 1") + 1
    git(clone, "commit", "-q", "-a", "-m", textwrap.dedent("""\
        [Misc] A throwaway commit with a lint error

        ## Purpose

        Prove the gate fails.

        ## Test Plan

        None.

        ## Test Result

        None.

        Signed-off-by: vLLM upstream <upstream@vllm.invalid>"""))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.precommit", "--repo", str(clone),
         "--range", "HEAD~1..HEAD", "--work", str(tmp_path / "work")],
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(proc.stdout)
    assert proc.returncode == 1
    assert "hook ruff-check failed" in proc.stdout
    # The finding is shown as new, with its real line.
    new = proc.stdout.split("findings not present before the change:")[1]
    assert f"test_llama4_weight_loading.py:{line}:5: F841" in new
    # Only the broken hook is blamed.
    assert "hook typos failed" not in proc.stdout
    assert "Signed-off-by" not in proc.stdout
