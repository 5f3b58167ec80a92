"""The real pinned upstream, materialized by `make tree` (which `make test`
runs first): the base is tagged, its tree is the pinned one, and exactly the
series sits on top, one commit per patch, in order."""

from tools import lint
from tools.common import PATCHES, TREE, git, load_pin, read_series


def test_materialized_tree_is_base_plus_series():
    pin = load_pin()
    tag = pin["upstream"]["tag"]
    assert (TREE / ".git").exists(), "run `make tree` (make test does) first"

    assert git(TREE, "describe", "--tags", "--abbrev=0", f"{tag}").stdout.strip() == tag
    base_tree = git(TREE, "rev-parse", f"{tag}^{{tree}}").stdout.strip()
    assert base_tree == pin["upstream"]["base_tree"]
    assert git(TREE, "rev-list", "--count", tag).stdout.strip() == "1"

    subjects = git(TREE, "log", "--reverse", "--format=%s", f"{tag}..HEAD").stdout.splitlines()
    expected = [lint.parse(PATCHES / name).subject for name in read_series()]
    assert subjects == expected
    # The three fixes come first and stay as they are; one focused commit
    # (Llama 4's dense expert copies) may follow them.
    assert [s.split("]")[0] + "]" for s in subjects[:3]] == ["[Bugfix]"] * 3
    assert len(subjects) in (3, 4)
