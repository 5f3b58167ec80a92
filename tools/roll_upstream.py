"""What the new release does where a patch changes code, read from its source.

A verdict says whether the fork's fix is still needed; where the patch no
longer applies, or its tests cannot run, a maintainer also needs to see what
upstream wrote instead. For every function the patch changes (found from its
hunks in the current base), this says whether the release still has it,
whether it changed since the current base, and quotes the lines where it
handles the weights iterator: loops over it, lists, copies, generators. The
loaders' side is read the same way: the streamer's iterator and which
runai-model-streamer the release requires.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tools import lint
from tools.common import git

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")
# Lines that say how a function treats the weights it is given.
WEIGHT_HANDLING = re.compile(
    r"\bfor\b.*\bin\b.*weights|\blist\(|\.append\(|\.clone\(|\bcontiguous\(|\byield\b|"
    r"\bowned\b|load_weights\(")
# The loader side of the bug class, quoted for every roll.
LOADER_FUNCTIONS = [("vllm/model_executor/model_loader/weight_utils.py",
                     "runai_safetensors_weights_iterator")]
# A requirement with a version: setup.py's extras, requirements/*.txt.
STREAMER_REQUIREMENT = re.compile(
    r"runai[-_]model[-_]streamer(?:\[[^\]]*\])?\s*(?:[<>=!~]=?\s*[\d.]+)")
MAX_QUOTED = 8


def changed_old_lines(patch_text: str) -> dict[str, set[int]]:
    """{file: line numbers in the pre-image} the patch removes or inserts at."""
    found: dict[str, set[int]] = {}
    current, line = None, 0
    for text in patch_text.splitlines():
        header = lint.DIFF_HEADER.match(text)
        if header:
            current = lint.unquote_path(header.group(1))
            continue
        hunk = HUNK.match(text)
        if hunk and current:
            line = int(hunk.group(1))
            continue
        if current is None or not line or text.startswith(("---", "+++")):
            continue
        if text.startswith("-"):
            found.setdefault(current, set()).add(line)
            line += 1
        elif text.startswith("+"):
            found.setdefault(current, set()).add(max(line - 1, 1))
        elif text.startswith(" "):
            line += 1
    return found


def functions(source: str) -> dict[str, ast.AST]:
    """{qualified name: node} of every function in a module (Class.method)."""
    found = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found[name] = child
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return found


def enclosing(source: str, lines: set[int]) -> list[str]:
    """The innermost functions that hold any of these lines."""
    names = []
    spans = sorted(((n.lineno, n.end_lineno or n.lineno, q) for q, n in functions(source).items()),
                   key=lambda s: s[1] - s[0])
    for line in sorted(lines):
        inner = next((q for start, end, q in spans if start <= line <= end), None)
        if inner and inner not in names:
            names.append(inner)
    return names


def quote(source: str, node: ast.AST) -> list[str]:
    """The lines of one function that handle the weights, with line numbers."""
    first = node.body[0].lineno  # the body, not the signature
    lines = source.splitlines()[first - 1:node.end_lineno]
    picked = [f"L{first + i}: {text.strip()}" for i, text in enumerate(lines)
              if WEIGHT_HANDLING.search(text) and not text.strip().startswith("#")]
    return picked[:MAX_QUOTED] + ([f"... {len(picked) - MAX_QUOTED} more"]
                                  if len(picked) > MAX_QUOTED else [])


def read(repo: Path, rev: str, path: str) -> str | None:
    shown = git(repo, "show", f"{rev}:{path}", check=False)
    return shown.stdout if shown.returncode == 0 else None


def describe_function(release: Path, tag: str, base: str | None, path: str,
                      qualname: str) -> list[str]:
    new_source = read(release, tag, path)
    if new_source is None:
        return [f"{path}: gone from {tag}"]
    try:
        new = functions(new_source).get(qualname)
    except SyntaxError:
        return [f"{path}: does not parse in {tag}"]
    if new is None:
        return [f"{path}: {qualname} is gone from {tag}"]
    state = ""
    if base is not None:
        try:
            old = functions(base).get(qualname)
        except SyntaxError:
            old = None
        if old is not None:
            same = ast.dump(old) == ast.dump(new)
            state = " (unchanged since the current base)" if same else (
                " (rewritten since the current base)")
    return [f"{path}: {qualname}{state}", *[f"  {q}" for q in quote(new_source, new)]]


def upstream_instead(patch: Path, release: Path, tag: str, current: Path,
                     current_tag: str) -> list[str]:
    """Lines that say what the release does in the functions the patch changes."""
    report = []
    for path, lines in changed_old_lines(patch.read_text()).items():
        if not path.endswith(".py") or "/tests/" in f"/{path}":
            continue
        base = read(current, current_tag, path)
        if base is None:
            continue  # a file the patch adds
        try:
            names = enclosing(base, lines)
        except SyntaxError:
            continue
        for qualname in names:
            report += describe_function(release, tag, base, path, qualname)
    return report


def loaders(release: Path, tag: str) -> list[str]:
    """How the release's streamer iterator hands out tensors, and which
    runai-model-streamer it requires."""
    report = []
    for path, name in LOADER_FUNCTIONS:
        source = read(release, tag, path)
        node = functions(source).get(name) if source else None
        if node is None:
            report.append(f"{path}: no {name} in {tag}")
            continue
        report += [f"{path}: {name}", *[f"  {q}" for q in quote(source, node)]]
    listed = git(release, "ls-tree", "-r", "--name-only", tag, "requirements", "setup.py",
                 check=False).stdout.split()
    wanted = sorted({match.group(0).strip() for name in listed
                     for match in STREAMER_REQUIREMENT.finditer(read(release, tag, name) or "")})
    report.append(f"requires: {', '.join(wanted) or 'no runai-model-streamer'}")
    return report
