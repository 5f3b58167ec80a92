"""make env's own checks, without installing anything."""

import os
from collections import namedtuple

import pytest

from tools import env
from tools.common import ForkError

Usage = namedtuple("Usage", "total used free")


def free_space(monkeypatch, free_by_device: dict[int, int]):
    monkeypatch.setattr(env.shutil, "disk_usage",
                        lambda where: Usage(0, 0, free_by_device[os.stat(where).st_dev]))


def test_a_disk_without_room_for_the_packages_is_one_line_before_pip_starts(tmp_path, monkeypatch):
    venv = tmp_path / ".venv"
    device = os.stat(tmp_path).st_dev
    free_space(monkeypatch, {device: 5_000_000_000})
    with pytest.raises(ForkError) as error:
        env.check_free_space([(venv, 6_100_000_000, ".venv's locked packages")])
    assert str(error.value) == (f".venv's locked packages need about 6.1 GB on the disk of "
                                f"{tmp_path}, which has 5.0 GB free: free some space and run again")
    env.check_free_space([(venv, 4_000_000_000, ".venv's locked packages")])


def test_what_goes_onto_one_disk_adds_up(tmp_path, monkeypatch):
    """pip's temporary directory and the venv on the same disk: both must fit
    at once (the downloads stay until the install ends)."""
    device = os.stat(tmp_path).st_dev
    (tmp_path / "tmp").mkdir()
    free_space(monkeypatch, {device: 7_000_000_000})
    needs = [(tmp_path / ".venv", 6_000_000_000, "packages"),
             (tmp_path / "tmp", 2_000_000_000, "pip's downloads")]
    with pytest.raises(ForkError, match="packages and pip's downloads need about 8.0 GB"):
        env.check_free_space(needs)
    free_space(monkeypatch, {device: 8_000_000_000})
    env.check_free_space(needs)


def test_a_venv_that_holds_packages_needs_only_the_rest(tmp_path, monkeypatch):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "lib").mkdir()
    (venv / "lib" / "torch.so").write_bytes(b"x" * 1000)
    (venv / ".stamp-packages").write_text("an older lock")
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.11.0\n")
    monkeypatch.setattr(env, "VENV", venv)
    monkeypatch.setattr(env, "PY", venv / "bin" / "python")
    monkeypatch.setattr(env, "LOCK", lock)
    monkeypatch.setattr(env, "PACKAGES_BYTES", 1500)
    monkeypatch.setattr(env, "PACKAGES_TEMP_BYTES", 0)
    asked = []

    class Stop(Exception):
        pass

    def check(needs):
        asked.extend(needs)
        raise Stop  # nothing gets installed

    monkeypatch.setattr(env, "check_free_space", check)
    with pytest.raises(Stop):
        env.ensure_packages()
    assert asked[0][1] == 1500 - 1000 - len("an older lock")
