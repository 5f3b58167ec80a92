"""Leftover CPU shared-memory segments are removed; live and young ones are kept."""

import importlib
import os
import subprocess
import sys
import time

import pytest

from lab import cpushm

HOLD = """
import mmap, sys, time
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 4096)
    print("mapped", flush=True)
    time.sleep(60)
"""


def test_sweep_removes_only_unmapped_old_segments(tmp_path):
    names = ["41234-tp:0-[0-1]-cpushm_0", "41234-tp:0-[0-1]-cpushm_1",
             "52345-tp:0-[0-1]-cpushm_0", "psm_01af8211", "notes-cpushm"]
    for name in names:
        (tmp_path / name).write_bytes(b"\0" * 4096)
    live = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / names[2])],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "mapped"
        # Young segments are kept: an engine may be between creating and mapping one.
        assert cpushm.sweep(tmp_path) == []
        removed = cpushm.sweep(tmp_path, now=time.time() + 2 * cpushm.MIN_AGE_S)
    finally:
        live.kill()
        live.wait()
    assert removed == names[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])


@pytest.mark.parametrize("launcher,engine,second", [("proof.generate", "run", "auto"),
                                                    ("bench.engine_tp", "load", "0")])
def test_engine_launchers_sweep_before_the_engine_starts(monkeypatch, launcher, engine,
                                                         second):
    """Each engine launcher sweeps first; a dropped call would let a killed
    engine's segment block the next engine that draws its port."""
    module = importlib.import_module(launcher)
    events = []
    monkeypatch.setattr(cpushm, "sweep", lambda: events.append("sweep"))
    monkeypatch.setattr(module, engine, lambda *args: events.append("engine"))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(sys, "argv", [launcher, "/nonexistent/model", second, "--layout=mp",
                                      "/nonexistent/out.json"])
    module.main()
    assert events == ["sweep", "engine"]
