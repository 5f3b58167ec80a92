"""tools/gpu_env.py without a GPU or a network: the pin, the wheelhouse's
checks and lock, the torch check and the use_existing_torch.py round trip."""

from __future__ import annotations

import hashlib
import json
import stat
import sys
from pathlib import Path

import pytest

from tools import gpu_env
from tools.common import ForkError, git
from tools.fetch import cuda_pin

SDIST, KERNELS = "vllm-0.21.0.tar.gz", "vllm-0.21.0-1-cp38-abi3-manylinux_2_24_x86_64.whl"
BESIDE = {"0.17.0": "runai_model_streamer-0.17.0-py3-none-manylinux_2_30_x86_64.whl",
          "0.17.1": "runai_model_streamer-0.17.1-py3-none-manylinux_2_28_x86_64.whl"}
PACKAGES = {
    "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl": b"torch",
    "huggingface_hub-1.10.2-py3-none-any.whl": b"hub",
    "runai_model_streamer-0.15.7-py3-none-manylinux2014_x86_64.whl": b"runai",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def this_python() -> str:
    return "{}.{}".format(*sys.version_info[:2])


@pytest.fixture
def wheelhouse(tmp_path):
    """A wheelhouse as `make_wheelhouse` lays it out, and the pin it matches."""
    dest = tmp_path / "wh"
    dest.mkdir()
    files = {**PACKAGES, SDIST: b"sdist", KERNELS: b"kernels",
             **{name: f"runai {version}".encode() for version, name in BESIDE.items()}}
    for name, data in files.items():
        (dest / name).write_bytes(data)
    digests = {name: sha(data) for name, data in files.items()}
    lock = gpu_env.lock_text(digests, KERNELS, tuple(BESIDE.values()))
    (dest / gpu_env.LOCKFILE).write_text(lock)
    (dest / gpu_env.ABOUT).write_text(json.dumps(
        {"python": this_python(), "kernels_wheel": KERNELS, "sdist": SDIST,
         "streamers_beside": BESIDE}))
    for name in (gpu_env.LOCKFILE, gpu_env.ABOUT):
        digests[name] = sha((dest / name).read_bytes())
    (dest / gpu_env.SUMS).write_text("".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    pin = {"upstream": {"sdist_sha256": sha(b"sdist")},
           "cuda_kernels": {"name": "vllm", "version": "0.21.0", "wheel_sha256": sha(b"kernels"),
                            "platform": "manylinux_2_24_x86_64"}}
    return dest, pin


def test_the_cuda_pin_is_required_whole_and_well_formed():
    good = {"name": "vllm", "version": "0.21.0", "wheel_sha256": "a" * 64,
            "platform": "manylinux_2_24_x86_64"}
    assert cuda_pin({"cuda_kernels": good}) == good
    with pytest.raises(ForkError, match=r"\[cuda_kernels\] name is missing"):
        cuda_pin({})
    with pytest.raises(ForkError, match="platform is missing"):
        cuda_pin({"cuda_kernels": {**good, "platform": ""}})
    with pytest.raises(ForkError, match="64 lowercase hex"):
        cuda_pin({"cuda_kernels": {**good, "wheel_sha256": "A" * 64}})


def test_the_repositorys_pin_passes_the_same_checks():
    # Whatever release it pins: a roll rewrites it, and must keep it valid.
    from tools.common import load_pin

    cuda_pin(load_pin())


def test_the_lock_lists_every_package_once_with_its_hash_but_not_vllm(wheelhouse):
    dest, _ = wheelhouse
    lines = (dest / gpu_env.LOCKFILE).read_text().splitlines()
    assert lines == sorted(lines)
    assert f"huggingface-hub==1.10.2 --hash=sha256:{sha(b'hub')}" in lines
    assert f"torch==2.11.0 --hash=sha256:{sha(b'torch')}" in lines
    assert len(lines) == len(PACKAGES)
    assert not any(line.startswith("vllm") for line in lines)
    # The streamers installed beside the locked one are no second version in the lock.
    assert [line for line in lines if line.startswith("runai")] == [
        f"runai-model-streamer==0.15.7 --hash=sha256:{sha(b'runai')}"]


def test_the_lock_refuses_two_versions_of_a_package():
    with pytest.raises(ForkError, match="two versions of torch"):
        gpu_env.lock_text({"torch-2.11.0-cp311-cp311-linux_x86_64.whl": "a",
                           "torch-2.10.0-cp311-cp311-linux_x86_64.whl": "b"}, KERNELS)


def test_wheel_names_with_a_build_tag_and_odd_spelling():
    assert gpu_env.wheel_pin(KERNELS) == ("vllm", "0.21.0")
    assert gpu_env.wheel_pin("Foo.Bar_baz-1.0-py3-none-any.whl") == ("foo-bar-baz", "1.0")
    with pytest.raises(ForkError, match="not a wheel"):
        gpu_env.wheel_pin("foo-1.0.tar.gz")


def test_an_intact_wheelhouse_is_accepted(wheelhouse):
    dest, pin = wheelhouse
    about = gpu_env.verify_wheelhouse(dest, pin, sys.executable)
    assert about["python"] == this_python()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "huggingface_hub-1.10.2-py3-none-any.whl").write_bytes(b"evil"),
     "huggingface_hub-1.10.2-py3-none-any.whl: sha256 mismatch"),
    (lambda d: (d / "extra-1.0-py3-none-any.whl").write_bytes(b"x"), "files not in SHA256SUMS"),
    (lambda d: (d / "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl").unlink(),
     "files missing"),
    (lambda d: (d / gpu_env.SUMS).unlink(), "no SHA256SUMS"),
])
def test_a_changed_wheelhouse_is_refused_before_anything_is_installed(wheelhouse, damage,
                                                                      message):
    dest, pin = wheelhouse
    damage(dest)
    with pytest.raises(ForkError, match=message):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)


def test_a_wheelhouse_whose_pinned_files_differ_from_the_pin_is_refused(wheelhouse):
    dest, pin = wheelhouse
    pin["cuda_kernels"]["wheel_sha256"] = "0" * 64
    with pytest.raises(ForkError, match="sha256 mismatch"):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)


def rewrite_about(dest, change) -> None:
    """Change wheelhouse.json and list its new hash, as a tampered but
    self-consistent wheelhouse would."""
    about = json.loads((dest / gpu_env.ABOUT).read_text())
    change(about)
    (dest / gpu_env.ABOUT).write_text(json.dumps(about))
    sums = [line for line in (dest / gpu_env.SUMS).read_text().splitlines()
            if not line.endswith(gpu_env.ABOUT)]
    sums.append(f"{sha((dest / gpu_env.ABOUT).read_bytes())}  {gpu_env.ABOUT}")
    (dest / gpu_env.SUMS).write_text("\n".join(sums) + "\n")


def test_a_wheelhouse_without_a_streamer_beside_is_refused(wheelhouse):
    dest, pin = wheelhouse
    rewrite_about(dest, lambda about: about["streamers_beside"].pop("0.17.1"))
    with pytest.raises(ForkError, match="no runai-model-streamer 0.17.1 "):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)
    # A wheelhouse of the tooling before 0.17.1 joined the proofs.
    rewrite_about(dest, lambda about: about.update(streamer_beside=BESIDE["0.17.0"],
                                                   streamers_beside={}))
    with pytest.raises(ForkError, match="no runai-model-streamer 0.17.0, 0.17.1 .*make it again"):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)


def test_a_wheelhouse_for_another_python_is_refused(wheelhouse):
    dest, pin = wheelhouse
    rewrite_about(dest, lambda about: about.update(python="2.7"))
    with pytest.raises(ForkError, match="made for Python 2.7"):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)


def test_an_existing_torch_wheelhouse_is_refused_where_torch_would_be_installed(wheelhouse):
    dest, pin = wheelhouse
    rewrite_about(dest, lambda about: about.update(existing_torch=True))
    with pytest.raises(ForkError, match="has no torch .*EXISTING_TORCH="):
        gpu_env.verify_wheelhouse(dest, pin, sys.executable)
    assert gpu_env.verify_wheelhouse(dest, pin, sys.executable, existing_torch=True)


def report_item(name: str, *requires: str) -> dict:
    return {"metadata": {"name": name, "version": "1", "requires_dist": list(requires)}}


def test_an_existing_torch_wheelhouse_leaves_out_torchs_own_stack_only():
    items = [
        report_item("torch", "nvidia-cublas; platform_system == 'Linux'", "triton==3.6.0",
                    "sympy>=1.13", "setuptools", "cuda-toolkit[cublas]==13.0.2",
                    "opt-einsum>=3.3; extra == 'opt-einsum'"),
        report_item("torchvision", "torch==2.11.0", "pillow"),
        report_item("triton"), report_item("nvidia-cublas"),
        # torch asks for cuda-toolkit[cublas]: its cublas extra's library comes with it,
        # an extra nobody asked for does not.
        report_item("cuda-toolkit", "nvidia-cuda-runtime==13.0.96; extra == \"cublas\"",
                    "nvidia-cufft; extra == 'cufft'"),
        report_item("nvidia-cuda-runtime"), report_item("nvidia-cufft"),
        report_item("sympy"), report_item("setuptools"), report_item("pillow"),
        # vLLM's own CUDA-flavoured requirements stay: a node with torch lacks them.
        report_item("vllm", "torch==2.11.0", "nvidia-cutlass-dsl", "uvicorn"),
        report_item("nvidia-cutlass-dsl"), report_item("uvicorn"), report_item("opt-einsum"),
    ]
    assert gpu_env.torch_stack(items) == {"torch", "torchvision", "triton", "nvidia-cublas",
                                          "cuda-toolkit", "nvidia-cuda-runtime"}


def test_what_the_install_leaves_unmet_is_found_and_only_for_its_packages(tmp_path):
    check = ("vllm 0.21.1.dev3 requires uvicorn, which is not installed.\n"
             "fastapi 0.136.0 has requirement starlette<0.50, but you have starlette 0.51.\n"
             "some-node-tool 1.0 requires torch==2.9.0, but you have torch 2.11.0.\n")
    python = interpreter_running(tmp_path, f"print({check!r}, end='')\nraise SystemExit(1)")
    assert gpu_env.unmet_requirements(python, {"vllm", "fastapi"}) == [
        "vllm 0.21.1.dev3 requires uvicorn, which is not installed.",
        "fastapi 0.136.0 has requirement starlette<0.50, but you have starlette 0.51."]
    assert gpu_env.unmet_requirements(python, {"numpy"}) == []


def test_the_kernels_torch_is_read_from_the_pins_in_any_order():
    pins = ["torchaudio==2.11.0", "torch==2.11.0", "torchvision==0.26.0"]
    assert gpu_env.pinned_torch(pins) == "2.11.0"
    with pytest.raises(ForkError, match="pins no exact torch"):
        gpu_env.pinned_torch(["torchvision==0.26.0", "torch>=2.10"])


def fake_python(tmp_path: Path, torch: str | None) -> str:
    """An 'interpreter' whose torch is the given version (or missing)."""
    script = tmp_path / "python"
    body = f"echo {torch}" if torch else "exit 1"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.mark.parametrize("found, ok", [
    ("2.11.0+cu130", True), ("2.11.0", True),
    # NGC-style containers: a pre-release build of the same release.
    ("2.11.0a0+gitb3f1e5c", True), ("2.11.0a0+ebedce2.nv26.02", True), ("2.11.0rc1", True),
    ("2.10.0+cu128", False), ("2.11.1", False), ("2.12.0a0+git1234", False),
    ("2.1.10", False), ("2.11.0-custom", False), (None, False)])
def test_an_existing_torch_must_be_the_one_the_kernels_were_built_against(tmp_path, found, ok):
    python = fake_python(tmp_path, found)
    if ok:
        gpu_env.check_existing_torch(python, "2.11.0")
    else:
        with pytest.raises(ForkError, match="torch"):
            gpu_env.check_existing_torch(python, "2.11.0")


STRIP_TORCH = """\
import pathlib
for p in [pathlib.Path("pyproject.toml"), *pathlib.Path("requirements").glob("*.txt")]:
    p.write_text("".join(l for l in p.read_text().splitlines(True) if "torch" not in l))
"""


@pytest.fixture
def tree(tmp_path):
    repo = tmp_path / "tree"
    (repo / "requirements").mkdir(parents=True)
    (repo / "requirements" / "cuda.txt").write_text("torch==2.11.0\nnumba\n")
    (repo / "pyproject.toml").write_text('requires = [\n"torch == 2.11.0",\n]\n')
    (repo / "use_existing_torch.py").write_text(STRIP_TORCH)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    return repo


def test_torch_pins_are_stripped_for_the_install_and_put_back_after(tree):
    with gpu_env.torch_pins_stripped(tree, sys.executable):
        assert (tree / "requirements" / "cuda.txt").read_text() == "numba\n"
    assert git(tree, "status", "--porcelain").stdout == ""


def test_torch_pins_are_put_back_when_the_install_fails(tree):
    with pytest.raises(RuntimeError), gpu_env.torch_pins_stripped(tree, sys.executable):
        raise RuntimeError("pip failed")
    assert git(tree, "status", "--porcelain").stdout == ""


def test_changes_of_yours_in_the_requirements_are_never_overwritten(tree):
    (tree / "requirements" / "cuda.txt").write_text("torch==2.11.0\nmine\n")
    with pytest.raises(ForkError, match="has changes in requirements"), \
            gpu_env.torch_pins_stripped(tree, sys.executable):
        pass
    assert (tree / "requirements" / "cuda.txt").read_text() == "torch==2.11.0\nmine\n"


def test_hf_packages_are_held_at_the_cpu_locks_versions(tmp_path, monkeypatch):
    lock = tmp_path / "lock"
    lock.write_text("torch==2.11.0\ntransformers==5.5.3\ntokenizers==0.22.2\n"
                    "huggingface_hub==1.10.2\n")
    monkeypatch.setattr(gpu_env, "BUILD", tmp_path / "build")
    text = gpu_env.constraints(lock).read_text()
    assert text.splitlines()[1:] == ["transformers==5.5.3", "tokenizers==0.22.2",
                                     "huggingface_hub==1.10.2"]
    lock.write_text("torch==2.11.0\n")
    with pytest.raises(ForkError, match="does not pin all"):
        gpu_env.constraints(lock)


def test_the_streamer_comes_at_the_cpu_locks_version(tmp_path):
    lock = tmp_path / "lock"
    lock.write_text("torch==2.11.0\nrunai-model-streamer==9.8.7\nsafetensors==0.6.2\n")
    assert gpu_env.streamer_requirement(lock) == "runai-model-streamer==9.8.7"
    lock.write_text("torch==2.11.0\n")
    with pytest.raises(ForkError, match="pins no runai-model-streamer"):
        gpu_env.streamer_requirement(lock)


def test_what_the_gpu_install_adds_to_the_tree_is_taken_out_by_make_env(tmp_path, monkeypatch):
    from tools import env

    repo = tmp_path / "tree"
    (repo / "vllm").mkdir(parents=True)
    (repo / ".gitignore").write_text("*.so\n/vllm/_version.py\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "vllm" / "_C_AVX2.abi3.so").write_bytes(b"cpu kernels")
    (repo / "vllm" / "_version.py").write_text("__version__ = '0.21.0'\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".stamp-editable").write_text("cpu")
    for module in (gpu_env, env):
        monkeypatch.setattr(module, "CUDA_FILES", repo / ".git" / "fork-cuda-files.json")
        monkeypatch.setattr(module, "VENV", venv)
    base = tmp_path / "base" / "vllm"
    base.mkdir(parents=True)
    for name, data in (("_moe_C.abi3.so", b"cuda kernels"), ("_version.py", b"released")):
        (base / name).write_bytes(data)
    monkeypatch.setattr(env, "TREE", repo)
    monkeypatch.setattr(env, "BASE_TREE", base.parent)
    monkeypatch.setattr(env, "ROOT", tmp_path)

    before = gpu_env.ignored_files(repo)
    (repo / "vllm" / "_moe_C.abi3.so").write_bytes(b"cuda kernels")
    (repo / "vllm" / "_version.py").write_text("__version__ = '0.21.1.dev3+precompiled'\n")
    gpu_env.record_cuda_files(repo, before)
    assert not (venv / ".stamp-editable").exists()  # make env reinstalls the CPU tree

    env.drop_cuda_files()
    assert sorted(p.name for p in (repo / "vllm").iterdir()) == ["_C_AVX2.abi3.so"]
    assert sorted(p.name for p in base.iterdir()) == ["_version.py"]  # as released
    assert not (repo / ".git" / "fork-cuda-files.json").exists()
    env.drop_cuda_files()  # nothing recorded: nothing to do


def interpreter_running(tmp_path, script: str) -> str:
    """An interpreter that runs `script` whatever it is asked to run."""
    path = tmp_path / "python"
    path.write_text(f"#!{sys.executable}\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_a_gpu_is_seen_by_its_device_files_or_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert gpu_env.gpu_present(tmp_path) is None
    (tmp_path / "nvidiactl").write_text("")  # the control device alone is no GPU
    assert gpu_env.gpu_present(tmp_path) is None
    (tmp_path / "nvidia0").write_text("")
    assert gpu_env.gpu_present(tmp_path) == f"{tmp_path}/nvidia0"
    (tmp_path / "nvidia0").unlink()
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert gpu_env.gpu_present(tmp_path) == f"{smi} on PATH"


def test_a_gpu_the_tree_does_not_see_is_an_error_not_a_missing_gpu(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    said = f"print('vllm 0.21.0 from {tree}/vllm/__init__.py')"
    no_cuda = interpreter_running(
        tmp_path, f"{said}\nraise SystemExit('NO-GPU platform is CpuPlatform')")
    monkeypatch.setattr(gpu_env, "gpu_present", lambda: None)
    assert gpu_env.smoke(no_cuda, tree) is False
    monkeypatch.setattr(gpu_env, "gpu_present", lambda: "/dev/nvidia0")
    with pytest.raises(ForkError, match=r"has a GPU \(/dev/nvidia0\), but the installed tree "
                                        r"does not see one \(platform is CpuPlatform\)"):
        gpu_env.smoke(no_cuda, tree)


def test_the_smoke_check_passes_says_no_gpu_or_names_the_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_env, "gpu_present", lambda: None)  # this machine, as CI's
    tree = tmp_path / "tree"
    said = f"print('vllm 0.21.0 from {tree}/vllm/__init__.py')"
    assert gpu_env.smoke(interpreter_running(tmp_path, f"{said}\nprint('smoke: CUDA')"), tree)
    no_gpu = interpreter_running(
        tmp_path, f"{said}\nraise SystemExit('NO-GPU platform is CpuPlatform')")
    assert gpu_env.smoke(no_gpu, tree) is False
    broken = interpreter_running(tmp_path, f"{said}\nraise ImportError('libcuda.so.1')")
    with pytest.raises(ForkError, match="does not start.*root cause: ImportError: libcuda"):
        gpu_env.smoke(broken, tree)
    elsewhere = interpreter_running(tmp_path, "print('vllm 0.21.0 from /site-packages/vllm/x.py')")
    with pytest.raises(ForkError, match="imports another vllm"):
        gpu_env.smoke(elsewhere, tree)
