"""Run pytest on the patched tree's tests with vLLM imported from either tree.

    python3 -m tools.pytest_on patched|base [--series-tests] [pytest args...]

`base` runs the series' (new) tests against the unmodified v0.21.0 code, which
is how a fix's test is shown to fail before the fix. Test paths are relative
to build/vllm. vllm is imported from the chosen tree before pytest starts, so
pytest's own sys.path handling cannot swap it for the other tree.
--series-tests stands for the arguments in env/upstream_tests.txt.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tools.common import BASE_TREE, ROOT, TREE, VENV, ForkError, main_wrapper

SERIES_TESTS = ROOT / "env" / "upstream_tests.txt"


def series_test_args(path: Path = SERIES_TESTS) -> list[str]:
    args = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            args += shlex.split(line)
    return args

BOOTSTRAP = """
import sys
tree = sys.argv[1]
sys.path.insert(0, tree)
import vllm
assert vllm.__file__.startswith(tree + "/"), (vllm.__file__, tree)
print(f"vllm imported from {tree}", flush=True)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def command(tree_name: str, args: list[str],
            extra_path: tuple[str, ...] = ()) -> tuple[list[str], dict]:
    """(command, environment) of a pytest run in build/vllm with vllm imported
    from the named tree; extra_path goes after the tree on PYTHONPATH (pytest
    plugins)."""
    tree = {"patched": TREE, "base": BASE_TREE}.get(tree_name)
    if tree is None:
        raise ForkError(f"unknown tree {tree_name!r}: use patched or base")
    python = VENV / "bin" / "python"
    if not python.exists() or not (tree / ".git").exists():
        raise ForkError("the environment is not built: run `make env` first")
    args = [a for arg in args for a in (series_test_args() if arg == "--series-tests" else [arg])]
    # Tests of the series must not reach for a model hub: there is no network.
    env = {**os.environ, "PYTHONPATH": ":".join([str(tree), *extra_path]),
           "HF_HUB_OFFLINE": "1"}
    return [str(python), "-c", BOOTSTRAP, str(tree), "-p", "no:cacheprovider", *args], env


def run(tree_name: str, args: list[str]) -> int:
    cmd, env = command(tree_name, args)
    return subprocess.run(cmd, cwd=TREE, env=env).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    return run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main_wrapper(main)
