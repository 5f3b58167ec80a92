"""Download the pinned upstream files through pip and check their hashes.

    python3 -m tools.fetch [sdist|wheel|cuda-wheel|all] [--python PY]

pip finds the files (no host is named here) and checks the hash itself
(--require-hashes); we check again before using a file and on every cache
hit, so a corrupted or substituted cache file is refused, never used.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from tools.common import (
    CACHE,
    SHA256,
    VENV,
    CommandFailed,
    ForkError,
    load_pin,
    main_wrapper,
    run,
    say,
)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    if not SHA256.match(expected):
        # A malformed pin would otherwise read as a bad download, and the
        # advice to delete it would delete a good file.
        raise ForkError(f"the pinned sha256 {expected!r} is not 64 lowercase hex digits: "
                        "fix pin.toml (the file was not checked)")
    if not path.is_file():
        raise ForkError(f"{path} is not a file where the download should be: remove it "
                        "(rm -r) and run again")
    actual = sha256_of(path)
    if actual != expected:
        raise ForkError(
            f"{path}: sha256 mismatch\n  expected {expected} (pin.toml)\n  actual   {actual}\n"
            f"Delete the file to download it again; if it fails again, the pin or the "
            f"registry's file changed: do not edit the pin without knowing which."
        )


def default_python() -> str:
    venv_python = VENV / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def pip_download(requirement: str, sha256: str, pattern: str, extra_args: list[str],
                 python: str, cache: Path, index_args: list[str] | None = None) -> Path:
    """Return the cached, verified file matching `pattern`, downloading it if needed."""
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for cached in sorted(downloads.glob(pattern)):
        verify(cached, sha256)
        return cached

    # index_args name a wheelhouse (--no-index --find-links DIR): nothing is downloaded.
    source = f"from {index_args[-1]}" if index_args else "through pip"
    say(f"fetching {requirement} {source}")
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".partial-") as tmp:
        req_file = Path(tmp) / "requirement.txt"
        req_file.write_text(f"{requirement} --hash=sha256:{sha256}\n")
        out = Path(tmp) / "out"
        cmd = [python, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--progress-bar", "off", "-d", str(out), "-r", str(req_file),
               *extra_args, *(index_args or [])]
        try:
            run(cmd, f"pip download of {requirement}")
        except CommandFailed as failed:
            hint = ""
            if "DO NOT MATCH THE HASHES" in failed.output:
                hint = "\nThe registry's file does not match the hash in pin.toml."
            elif "No module named 'torch'" in failed.output:
                hint = ("\nvLLM's sdist imports torch while pip reads its metadata: run "
                        "`make env` first, or pass --python with an interpreter that has torch.")
            raise ForkError(f"pip could not download {requirement}: {failed}{hint}") from None
        files = list(out.glob(pattern))
        if len(files) != 1:
            raise ForkError(f"pip downloaded {[f.name for f in out.iterdir()]}, expected {pattern}")
        verify(files[0], sha256)
        final = downloads / files[0].name
        shutil.move(str(files[0]), final)  # same filesystem: atomic rename
    say(f"verified {final.name} (sha256 {sha256[:12]}...)")
    return final


def fetch_sdist(pin: dict, python: str | None = None, cache: Path = CACHE,
                index_args: list[str] | None = None) -> Path:
    up = pin["upstream"]
    return pip_download(
        f"{up['name']}=={up['version']}", up["sdist_sha256"],
        f"{up['name']}-{up['version']}.tar.gz",
        # --no-build-isolation: reading vLLM's metadata would otherwise make pip
        # install its whole build environment (torch, cmake) first.
        ["--no-binary", up["name"], "--no-build-isolation"],
        python or default_python(), cache, index_args,
    )


def fetch_wheel(pin: dict, python: str | None = None, cache: Path = CACHE,
                index_args: list[str] | None = None) -> Path:
    k = pin["cpu_kernels"]
    return pip_download(
        f"{k['name']}=={k['version']}", k["wheel_sha256"],
        f"{k['name'].replace('-', '_')}-{k['version']}-*.whl",
        ["--only-binary", ":all:"],
        python or default_python(), cache, index_args,
    )


def fetch_cuda_wheel(pin: dict, python: str | None = None, cache: Path = CACHE,
                     index_args: list[str] | None = None) -> Path:
    """The official CUDA build of the release, whose kernels the GPU install
    takes (tools/gpu_env.py). Its tags are abi3 and manylinux: asking for its
    platform lets pip on any Python 3 and any host pick exactly this file."""
    k = cuda_pin(pin)
    return pip_download(
        f"{k['name']}=={k['version']}", k["wheel_sha256"],
        f"{k['name']}-{k['version']}-*.whl",
        ["--only-binary", ":all:", "--platform", k["platform"], "--implementation", "cp"],
        python or default_python(), cache, index_args,
    )


def cuda_pin(pin: dict) -> dict:
    """pin.toml's [cuda_kernels], checked: only the GPU install needs it."""
    k = pin.get("cuda_kernels") or {}
    for key in ("name", "version", "wheel_sha256", "platform"):
        if not k.get(key):
            raise ForkError(f"pin.toml: [cuda_kernels] {key} is missing or empty; the GPU "
                            "install needs the official CUDA wheel pinned by sha256")
    if not SHA256.match(str(k["wheel_sha256"])):
        raise ForkError("pin.toml: [cuda_kernels] wheel_sha256 must be 64 lowercase hex digits "
                        f"(sha256sum's form), not {k['wheel_sha256']!r}")
    return k


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["sdist", "wheel", "cuda-wheel", "all"])
    parser.add_argument("--python",
                        help="interpreter whose pip downloads (needs torch for the sdist)")
    args = parser.parse_args()
    pin = load_pin()
    if args.what in ("wheel", "all"):
        print(fetch_wheel(pin, args.python))
    if args.what in ("sdist", "all"):
        print(fetch_sdist(pin, args.python))
    if args.what == "cuda-wheel":
        print(fetch_cuda_wheel(pin, args.python))
    return 0


if __name__ == "__main__":
    main_wrapper(main)
