"""Which architectures can a streaming loader feed safely? (`make audit`)

    python -m audit.run [--trees base,patched] [--arch NAME ...] [--no-docs]

Every architecture in vLLM's model registry gets a tiny checkpoint if one can
be made here without downloads (audit.tiny), and each tree's own model code
loads it three ways (audit.streams, audit.worker). Verdicts:

- safe: loads the same from a reused buffer, and holds at most half the
  checkpoint's tensors at once;
- stale: keeps yielded tensors past their step; the evidence names the
  parameters that end up corrupted;
- materializes: loads correctly but holds most of the checkpoint at once
  (the peak alive fraction);
- not_built: no verdict, and why (no tiny config, vLLM cannot build it on
  CPU, its load_weights rejects the checkpoint).

Writes build/audit/results.json and the table in docs/streaming-safety.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from lab import checkpoints as lab_checkpoints
from lab.trees import PYTHON, TREES, run_module, tree_env
from tools.common import BUILD, CACHE, ROOT, ForkError, main_wrapper, say

OUT = BUILD / "audit"
DOCS = ROOT / "docs" / "streaming-safety.md"
# A tiny model builds and loads in seconds; longer than this is a hang.
STALL_SECONDS = 240
VERDICTS = ("safe", "stale", "materializes", "not_built")


def checkpoint_dir() -> Path:
    """Tiny checkpoints outlive a clone; a change to their recipe or to the
    locked transformers makes new ones."""
    key = hashlib.sha256((ROOT / "audit" / "tiny.py").read_bytes()
                         + (ROOT / "env" / "requirements.lock").read_bytes()).hexdigest()[:12]
    dest = CACHE / "audit" / f"checkpoints-{key}"
    for old in dest.parent.glob("checkpoints-*"):
        if old != dest:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def checkpoints(only: list[str] | None) -> dict:
    dest = checkpoint_dir()
    say(f"tiny checkpoints for {'every registered architecture' if not only else only} "
        f"in {dest} (cached)")
    index = run_module("audit.tiny", [dest, *(only or [])], tree_env("patched"),
                       "generating tiny checkpoints", timeout=3600)
    for arch, entry in index.items():
        if "proof" in entry:
            index[arch] = {"dir": str(lab_checkpoints.ensure(entry["proof"]))}
    return index


class Worker:
    """audit.worker over a list of architectures for one tree, restarted past
    an architecture that crashes or hangs it."""

    def __init__(self, tree: str, jobs: list[tuple[str, str]], out: Path):
        self.tree, self.pending, self.out = tree, list(jobs), out
        self.results: list[dict] = []
        self.proc = None
        self.log = out.with_suffix(".log").open("w")
        out.unlink(missing_ok=True)

    def start(self) -> None:
        self.seen = 0
        self.out.write_text("")
        self.last_progress = time.monotonic()
        args = [f"{arch}={d}" for arch, d in self.pending]
        env = {**tree_env(self.tree), "VLLM_LOGGING_LEVEL": "ERROR", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([PYTHON, "-m", "audit.worker", str(self.out), *args],
                                     env=env, cwd=ROOT, stdout=self.log, stderr=self.log)

    def poll(self) -> bool:
        """Collect new results; True while work remains."""
        lines = self.out.read_text().splitlines()
        for line in lines[self.seen:]:
            result = json.loads(line)
            self.results.append({"tree": self.tree, **result})
            self.pending.pop(0)
            self.last_progress = time.monotonic()
            print(f"  [{self.tree}] {result['architecture']}: {result['verdict']}", flush=True)
        self.seen = len(lines)
        if not self.pending:
            return False
        exited = self.proc.poll() is not None
        stalled = time.monotonic() - self.last_progress > STALL_SECONDS
        if exited or stalled:
            if stalled:
                self.proc.kill()
                self.proc.wait()
            arch, _ = self.pending.pop(0)
            why = (f"hung for {STALL_SECONDS} s" if stalled
                   else f"crashed the process (exit code {self.proc.returncode})")
            self.results.append({"tree": self.tree, "architecture": arch,
                                 "verdict": "not_built", "evidence": {"reason": why}})
            print(f"  [{self.tree}] {arch}: not_built ({why})", flush=True)
            if self.pending:
                self.start()
        return bool(self.pending)


def audit(trees: list[str], only: list[str] | None = None, out: Path = OUT) -> list[dict]:
    index = checkpoints(only)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(arch, entry["dir"]) for arch, entry in index.items() if "dir" in entry]
    results = [{"architecture": arch, "tree": tree, "verdict": "not_built",
                "evidence": {"reason": entry["reason"]}}
               for arch, entry in index.items() if "reason" in entry for tree in trees]
    say(f"auditing {len(jobs)} architectures on {', '.join(trees)} "
        f"({len(index) - len(jobs)} have no tiny checkpoint)")
    # One worker per tree, side by side: two cores, each worker single-threaded.
    workers = [Worker(tree, jobs, out / f"worker-{tree}.jsonl") for tree in trees]
    for worker in workers:
        worker.start()
    while any([worker.poll() for worker in workers]):
        time.sleep(1)
    for worker in workers:
        results += worker.results
    return sorted(results, key=lambda r: (r["architecture"], trees.index(r["tree"])))


def describe(result: dict) -> str:
    """The evidence in one table cell."""
    e = result["evidence"]
    if result["verdict"] == "not_built":
        return e["reason"].replace("|", "\\|")[:160]
    alive = f"{e['peak_alive']}/{e['tensors']} tensors alive at once"
    if result["verdict"] == "stale":
        if "error_with_reused_buffer" in e:
            what = f"fails only with a reused buffer: {e['error_with_reused_buffer'][:100]}"
        else:
            names = e["corrupted"]
            what = f"{len(names)} corrupted, e.g. `{names[0]}`"
        return f"{what}; {alive}".replace("|", "\\|")
    return alive


def write_docs(results: list[dict], trees: list[str], seconds: float) -> None:
    by_arch: dict[str, dict] = {}
    for r in results:
        by_arch.setdefault(r["architecture"], {})[r["tree"]] = r
    main_tree = "patched" if "patched" in trees else trees[0]
    counts = {tree: Counter(r["verdict"] for r in results if r["tree"] == tree) for tree in trees}
    lines = [
        "# Which models can I stream safely?",
        "",
        "<!-- Generated by `make audit` (audit/run.py) from build/audit/results.json. -->",
        "",
        "Streaming loaders hand `load_weights` tensors that are either views into a",
        "buffer they reuse (runai-model-streamer in distributed mode, or past its",
        "memory limit) or private copies (runai-model-streamer 0.17). `make audit`",
        "builds every architecture in vLLM's registry that it can build on CPU from a",
        "tiny config without downloads, and feeds the model's own `load_weights` the",
        "same random checkpoint three ways: private copies (the reference), one",
        "reused buffer overwritten with a sentinel after every tensor, and copies",
        "tracked by weak reference.",
        "",
        "- **safe**: the same weights from a reused buffer, and at most half of the",
        "  checkpoint's tensors alive at once;",
        "- **stale**: keeps tensors past their step, so a buffer-reusing loader",
        "  silently loads garbage into the named parameters;",
        "- **materializes**: correct, but holds most of the checkpoint at once: host",
        "  memory of a whole checkpoint per worker with a copying loader;",
        "- **not_built**: no verdict here, and why.",
        "",
        f"Run in {seconds / 60:.0f} min on 2 CPU cores. Counts per tree:",
        "",
        "| tree | " + " | ".join(VERDICTS) + " |",
        "|---|" + "---|" * len(VERDICTS),
    ]
    for tree in trees:
        label = "this fork" if tree == "patched" else "v0.21.0"
        lines.append(f"| {label} | " + " | ".join(str(counts[tree][v]) for v in VERDICTS) + " |")
    other = [t for t in trees if t != main_tree]
    header = "| architecture | verdict | evidence |" + (" v0.21.0 |" if other else "")
    lines += ["", "Verdicts for this fork; the last column shows v0.21.0 where it differs.", "",
              header, "|---|---|---|" + ("---|" if other else "")]
    ordered = sorted(by_arch.items(),
                     key=lambda kv: (VERDICTS.index(kv[1][main_tree]["verdict"]), kv[0]))
    built = [(a, r) for a, r in ordered if r[main_tree]["verdict"] != "not_built"]
    for arch, per_tree in built:
        r = per_tree[main_tree]
        row = f"| {arch} | {r['verdict']} | {describe(r)} |"
        if other:
            base = per_tree[other[0]]
            row += f" {base['verdict'] if base['verdict'] != r['verdict'] else ''} |"
        lines.append(row)
    not_built = [(a, r) for a, r in ordered if r[main_tree]["verdict"] == "not_built"]
    reasons = Counter(describe(r[main_tree]) for _, r in not_built)
    lines += ["", f"Not built ({len(not_built)}), by reason:", "",
              "| reason | architectures |", "|---|---|"]
    for reason, _ in reasons.most_common():
        names = [a for a, r in not_built if describe(r[main_tree]) == reason]
        lines.append(f"| {reason} | {', '.join(names)} |")
    DOCS.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", default="patched,base",
                        help="comma-separated, from: " + ", ".join(TREES))
    parser.add_argument("--arch", action="append", help="only these architectures")
    parser.add_argument("--no-docs", action="store_true", help="leave docs/ alone")
    args = parser.parse_args()
    trees = args.trees.split(",")
    if unknown := set(trees) - set(TREES):
        raise ForkError(f"unknown tree(s) {sorted(unknown)}; choose from {', '.join(TREES)}")
    start = time.monotonic()
    results = audit(trees, args.arch)
    seconds = time.monotonic() - start
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for tree in trees:
        counts = Counter(r["verdict"] for r in results if r["tree"] == tree)
        say(f"{tree}: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS))
    if not args.no_docs:
        write_docs(results, trees, seconds)
        say(f"wrote {DOCS.relative_to(ROOT)}")
    say(f"wrote {(OUT / 'results.json').relative_to(ROOT)} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
