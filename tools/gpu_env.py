"""Install build/vllm on an NVIDIA GPU node, the way upstream documents it.

    python3 -m tools.gpu_env [--python PY | --existing-torch PY] [--wheelhouse DIR]
    python3 -m tools.gpu_env wheelhouse DIR [--python PY | --for-python X.Y] [--existing-torch]

The series changes Python files only, so the kernels of the official
vLLM 0.21.0 CUDA wheel fit the patched tree. Upstream's route for that is
`VLLM_USE_PRECOMPILED=1 pip install -e .` with VLLM_PRECOMPILED_WHEEL_LOCATION
naming the wheel: without it, 0.21.0's setup.py looks the tree's commit up in
upstream's git history and a nightly index, which a tree made from the sdist
cannot satisfy. The wheel is pinned in pin.toml ([cuda_kernels]) and comes
through pip like every other pin. Nothing is compiled.

Routes (one of the first two, optionally with the third):
- default: .venv-cuda, made with --python (python3 if not given), gets the
  torch the CUDA wheel asks for, upstream's build requirements, then the tree.
- --existing-torch PY: PY's environment already has torch 2.11.0 (NGC-style
  containers). Upstream's use_existing_torch.py strips the torch pins from the
  tree's requirements for the install, so pip never replaces that torch; the
  tree's files are put back afterwards.
- --wheelhouse DIR: offline. Every file comes from DIR, which `wheelhouse DIR`
  made on a connected machine with the node's Python version (with
  --existing-torch, a few hundred MB instead of GBs: no torch, triton or
  nvidia-* libraries, which such a node has). DIR is checked
  against its SHA256SUMS and pin.toml before anything is installed, and its
  packages are installed with pip's --require-hashes.

Both routes also install runai-model-streamer at the CPU lock's version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from tools import common
from tools.common import (
    BASE_TREE,
    BUILD,
    ROOT,
    RUNAI_SIDE_VERSIONS,
    TREE,
    CommandFailed,
    ForkError,
    git,
    load_pin,
    main_wrapper,
    runai_side_dir,
    say,
    tree_lock,
)
from tools.env import CUDA_FILES, LOCK, RUNAI_SIDE, VENV, run, run_showing_progress
from tools.fetch import cuda_pin, fetch_cuda_wheel, fetch_sdist, sha256_of, verify

CUDA_VENV = ROOT / ".venv-cuda"
# The interpreter the install went into, for `make demo DEVICE=cuda`.
GPU_PYTHON = BUILD / "gpu-python"
INSTALL_RECORD = BUILD / "gpu-install.json"
# Files of a wheelhouse that are not packages.
SUMS, LOCKFILE, ABOUT = "SHA256SUMS", "requirements.txt", "wheelhouse.json"
# What use_existing_torch.py rewrites; put back after the install.
TORCH_PINNED_FILES = ["requirements", "pyproject.toml"]
TORCH_PACKAGES = {"torch", "torchvision", "torchaudio"}
# Held at the CPU lock's versions (vLLM 0.21's own test pins): left free, the
# CUDA requirements resolve to transformers 4.57, and the tiny checkpoints and
# processors would not be the ones the CPU proofs use.
SHARED_WITH_CPU = ("transformers", "tokenizers", "huggingface-hub")


# -- the pieces ----------------------------------------------------------------

def streamer_requirement(lock: Path = LOCK) -> str:
    """runai-model-streamer at the version the CPU environment is locked to."""
    for line in lock.read_text().splitlines():
        if line.startswith("runai-model-streamer=="):
            return line.strip()
    raise ForkError(f"{lock} pins no runai-model-streamer; run `make lock`")


def constraints(lock: Path = LOCK) -> Path:
    """A pip constraints file holding SHARED_WITH_CPU at the CPU lock's versions."""
    pins = [line.strip() for line in lock.read_text().splitlines()
            if normalized(line.split("==")[0]) in SHARED_WITH_CPU]
    if len(pins) != len(SHARED_WITH_CPU):
        raise ForkError(f"{lock} does not pin all of {', '.join(SHARED_WITH_CPU)}")
    BUILD.mkdir(exist_ok=True)
    path = BUILD / "gpu-constraints.txt"
    path.write_text("# Written by tools/gpu_env.py from env/requirements.lock\n"
                    + "\n".join(pins) + "\n")
    return path


def python_version(python: str) -> str:
    out = run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.strip().splitlines()[-1]


def torch_version(python: str) -> str | None:
    proc = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else None


def wheel_torch_pins(wheel: Path) -> list[str]:
    """torch, torchvision and torchaudio exactly as the CUDA wheel requires them."""
    from tools.lock import wheel_requirements

    return [r for r in wheel_requirements(wheel, keep_torch=True)
            if re.split(r"[=<>!~ ;]", r, maxsplit=1)[0] in TORCH_PACKAGES]


def pinned_torch(pins: list[str]) -> str:
    """The exact torch version among the CUDA wheel's torch pins."""
    for pin in pins:
        name, _, version = pin.partition("==")
        if name.strip() == "torch" and version:
            return version.split(";")[0].strip()
    raise ForkError(f"the CUDA wheel pins no exact torch (its pins: {pins}); "
                    "its kernels' torch is unknown")


TORCH_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)((a|b|rc)\d+)?(\.dev\d+)?(\+[\w.]+)?$")


def torch_release(version: str) -> tuple[int, int, int] | None:
    """The release a torch version is of: 2.11.0 for 2.11.0, 2.11.0+cu130
    (a wheel's CUDA tag) and 2.11.0a0+gitabc (the pre-release builds of
    NGC-style containers); None for what is no torch version."""
    match = TORCH_VERSION.match(version.strip())
    return tuple(int(part) for part in match.groups()[:3]) if match else None


def check_existing_torch(python: str, wanted: str) -> None:
    """The precompiled kernels are built against one torch release: refuse
    another. A local version or a pre-release of that release is accepted
    (said so for a pre-release: its ABI is the container maker's)."""
    found = torch_version(python)
    if found is None:
        raise ForkError(f"{python} cannot import torch; --existing-torch is for an interpreter "
                        "that already has it (otherwise leave the flag out)")
    release = torch_release(found)
    if release is not None and release == torch_release(wanted) and found.split("+")[0] != wanted:
        say(f"{python} has torch {found}, a pre-release of {wanted}, the kernels' torch: "
            "accepted; if the kernels fail to load, use torch " + wanted)
    if release is None or release != torch_release(wanted):
        raise ForkError(f"{python} has torch {found}; the pinned CUDA kernels need torch "
                        f"{wanted}. Use that torch, or build the kernels from source "
                        "(README: GPU users, full CUDA build)")


@contextlib.contextmanager
def torch_pins_stripped(tree: Path, python: str):
    """Upstream's use_existing_torch.py for the length of the install. The
    files it rewrites must be unmodified before, and are restored after, even
    when the install fails: the tree stays exactly the series."""
    dirty = git(tree, "status", "--porcelain", "--", *TORCH_PINNED_FILES).stdout.strip()
    if dirty:
        raise ForkError(f"{tree} has changes in {', '.join(TORCH_PINNED_FILES)}; commit and "
                        f"`make export` them, or undo them, before an install:\n{dirty}")
    say("use_existing_torch.py: the install keeps this interpreter's torch")
    try:
        run([python, "use_existing_torch.py"], cwd=tree)
        yield
    finally:
        git(tree, "checkout", "--", *TORCH_PINNED_FILES)


def ignored_files(tree: Path) -> dict[str, tuple[int, int]]:
    """Files under vllm/ that git ignores (kernels, _version.py), with their
    size and modification time."""
    out = git(tree, "status", "--porcelain", "--ignored", "--untracked-files=all",
              "--", "vllm").stdout
    files = {}
    for line in out.splitlines():
        name = line[3:]
        if line.startswith("!! ") and "__pycache__" not in name and (tree / name).is_file():
            st = (tree / name).stat()
            files[name] = (st.st_size, st.st_mtime_ns)
    return files


def record_cuda_files(tree: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Name what the install put into the tree, so that `make env` can take
    it out again; and make `make env` reinstall the CPU tree, whose
    vllm/_version.py the install rewrote."""
    after = ignored_files(tree)
    added = sorted(name for name, stat in after.items() if before.get(name) != stat)
    known = json.loads(CUDA_FILES.read_text()) if CUDA_FILES.exists() else []
    CUDA_FILES.write_text(json.dumps(sorted(set(known) | set(added)), indent=1) + "\n")
    (VENV / ".stamp-editable").unlink(missing_ok=True)
    return added


def precompiled_env(wheel: Path) -> dict:
    """Upstream's switches for an install that takes its kernels from a wheel.
    A local path is accepted; it is the pinned, verified file."""
    return {"VLLM_USE_PRECOMPILED": "1", "VLLM_PRECOMPILED_WHEEL_LOCATION": str(wheel)}


def pip(python: str, *args: str, wheelhouse: Path | None = None) -> list[str]:
    if wheelhouse:
        where = ["--no-index", "--find-links", str(wheelhouse)]
    else:
        where = ["-c", str(constraints())]
    return [python, "-m", "pip", "install", "--progress-bar", "off", *where, *args]


# -- wheelhouse ----------------------------------------------------------------

WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_pin(filename: str) -> tuple[str, str]:
    """(name, version) from a wheel's file name, the name normalized."""
    m = WHEEL_NAME.match(filename)
    if not m:
        raise ForkError(f"{filename} is not a wheel file name")
    return normalized(m["name"]), m["version"]


def lock_text(files: dict[str, str], kernels_wheel: str, beside: tuple[str, ...] = ()) -> str:
    """requirements.txt of a wheelhouse: every package but vLLM itself (the
    tree is installed from source) and the streamers installed beside the
    locked one, exactly one version, with its hash."""
    lines, seen = [], {}
    for filename, digest in sorted(files.items()):
        if filename == kernels_wheel or filename in beside or not filename.endswith(".whl"):
            continue
        name, version = wheel_pin(filename)
        if name in seen and seen[name] != version:
            raise ForkError(f"the wheelhouse has two versions of {name}: {seen[name]} and "
                            f"{version}; pip resolved them separately")
        seen[name] = version
        lines.append(f"{name}=={version} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def verify_wheelhouse(wheelhouse: Path, pin: dict, python: str,
                      existing_torch: bool = False) -> dict:
    """Refuse a wheelhouse that is not exactly what was made: every file
    listed with its hash, nothing missing, nothing added, the pinned files
    as pinned, made for this Python."""
    if not (wheelhouse / SUMS).is_file():
        raise ForkError(f"{wheelhouse}: no {SUMS}; make the wheelhouse with "
                        "`make gpu-wheelhouse` on a connected machine")
    about = json.loads((wheelhouse / ABOUT).read_text())
    listed = {}
    for line in (wheelhouse / SUMS).read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    present = {p.name for p in wheelhouse.iterdir() if p.is_file()} - {SUMS}
    if present - set(listed):
        raise ForkError(f"{wheelhouse}: files not in {SUMS}: {sorted(present - set(listed))}")
    if set(listed) - present:
        raise ForkError(f"{wheelhouse}: files missing: {sorted(set(listed) - present)}")
    say(f"checking {len(listed)} files of {wheelhouse} against {SUMS}")
    for name, digest in sorted(listed.items()):
        actual = sha256_of(wheelhouse / name)
        if actual != digest:
            raise ForkError(f"{wheelhouse / name}: sha256 mismatch\n  expected {digest} "
                            f"({SUMS})\n  actual   {actual}\nCopy the wheelhouse again.")
    verify(wheelhouse / about["kernels_wheel"], cuda_pin(pin)["wheel_sha256"])
    verify(wheelhouse / about["sdist"], pin["upstream"]["sdist_sha256"])
    missing = [v for v in RUNAI_SIDE_VERSIONS if not about.get("streamers_beside", {}).get(v)]
    if missing:
        raise ForkError(f"{wheelhouse} has no runai-model-streamer {', '.join(missing)} for the "
                        "proofs (made by an older version of this tooling): make it again")
    if about.get("existing_torch") and not existing_torch:
        raise ForkError(f"{wheelhouse} has no torch (made with EXISTING_TORCH=1): install with "
                        "`make gpu-env EXISTING_TORCH=<the python that has torch 2.11.0>`")
    have = python_version(python)
    if about["python"] != have:
        raise ForkError(f"{wheelhouse} was made for Python {about['python']}, this is "
                        f"{have}: make it again with --python python{have}")
    return about


REQUIREMENT = re.compile(r"\s*(?P<name>[A-Za-z0-9._-]+)\s*(\[(?P<extras>[^\]]*)\])?")
EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"](?P<extra>[^'"]+)['"]""")


def torch_stack(items: list[dict]) -> set[str]:
    """What a node with torch already has, of a resolved install (pip's
    report items): torch, torchvision, torchaudio and the triton and CUDA
    libraries torch's wheel requires (nvidia-*, cuda-toolkit). vLLM's own
    nvidia-* requirements (cutlass-dsl, cudnn-frontend, nvidia-ml-py) are
    not torch's and stay; so do torch's small pure-Python requirements
    (setuptools, sympy, ...), which the tree pins otherwise."""
    by_name = {normalized(item["metadata"]["name"]): item for item in items}
    # (package, extras it was asked for): torch asks for cuda-toolkit[cublas, ...],
    # whose libraries are requirements under those extras.
    todo = [(name, frozenset()) for name in TORCH_PACKAGES if name in by_name]
    closure, seen = set(), set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        closure.add(name)
        for requirement in by_name[name]["metadata"].get("requires_dist") or []:
            wanted = REQUIREMENT.match(requirement)
            extra = EXTRA_MARKER.search(requirement)
            if extra and normalized(extra["extra"]) not in extras:
                continue
            dep = normalized(wanted["name"])
            if dep in by_name:
                asked = frozenset(normalized(e.strip()) for e in
                                  (wanted["extras"] or "").split(",") if e.strip())
                todo.append((dep, asked))
    return {name for name in closure
            if name in TORCH_PACKAGES or name in ("triton", "cuda-toolkit")
            or name.startswith("nvidia-")}


def resolved(python: str, target: list[str], requirements: list[str]) -> list[dict]:
    """Every package `requirements` resolve to, for the target Python, as pip's
    report items, without downloading them (pip's dry run; the index's wheel
    metadata is enough)."""
    report = BUILD / "gpu-wheelhouse-report.json"
    run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--only-binary", ":all:", "--report", str(report), "-c", str(constraints()),
         *(target and ["--target", str(BUILD / "gpu-wheelhouse-dry-run")]), *target,
         *requirements])
    return json.loads(report.read_text())["install"]


def make_wheelhouse(dest: Path, python: str, for_python: str | None = None,
                    existing_torch: bool = False) -> None:
    """On a connected machine: everything the install needs, for `python`'s
    version (or `for_python`'s, X.Y, on this machine's platform), with the
    tree's own requirement files as the input. With `existing_torch`, for a
    node that has torch 2.11.0: the torch stack is left out."""
    pin = load_pin()
    if not (TREE / "requirements" / "cuda.txt").exists():
        raise ForkError(f"{TREE} is not materialized; run `make tree` first")
    if dest.exists():
        if any(dest.iterdir()):
            raise ForkError(f"{dest} is not empty; give a new directory")
        dest.rmdir()
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    wheel = fetch_cuda_wheel(pin)
    sdist = fetch_sdist(pin)
    torch_pins = wheel_torch_pins(wheel)
    version = for_python or python_version(python)
    target = ["--python-version", version] if for_python else []
    download = [python, "-m", "pip", "download", "--only-binary", ":all:", "--progress-bar", "off",
                "-d", str(partial), *target]
    requirements = ["-r", str(TREE / "requirements" / "build" / "cuda.txt"),
                    "-r", str(TREE / "requirements" / "cuda.txt"), *torch_pins,
                    streamer_requirement()]
    if existing_torch:
        say(f"resolving the CUDA requirements for Python {version}")
        items = resolved(python, target, requirements)
        left_out = torch_stack(items)
        kept = sorted(f"{normalized(i['metadata']['name'])}=={i['metadata']['version']}"
                      for i in items if normalized(i["metadata"]["name"]) not in left_out)
        say(f"{len(items)} packages; leaving out the {len(left_out)} of the torch stack the "
            f"node has ({', '.join(sorted(left_out))}); downloading {len(kept)} into "
            f"{partial.name}")
        run_showing_progress([*download, "--no-deps", *kept])
    else:
        say(f"downloading the CUDA requirements for Python {version} into "
            f"{partial.name} (several GB: torch and its CUDA libraries)")
        run_showing_progress([*download, "-c", str(constraints()), *requirements])
    beside = {}
    for streamer_version, requirement in RUNAI_SIDE.items():
        before = {p.name for p in partial.iterdir()}
        run([*download, "--no-deps", requirement])
        new = {p.name for p in partial.iterdir()} - before
        if len(new) != 1:
            raise ForkError(f"downloading {requirement} gave {sorted(new) or 'no file'}, "
                            "not one wheel")
        beside[streamer_version] = new.pop()
    for path in (wheel, sdist):
        shutil.copy2(path, partial / path.name)
    files = {p.name: sha256_of(p) for p in sorted(partial.iterdir())}
    (partial / LOCKFILE).write_text(lock_text(files, wheel.name, tuple(beside.values())))
    about = {"python": version, "kernels_wheel": wheel.name, "sdist": sdist.name,
             "streamers_beside": beside, "existing_torch": existing_torch,
             "pin": {"sdist_sha256": pin["upstream"]["sdist_sha256"],
                     "cuda_wheel_sha256": cuda_pin(pin)["wheel_sha256"]}}
    (partial / ABOUT).write_text(json.dumps(about, indent=1) + "\n")
    for name in (LOCKFILE, ABOUT):
        files[name] = sha256_of(partial / name)
    (partial / SUMS).write_text("".join(f"{d}  {n}\n" for n, d in sorted(files.items())))
    partial.rename(dest)
    total = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    route = "EXISTING_TORCH=<its python> " if existing_torch else ""
    say(f"wrote {dest}: {len(files)} files, {total:.0f} MiB; copy it to the node and run "
        f"`make gpu-env {route}WHEELHOUSE={dest}` there")


# -- install -------------------------------------------------------------------

SMOKE = """
import importlib.metadata, torch, vllm
from vllm.platforms import current_platform
version = importlib.metadata.version("vllm")
print(f"vllm {version} from {vllm.__file__}")
if not current_platform.is_cuda():
    raise SystemExit(f"NO-GPU platform is {current_platform.__class__.__name__}")
current_platform.import_kernels()
assert hasattr(torch.ops._C, "rms_norm"), "custom op rms_norm is not registered"
import vllm.vllm_flash_attn
import vllm.entrypoints.openai.api_server  # what `vllm serve` imports (uvicorn, ...)
print(f"smoke: CUDA platform on {torch.cuda.get_device_name(0)}, "
      f"{torch.cuda.device_count()} GPU(s), rms_norm registered, flash-attention imports")
"""


def gpu_present(dev: Path = Path("/dev")) -> str | None:
    """What says this machine has an NVIDIA GPU (its device files, or
    nvidia-smi on PATH), or None."""
    devices = sorted(p.name for p in dev.glob("nvidia[0-9]*"))
    if devices:
        return f"{dev}/{devices[0]}"
    smi = shutil.which("nvidia-smi")
    return smi and f"{smi} on PATH"


def smoke(python: str, tree: Path = TREE) -> bool:
    """True once the tree runs on the CUDA platform; False where this machine
    has no GPU (the install itself is done); an error where it has one that
    the tree does not see (a broken driver, a CPU build of torch). The base worktree is checked the
    way the proofs import it: first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree != TREE else None
    failed = None
    try:
        out = common.run([python, "-c", SMOKE], f"the smoke check of {tree.name}", env=env,
                         cwd=ROOT)
    except CommandFailed as e:
        failed, out = e, e.output
    lines = out.strip().splitlines()
    if lines and lines[0].startswith("vllm ") and str(tree / "vllm") not in lines[0]:
        raise ForkError(f"{python} imports another vllm than {tree}: {lines[0]}")
    if failed is None:
        print("\n".join(lines[-2:]), flush=True)
        return True
    if lines and lines[-1].startswith("NO-GPU"):
        gpu = gpu_present()
        if gpu:
            raise ForkError(f"this machine has a GPU ({gpu}), but the installed tree does not "
                            f"see one ({lines[-1][7:]}): check the NVIDIA driver and "
                            "`nvidia-smi`, and that this torch is a CUDA build")
        print(lines[0] if lines else "", flush=True)
        say(f"installed, but no GPU is visible here ({lines[-1][7:]}): the smoke check "
            "runs on a GPU node")
        return False
    raise ForkError(f"the installed tree does not start: {failed}")


def describe_install(install: dict | None) -> str:
    """One line for a GPU page: the route that made the environment."""
    if not install:
        return "not recorded (made before `make gpu-env` recorded its route)"
    wheelhouse = install.get("wheelhouse")
    where = (f", offline from a wheelhouse of {wheelhouse['files']} files, "
             f"{wheelhouse['mib']} MiB" + (" (no torch stack: EXISTING_TORCH=1)"
                                           if wheelhouse["existing_torch"] else "")
             if wheelhouse else ", online")
    return f"`{install['command']}`{where}, tree HEAD `{install['tree_head'][:12]}`"


def unmet_requirements(python: str, installed: set[str]) -> list[str]:
    """pip check's complaints about what this install put in: a requirement
    the environment lacks or has at another version (a package that an
    existing-torch node lacks is found here, not when the demo serves).
    Complaints about the rest of the environment are not ours to judge."""
    proc = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    return [line.strip() for line in proc.stdout.splitlines()
            if line.strip() and normalized(line.split()[0]) in installed]


def install(python: str | None, existing_torch: str | None, wheelhouse: Path | None) -> str:
    pin = load_pin()
    if existing_torch:
        target = existing_torch
    else:
        if not (CUDA_VENV / "bin" / "python").exists():
            say(f"creating {CUDA_VENV.name} with {python or 'python3'}")
            run([python or "python3", "-m", "venv", str(CUDA_VENV)])
        target = str(CUDA_VENV / "bin" / "python")
    about = (verify_wheelhouse(wheelhouse, pin, target, bool(existing_torch)) if wheelhouse
             else None)
    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else None
    wheel = fetch_cuda_wheel(pin, target, index_args=index)
    torch_pins = wheel_torch_pins(wheel)
    if existing_torch:
        check_existing_torch(target, pinned_torch(torch_pins))
    if wheelhouse:
        # Every package at the hash it was downloaded with; with an existing
        # torch, torch and its companions are left as they are.
        lock = (wheelhouse / LOCKFILE).read_text().splitlines()
        if existing_torch:
            lock = [line for line in lock if line.split("==")[0] not in TORCH_PACKAGES]
        locked = BUILD / "gpu-wheelhouse.lock"
        BUILD.mkdir(exist_ok=True)
        locked.write_text("\n".join(lock) + "\n")
        say(f"installing {len(lock)} packages from {wheelhouse} (hash-checked by pip)")
        run_showing_progress(pip(target, "--require-hashes", "--no-deps", "-r", str(locked),
                                 wheelhouse=wheelhouse))
    elif not existing_torch:
        say(f"installing {', '.join(torch_pins)} into {CUDA_VENV.name} (the CUDA wheel's)")
        run_showing_progress(pip(target, *torch_pins))

    # The sdist's metadata imports torch: materialize with the target itself.
    from tools.tree import SDIST_SHIPPED_IGNORED, ensure_base_worktree, materialize_command

    materialize_command(python=target, index_args=index)
    sdist = fetch_sdist(pin, target, index_args=index)
    with tree_lock(TREE), (torch_pins_stripped(TREE, target) if existing_torch
                           else contextlib.nullcontext()):
        # The base-vs-patched proofs import the base worktree with the same
        # installed metadata (a CUDA version): it gets the same kernels.
        ensure_base_worktree(pin, sdist=sdist)
        if not wheelhouse:
            say("installing upstream's build requirements (requirements/build/cuda.txt)")
            run_showing_progress(pip(target, "-r", str(TREE / "requirements/build/cuda.txt")))
        say(f"installing {TREE.relative_to(ROOT)} editable with the kernels of {wheel.name} "
            "(VLLM_USE_PRECOMPILED=1, no compile)")
        before = ignored_files(TREE)
        try:
            run_showing_progress(
                [*pip(target, "--no-build-isolation", *(["--no-deps"] if wheelhouse else []),
                      "-e", str(TREE), wheelhouse=wheelhouse)],
                env=precompiled_env(wheel), cwd=TREE)
        finally:
            # Also after a failed install: whatever it extracted is named.
            added = record_cuda_files(TREE, before)
        for name in added:
            if name not in SDIST_SHIPPED_IGNORED:
                (BASE_TREE / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(TREE / name, BASE_TREE / name)
        say(f"{len(added)} files of the CUDA build are in {TREE.relative_to(ROOT)} and "
            f"{BASE_TREE.relative_to(ROOT)} (`make env` takes them out again)")
    if not wheelhouse:
        run_showing_progress(pip(target, streamer_requirement()))
    installed = {"vllm"} | {normalized(line.split("==")[0]) for line in lock} if wheelhouse \
        else {"vllm"}
    unmet = unmet_requirements(target, installed)
    if unmet:
        raise ForkError(f"{target}'s environment lacks what the tree needs: {'; '.join(unmet)}"
                        + (f" ({wheelhouse} leaves out the torch stack, which this node must "
                           "have: make a wheelhouse without EXISTING_TORCH)"
                           if about and about.get("existing_torch") else ""))
    for streamer_version, requirement in RUNAI_SIDE.items():
        beside = (str(wheelhouse / about["streamers_beside"][streamer_version]) if about
                  else requirement)
        dest = runai_side_dir(streamer_version, "cuda")
        say(f"installing {requirement} into {dest.relative_to(ROOT)} (beside the locked one)")
        run_showing_progress(pip(target, "--no-deps", "--upgrade", "--target", str(dest),
                                 beside, wheelhouse=wheelhouse))
    GPU_PYTHON.write_text(target + "\n")
    # How this environment was made, for the GPU pages (docs/gpu.md,
    # docs/benchmarks-gpu.md): which route, which wheelhouse.
    INSTALL_RECORD.write_text(json.dumps({
        "command": "make gpu-env" + (f" EXISTING_TORCH={existing_torch}" if existing_torch else
                                     f" PYTHON={python}" if python else "")
        + (f" WHEELHOUSE={wheelhouse}" if wheelhouse else ""),
        "python": target, "existing_torch": bool(existing_torch),
        "wheelhouse": None if about is None else {
            "files": len((wheelhouse / SUMS).read_text().splitlines()),
            "mib": round(sum(p.stat().st_size for p in wheelhouse.iterdir()) / 2**20),
            "existing_torch": bool(about.get("existing_torch")), "python": about["python"]},
        "tree_head": git(TREE, "rev-parse", "HEAD").stdout.strip()}, indent=1) + "\n")
    if about:
        say(f"installed from {wheelhouse} (Python {about['python']})")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb")
    wh = sub.add_parser("wheelhouse", help="download everything for an offline node")
    wh.add_argument("dest", type=Path)
    wh.add_argument("--python", default="python3",
                    help="an interpreter of the node's Python version (default python3)")
    wh.add_argument("--for-python", metavar="X.Y",
                    help="the node's Python version, where no such interpreter is here "
                         "(wheels for this machine's platform)")
    wh.add_argument("--existing-torch", action="store_true",
                    help="for a node that has torch 2.11.0: leave out the torch stack")
    parser.add_argument("--python", help="interpreter that creates .venv-cuda (default python3)")
    parser.add_argument("--existing-torch", metavar="PY",
                        help="install into PY's environment and keep its torch 2.11.0")
    parser.add_argument("--wheelhouse", type=Path, help="install offline from this directory")
    args = parser.parse_args()
    if args.verb == "wheelhouse":
        make_wheelhouse(args.dest.resolve(), args.python, args.for_python, args.existing_torch)
        return 0
    if args.python and args.existing_torch:
        parser.error("--python makes .venv-cuda; --existing-torch installs into PY: one of them")
    target = install(args.python, args.existing_torch,
                     args.wheelhouse.resolve() if args.wheelhouse else None)
    if smoke(target):
        smoke(target, BASE_TREE)
    print(f"GPU environment: {target} (try: {target} -m vllm.entrypoints.cli.main --help)")
    return 0


if __name__ == "__main__":
    main_wrapper(main)
