"""Fast checks of how engine runs are compared (no engine started)."""

from proof import generate, harness


def fake_run(loader: str, tp: int = 2, env: dict | None = None,
             kernels: str = "_C_AVX2.abi3.so", params: list[dict] | None = None) -> dict:
    args = generate.engine_args("/models/llama4", loader)
    args["tensor_parallel_size"] = tp
    params = params or [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    return {"engine_args": args, "env": env or {"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
            "ranks": [{"rank": r, "kernels": kernels, "params": p} for r, p in enumerate(params)]}


def test_every_loader_changes_only_the_loader_arguments():
    reference = generate.engine_args("/m", "auto")
    for loader in generate.LOADERS:
        args = generate.engine_args("/m", loader)
        changed = {k for k in args.keys() | reference.keys() if args.get(k) != reference.get(k)}
        assert changed <= generate.LOADER_KEYS, (loader, changed)


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


# What a TP=2 engine prints when one worker dies in its profiling run: the
# front end's echo comes last, the worker's own exception first.
WORKER_DIED = """\
INFO 12-01 15:21:30 [utils.py:233] non-default args: {'tensor_parallel_size': 2}
(Worker_TP1 pid=3010) WARNING 12-01 15:21:40 [cpu.py:90] KeyError: 'x' was ignored
(Worker_TP0 pid=3009) ERROR 12-01 15:21:50 [mp.py:772] Traceback (most recent call last):
(Worker_TP0 pid=3009) ERROR 12-01 15:21:50 [mp.py:772]   File "vocab_parallel_embedding.py", line 78
(Worker_TP0 pid=3009) ERROR 12-01 15:21:50 [mp.py:772] IndexError: index out of range in self
(EngineCore pid=2914) ERROR 12-01 15:21:51 [core.py:1100] EngineCore failed to start.
Traceback (most recent call last):
  File "proof/generate.py", line 70, in main
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
"""


def test_the_root_cause_is_the_workers_first_exception_not_the_echo():
    assert harness.root_cause(WORKER_DIED) == (
        "(Worker_TP0 pid=3009) ERROR 12-01 15:21:50 [mp.py:772] "
        "IndexError: index out of range in self")
    echo_only = WORKER_DIED.split("(EngineCore")[1]
    assert harness.root_cause(echo_only) is None
    assert harness.root_cause("Traceback:\n  x\nValueError: Available memory on node 0") == (
        "ValueError: Available memory on node 0")
