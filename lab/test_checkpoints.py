"""The checkpoint cache: checked on every use, shared by clones of the repository."""

import json
import os
import time

import pytest

from lab import checkpoints
from tools.common import ForkError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """ensure() with checkpoints under tmp_path and a generator that writes one file."""
    monkeypatch.setattr(checkpoints, "path_for", lambda kind: tmp_path / f"{kind}-new")

    def generate(cmd, what, **kwargs):
        (tmp_path / f"{cmd[-2]}-new.partial" / "model.safetensors").write_bytes(b"weights")
        return ""

    monkeypatch.setattr(checkpoints, "run", generate)
    return tmp_path


def version(cache, name: str, days_unused: float):
    d = cache / name
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    then = time.time() - days_unused * 24 * 3600
    os.utime(d / "manifest.json", (then, then))
    return d


def test_other_versions_go_only_when_unused_for_a_week(cache):
    in_use = version(cache, "llama4-other-clone", days_unused=0.1)
    forgotten = version(cache, "llama4-old", days_unused=8)
    dest = checkpoints.ensure("llama4")
    assert dest == cache / "llama4-new" and (dest / "model.safetensors").exists()
    assert in_use.exists() and not forgotten.exists()


def test_a_corrupt_or_truncated_checkpoint_is_a_message(cache):
    dest = checkpoints.ensure("llama4")
    (dest / "model.safetensors").write_bytes(b"weights, edited")
    with pytest.raises(ForkError, match="does not match its manifest"):
        checkpoints.ensure("llama4")
    (dest / "manifest.json").write_text(json.dumps({"model.safetensors": "abc"})[:20])
    with pytest.raises(ForkError, match="unreadable"):
        checkpoints.ensure("llama4")
