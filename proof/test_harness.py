"""Fast checks of how engine runs are compared (no engine started)."""

import pytest

from lab import engine, expectations, trees
from proof import harness


def fake_run(loader: str, tp: int = 2, env: dict | None = None,
             kernels: str = "_C_AVX2.abi3.so", params: list[dict] | None = None) -> dict:
    args = engine.engine_args("/models/llama4", loader)
    args["tensor_parallel_size"] = tp
    params = params or [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    return {"engine_args": args, "env": env or {"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
            "ranks": [{"rank": r, "kernels": kernels, "params": p} for r, p in enumerate(params)]}


def test_every_loader_changes_only_the_loader_arguments(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(tiny_safetensors())
    reference = engine.engine_args(str(tmp_path), "auto")
    for loader in engine.LOADERS:
        args = engine.engine_args(str(tmp_path), loader)
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


@pytest.mark.parametrize("device", engine.DEVICES)
def test_every_planned_run_differs_from_its_reference_only_in_the_loader(device, tmp_path):
    """The CUDA mode makes the same comparisons as the CPU mode: for every
    run of each device's plan, its engine arguments and environment and
    those of its reference (the same tree's `auto`) differ in the loader
    alone, and the table has an expectation for it."""
    (tmp_path / "model.safetensors").write_bytes(tiny_safetensors())
    loaders = {scenario: loader for _, _, loader, scenario in harness.engine_plan(device)}
    for model, tree, loader, scenario in harness.engine_plan(device):
        ref_model, ref_tree, ref_scenario = harness.reference_key(model, tree, device)
        assert (ref_model, ref_tree) == (model, tree)
        reference = engine.engine_args(str(tmp_path), loaders[ref_scenario], device)
        args = engine.engine_args(str(tmp_path), loader, device)
        changed = {k for k in args.keys() | reference.keys() if args.get(k) != reference.get(k)}
        assert changed <= engine.LOADER_KEYS, (device, scenario, changed)
        env, ref_env = engine.engine_env(loader, device), engine.engine_env("auto", device)
        assert {k for k in env.keys() | ref_env.keys()
                if env.get(k) != ref_env.get(k)} <= engine.LOADER_ENV_KEYS
        expectations.expected(f"{model} (engine)", scenario, tree)
    assert engine.DEVICE_ARGS[device]["tensor_parallel_size"] == {"cpu": 2, "cuda": 1}[device]


def test_the_cuda_plan_covers_both_models_every_loader_and_the_reload():
    plan = harness.engine_plan("cuda")
    for model in ("llama4", "nemotron_vl"):
        for tree in ("base", "patched"):
            assert {loader for m, t, loader, _ in plan if (m, t) == (model, tree)} == set(
                engine.DEVICE_LOADERS["cuda"])
    assert {t for m, t, _, s in plan if m == "nemotron_h"} == {"base", "patched"}
    assert len(plan) == len(set((m, t, s) for m, t, _, s in plan))


def test_streamer_limits_are_filled_in_per_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(tiny_safetensors())
    args = engine.engine_args(str(tmp_path), "runai-0.15.7-reuse", "cuda")
    limit = args["model_loader_extra_config"]["memory_limit"]
    assert limit == trees.largest_tensor_bytes(tmp_path) + 64 * 1024
    assert engine.LOADERS["runai-0.15.7-reuse"]["model_loader_extra_config"]["memory_limit"] is None


def tiny_safetensors() -> bytes:
    """A safetensors file of a few tensors, large enough for a reused buffer."""
    import json
    import struct

    header, offset = {}, 0
    for i, size in enumerate((131072, *[65536] * 6)):
        header[f"t{i}"] = {"dtype": "U8", "shape": [size], "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def test_the_ray_plan_runs_what_the_table_expects_on_both_layouts(tmp_path):
    """Under Ray, every run of each layout is compared with the same tree's
    `auto` on the same layout; arguments differ in the loader alone (and the
    executor from mp), the environment in the loader and the observer."""
    (tmp_path / "model.safetensors").write_bytes(tiny_safetensors())
    plan = harness.ray_plan()
    assert sorted({s for *_, s in plan}) == sorted(expectations.RAY_SCENARIOS)
    assert tuple(engine.RAY_LAYOUTS) == expectations.RAY_LAYOUTS
    loaders = {scenario: loader for _, _, loader, scenario in plan}
    for model, tree, loader, scenario in plan:
        layout = harness.layout_of(scenario)
        assert layout in engine.RAY_LAYOUTS
        ref_scenario = harness.reference_key(model, tree, "cpu", layout)[2]
        assert harness.layout_of(ref_scenario) == layout
        args = engine.engine_args(str(tmp_path), loader, "cpu", layout)
        reference = engine.engine_args(str(tmp_path), loaders[ref_scenario], "cpu", layout)
        assert args["distributed_executor_backend"] == "ray"
        assert {k for k in args.keys() | reference.keys()
                if args.get(k) != reference.get(k)} <= engine.LOADER_KEYS
        env, ref_env = (engine.engine_env(loader, "cpu", layout),
                        engine.engine_env("auto", "cpu", layout))
        assert {k for k in env.keys() | ref_env.keys() if env.get(k) != ref_env.get(k)} <= (
            engine.LOADER_ENV_KEYS | engine.OBSERVER_ENV_KEYS)
        # Only the copy-returning streamer is weighed (it is what is judged).
        assert ("LAB_LIVENESS" in env) == (loader in engine.WEIGHED_LOADERS)
        expectations.expected(f"{model} (engine)", scenario, tree)
    assert {harness.layout_of(s) for *_, s in harness.engine_plan("cpu")} == {"mp"}


def test_the_weighing_observer_is_no_difference_but_anything_else_is():
    weighed = fake_run("runai-0.15.7-dist",
                       env={"VLLM_CPU_OMP_THREADS_BIND": "0|1", "LAB_LIVENESS": "1"})
    assert harness.differences_besides_loader(weighed, fake_run("auto")) == []
    other = fake_run("runai-0.15.7-dist",
                     env={"VLLM_CPU_OMP_THREADS_BIND": "0|1", "LAB_SOMETHING": "1"})
    assert harness.differences_besides_loader(other, fake_run("auto")) != []


def placed(*nodes) -> dict:
    return {"ranks": [{"rank": r, "ray_node": node} for r, node in enumerate(nodes)]}


def test_workers_must_run_where_the_layout_puts_them():
    assert harness.placement_problems(placed("127.0.0.2", "127.0.0.3"), "ray2nodes") == []
    assert harness.placement_problems(placed("127.0.0.2", "127.0.0.2"), "ray1node") == []
    assert harness.placement_problems(placed("127.0.0.2", "127.0.0.2"), "ray2nodes") != []
    assert harness.placement_problems(placed("127.0.0.2", "127.0.0.3"), "ray1node") != []
    assert harness.placement_problems(placed("10.0.0.5", "127.0.0.3"), "ray2nodes") != []
    assert harness.placement_problems(placed(None, None), "ray1node") != []
    assert harness.placement_problems(placed(None, None), "mp") == []
    assert harness.placement_problems(placed("127.0.0.2", None), "mp") != []


def test_a_runs_ray_nodes_are_a_setting_like_any_other():
    one, two = fake_run("auto"), fake_run("runai-0.15.7-dist")
    for rank, node in zip(two["ranks"], ("127.0.0.2", "127.0.0.3"), strict=True):
        rank["ray_node"] = node
    assert harness.differences_besides_loader(two, one) != []


def test_a_gpu_demo_cut_short_goes_on_where_it_stopped(tmp_path, monkeypatch):
    """Each run is kept as it ends; a second call runs only what is missing,
    and every model's first run goes alone before the rest (one Triton
    compile per model on a fresh node)."""
    import threading

    plan = harness.engine_plan("cuda")
    started: list[tuple] = []
    claimed: set[tuple] = set()
    lock = threading.Lock()

    def generate(tree, model_dir, loader, reloads, layout):
        with lock:  # the auto run and its repeat differ in nothing given here
            step = next(s for s in plan if (s[0], s[1], s[2]) == (model_dir, tree, loader)
                        and (s[3] == harness.reload_scenario("cuda")) == bool(reloads)
                        and s not in claimed)
            started.append(step)
            if len(started) == 5:
                raise RuntimeError("the node went away")
            claimed.add(step)
        return {"run": list(step)}

    monkeypatch.setattr(harness, "generate", generate)
    models = {m for m, *_ in plan}
    with pytest.raises(RuntimeError, match="went away"):
        harness.engine_runs(lambda kind: kind, plan, device="cuda", keep=tmp_path)
    assert {s[0] for s in started[:len(models)]} == models
    # The runs beside the failed one went on and were kept; it was not.
    kept = len(list(tmp_path.glob("*.json")))
    assert kept == len(started) - 1
    again = len(started)
    runs = harness.engine_runs(lambda kind: kind, plan, device="cuda", keep=tmp_path)
    assert len(started) - again == len(plan) - kept
    assert list(runs) == [harness.key_of(s) for s in plan]
    # (A fake cannot tell the auto run from its repeat; the rest it can.)
    assert all(runs[harness.key_of(s)]["run"][:3] == list(s[:3]) for s in plan)
