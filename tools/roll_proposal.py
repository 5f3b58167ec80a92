"""The roll's proposal and its adoption: pin.toml, patches/ and env/ as the
verdicts make them, under build/roll/VERSION/proposed; adoption copies them
into the repository in one step, or changes nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tools import series
from tools.common import (
    ROOT,
    ForkError,
    all_or_nothing,
    read_series,
    say,
    signals_deferred,
    write_files,
)
from tools.roll_verdict import ADOPTABLE, Verdict


def pin_text(current: str, new_pin: dict) -> str:
    """pin.toml with the new values, its comments and layout kept."""
    text, section = [], ""
    for line in current.splitlines():
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
        key = re.match(r"^(\w+) = ", line)
        if key and key.group(1) in new_pin.get(section, {}):
            value = new_pin[section][key.group(1)]
            line = f"{key.group(1)} = {json.dumps(value)}"
        text.append(line)
    return "\n".join(text) + "\n"


def upstreamed_patch(text: str, version: str) -> str:
    """The patch with DEP-3's Applied-Upstream: among its trailers."""
    trailer = f"Applied-Upstream: {version}, shown by its tests (make roll)\n"
    at = text.find("\nFork-Touches: ")
    return text[:at + 1] + trailer + text[at + 1:] if at >= 0 else text


def propose(workdir: Path, repo: Path, new_pin: dict, verdicts: list[Verdict], env: dict,
            version: str, root: Path = ROOT) -> None:
    """build/roll/VERSION/proposed: pin.toml, patches/ and env/ as they would be."""
    patches = root / "patches"
    out = workdir / "proposed"
    shutil.rmtree(out, ignore_errors=True)
    (out / "patches").mkdir(parents=True)
    (out / "env").mkdir()
    (out / "pin.toml").write_text(pin_text((root / "pin.toml").read_text(), new_pin))
    rendered = series.render(repo, new_pin["upstream"]["tag"])
    for name, text in rendered.items():
        (out / "patches" / name).write_text(text)
    for v in verdicts:
        if v.verdict == "carried":
            old = (patches / v.patch).read_text() if (patches / v.patch).exists() else None
            v.refreshed = "byte-identical" if rendered.get(v.patch) == old else "refreshed"
    (out / "patches" / "series").write_text(series.series_text(rendered))
    for v in verdicts:
        if v.verdict == "upstreamed":
            (out / "patches" / "upstreamed").mkdir(exist_ok=True)
            (out / "patches" / "upstreamed" / v.patch).write_text(
                upstreamed_patch((patches / v.patch).read_text(), version))
    (out / "env" / "requirements.in").write_text(env["requirements_in"])
    (out / "env" / "requirements.lock").write_text(env["lock"])


def adopt(workdir: Path, verdicts: list[Verdict], root: Path = ROOT) -> None:
    """Copy the proposal into the repository at root, or change nothing.

    Only a roll in which every patch of the series is carried or upstreamed is
    adopted: any other verdict (or none) leaves the repository as it is, so no
    patch is ever dropped. A carried patch must be in the proposed series, an
    upstreamed one under patches/upstreamed/."""
    out = workdir / "proposed"
    by_patch = {v.patch: v for v in verdicts}
    refused = []
    for name in read_series(root / "patches"):
        v = by_patch.get(name)
        if v is None:
            refused.append(f"{name} has no verdict")
        elif v.verdict in ("conflict", "broken"):
            refused.append(f"{name} is {v.verdict}: refresh it by hand (in "
                           f"{workdir / 'tree'}), then roll again")
        elif v.verdict not in ADOPTABLE:
            refused.append(f"{name} is {v.verdict or 'not judged'}: nothing shows whether it "
                           "is still needed; judge it by hand")
        elif v.verdict == "carried" and name not in read_series(out / "patches"):
            refused.append(f"{name} is carried but missing from the proposed series")
        elif v.verdict == "upstreamed" and not (out / "patches" / "upstreamed" / name).is_file():
            refused.append(f"{name} is upstreamed but missing from the proposed "
                           "patches/upstreamed/")
    if refused:
        raise ForkError("not adopting, nothing was changed: " + "; ".join(refused))
    # Every file of the proposal, and the removal of every patch of the series
    # it drops: upstreamed ones move to patches/upstreamed/ (those of earlier
    # rolls stay).
    changes: dict[Path, str | None] = {
        path: None for path in sorted((root / "patches").glob("*.patch"))}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            changes[root / path.relative_to(out)] = path.read_text()
    with signals_deferred(), all_or_nothing(list(changes)):
        write_files(changes)
    say("adopted: pin.toml, patches/, env/requirements.in and env/requirements.lock; review "
        "with `git diff --stat` and commit them as one change")
