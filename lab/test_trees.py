"""Each CPU and each set of CPU settings gets its own torch.compile cache."""

from lab import trees

AVX512 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx2\n"


def test_the_compile_cache_is_per_cpu_and_per_cpu_setting():
    plain = trees.inductor_cache({}, AVX512)
    assert plain == trees.inductor_cache({"PATH": "/bin"}, AVX512)
    assert plain.parent == trees.INDUCTOR_CACHES
    assert trees.inductor_cache({}, AVX2) != plain
    assert trees.inductor_cache({"ATEN_CPU_CAPABILITY": "avx2"}, AVX512) != plain


def test_every_run_of_a_tree_uses_this_checkouts_cache():
    env = trees.tree_env("patched")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(trees.inductor_cache(env, trees.cpuinfo()))
    assert env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(trees.INDUCTOR_CACHES))


def test_the_tree_without_the_last_patch_gets_the_kernels_build_vllm_has_now(tmp_path,
                                                                             monkeypatch):
    """A worktree already at the right commit still gets build/vllm's current
    built files: after `make env` or `make gpu-env` swapped them, it must not
    keep the other set."""
    import subprocess

    from tools import common

    tree, dest = tmp_path / "vllm", tmp_path / "vllm-without-last"
    tree.mkdir()

    def git(*args):
        subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True)

    git("init", "-q")
    for i in range(2):
        (tree / "f.py").write_text(str(i))
        git("add", "f.py")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", str(i))
    monkeypatch.setattr(trees, "TREE", tree)
    monkeypatch.setattr(trees, "WITHOUT_LAST_TREE", dest)
    monkeypatch.setattr(common, "say", lambda *a, **k: None)
    kernel = tree / "vllm" / "_C.abi3.so"
    kernel.parent.mkdir()
    kernel.write_bytes(b"cpu kernels")
    trees.ensure_without_last(["vllm/_C.abi3.so"])
    assert (dest / "f.py").read_text() == "0"
    assert (dest / "vllm" / "_C.abi3.so").read_bytes() == b"cpu kernels"
    # build/vllm's kernels swapped; the worktree is already at its commit.
    kernel.write_bytes(b"cuda kernels, another size")
    trees.ensure_without_last(["vllm/_C.abi3.so"])
    assert (dest / "vllm" / "_C.abi3.so").read_bytes() == b"cuda kernels, another size"
