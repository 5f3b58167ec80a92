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
