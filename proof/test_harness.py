"""Fast checks of how engine runs are compared (no engine started)."""

from lab import engine
from proof import harness


def fake_run(loader: str, tp: int = 2, env: dict | None = None,
             kernels: str = "_C_AVX2.abi3.so", params: list[dict] | None = None) -> dict:
    args = engine.engine_args("/models/llama4", loader)
    args["tensor_parallel_size"] = tp
    params = params or [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    return {"engine_args": args, "env": env or {"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
            "ranks": [{"rank": r, "kernels": kernels, "params": p} for r, p in enumerate(params)]}


def test_every_loader_changes_only_the_loader_arguments():
    reference = engine.engine_args("/m", "auto")
    for loader in engine.LOADERS:
        args = engine.engine_args("/m", loader)
        changed = {k for k in args.keys() | reference.keys() if args.get(k) != reference.get(k)}
        assert changed <= engine.LOADER_KEYS, (loader, changed)


def test_a_loader_only_difference_is_no_difference():
    assert harness.differences_besides_loader(fake_run("runai-0.15.7-dist"),
                                              fake_run("auto")) == []


def test_any_other_difference_is_named():
    reference = fake_run("auto", tp=1)
    assert harness.differences_besides_loader(fake_run("runai-0.15.7-dist"), reference) == [
        "engine_args tensor_parallel_size: 1 (reference) vs 2"]
    other_env = fake_run("auto", env={"VLLM_CPU_OMP_THREADS_BIND": "0"})
    assert harness.differences_besides_loader(fake_run("auto"), other_env) == [
        "env VLLM_CPU_OMP_THREADS_BIND: '0' (reference) vs '0|1'"]
    other_kernels = fake_run("auto", kernels="_C.abi3.so")
    assert harness.differences_besides_loader(fake_run("auto"), other_kernels) != []


def test_differing_parameters_are_named_per_rank():
    reference = fake_run("auto")
    run = fake_run("runai-0.15.7-dist", params=[{"a": "1", "b": "X"}, {"a": "3", "b": "4"}])
    assert harness.differing_per_rank(run, reference) == [["b"], []]
