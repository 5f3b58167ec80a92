"""The one way the fork runs other programs (tools.common.run), and what every
entry point prints when something ordinary goes wrong: one line, no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tools.common import ROOT, CommandFailed, ForkError, run

PY = sys.executable


def test_output_comes_back_and_progress_sees_every_line():
    seen = []
    out = run([PY, "-c", "print('a'); print('b')"], "two lines", progress=seen.append)
    assert out == "a\nb\n" and seen == ["a", "b"]


def test_a_failure_names_the_step_the_root_cause_and_the_tail():
    script = "import sys\nfor i in range(100): print(i)\nraise ValueError('bad input')"
    with pytest.raises(CommandFailed) as failed:
        run([PY, "-c", script], "the step")
    message = str(failed.value)
    assert message.startswith("the step failed (exit 1; root cause: ValueError: bad input)")
    assert "\n99\n" in message and "\n5\n" not in message  # the tail, not everything
    assert failed.value.returncode == 1 and "\n5\n" in failed.value.output


def test_a_timeout_stops_the_command_and_its_children():
    start = time.monotonic()
    script = ("import subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('started', flush=True); time.sleep(60)")
    with pytest.raises(CommandFailed, match=r"the step did not finish in 1 s") as failed:
        run([PY, "-c", script], "the step", timeout=1)
    assert time.monotonic() - start < 30
    assert failed.value.returncode is None and "started" in failed.value.output


def test_a_missing_program_is_a_message():
    with pytest.raises(ForkError, match="cannot run /nonexistent/python"):
        run(["/nonexistent/python"], "the step")


def test_the_root_cause_is_a_workers_first_exception_not_its_echoes():
    from tools.common import root_cause

    output = "\n".join([
        "(EngineCore pid=7) ERROR 12-03 11:59:58 [core.py:1140] "
        "RuntimeError: Engine core initialization failed. See root cause above.",
        "(Worker_TP1 pid=9) ERROR 12-03 11:59:57 [multiproc_executor.py:772] "
        "ValueError: shape mismatch",
        "(Worker_TP0 pid=8) ERROR 12-03 11:59:57 [x.py:1] KeyError: 'w'",
        "RuntimeError: cancelled",
    ])
    assert root_cause(output).endswith("ValueError: shape mismatch")
    assert root_cause("ValueError: plain process") == "ValueError: plain process"
    assert root_cause("RuntimeError: cancelled\nnothing else") is None


def test_under_ray_a_workers_exception_is_found_through_the_log_monitors_prefixes():
    from tools.common import root_cause

    output = "\n".join([
        "(EngineCore pid=7) ERROR 12-03 [core.py:1] RuntimeError: actor died",
        "(EngineCore pid=7) \x1b[36m(RayWorkerProc pid=9)\x1b[0m (Worker_TP1 pid=9) "
        "ERROR 12-03 11:59:57 [w.py:3] OSError: weights file cut short",
    ])
    assert root_cause(output) == ("(EngineCore pid=7) (RayWorkerProc pid=9) (Worker_TP1 pid=9) "
                                  "ERROR 12-03 11:59:57 [w.py:3] OSError: weights file cut short")


# -- entry points: each injected failure is one line -------------------------

DRIVER = """
import errno, json, subprocess, sys
from tools.common import ForkError, main_wrapper
from tools import common

def main():
    kind = sys.argv[1]
    if kind == "disk-full":
        raise OSError(errno.ENOSPC, "No space left on device", "/work/build/x.json")
    if kind == "timeout":
        subprocess.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.1)
    if kind == "child":
        subprocess.run([sys.executable, "-c", "raise SystemExit(3)"], check=True)
    if kind == "child-run":
        common.run([sys.executable, "-c", "raise KeyError('x')"], "a child step")
    if kind == "corrupt-cache":
        (path := __import__("pathlib").Path(sys.argv[2])).write_text('{"trunc')
        common.read_json(path)
    if kind == "bug":
        return {}["missing"]
main_wrapper(main)
"""


def entry_point(kind: str, *args: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VLLM_FORK_DEBUG", None)
    if debug:
        env["VLLM_FORK_DEBUG"] = "1"
    return subprocess.run([PY, "-c", DRIVER, kind, *args], env=env, text=True,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize(("kind", "says"), [
    ("disk-full", "error: the disk is full (writing /work/build/x.json)"),
    # subprocess reports the time that was left, which depends on the load.
    ("timeout", re.compile(r"did not finish in 0?\.\d+ s$")),
    ("child", "failed with exit 3"),
    ("child-run", "error: a child step failed (exit 1; root cause: KeyError: 'x')"),
    ("corrupt-cache", "is unreadable"),
    ("bug", "error: unexpected KeyError: 'missing' (run again with VLLM_FORK_DEBUG=1"),
])
def test_an_ordinary_failure_is_one_line_without_a_traceback(kind, says, tmp_path):
    proc = entry_point(kind, str(tmp_path / "manifest.json"))
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    found = says.search(first) if isinstance(says, re.Pattern) else says in first
    assert first.startswith("error: ") and found, proc.stderr
    if kind == "child-run":
        # The child's own output (its traceback included) follows, never ours.
        assert "main_wrapper" not in proc.stderr and "in main" not in proc.stderr
    else:
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_the_traceback_is_shown_when_asked_for(tmp_path):
    proc = entry_point("disk-full", debug=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "OSError" in proc.stderr


def test_an_old_python_is_told_which_it_needs(monkeypatch):
    import importlib

    import tools

    monkeypatch.setattr(sys, "version_info", (3, 10, 12))
    with pytest.raises(SystemExit, match="needs Python 3.11 or newer"):
        importlib.reload(tools)
