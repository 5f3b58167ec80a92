"""The audit: its three streams on toy loaders (fast), then calibration on the
real trees: it must flag what the series fixes on v0.21.0, pass it on the fork,
keep flagging a model the series leaves alone, and pass plain Llama on both."""

import pytest
import torch

from audit import judge
from lab import streams


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(8))
        self.b = torch.nn.Parameter(torch.zeros(8))
        self.c = torch.nn.Parameter(torch.zeros(4, 2))


def checkpoint():
    generator = torch.Generator().manual_seed(0)
    tensors = [(name, torch.randn(shape, generator=generator))
               for name, shape in [("a", (8,)), ("b", (8,)), ("c", (4, 2))]]
    return lambda: iter(tensors)


def copy_each_step(model, weights):
    for name, tensor in weights:
        getattr(model, name).data.copy_(tensor)


def collect_then_copy(model, weights):
    for name, tensor in list(weights):
        getattr(model, name).data.copy_(tensor)


def hold_first_to_the_end(model, weights):
    held = None
    for name, tensor in weights:
        if name == "a":
            held = tensor
        else:
            getattr(model, name).data.copy_(tensor)
    model.a.data.copy_(held)


def keep_objects_copy_each_step(model, weights):
    kept = []
    for name, tensor in weights:
        getattr(model, name).data.copy_(tensor)
        kept.append(tensor)


def run(load_weights):
    source = checkpoint()
    states = []
    for weights in (streams.private_copies(source), streams.reused_buffer(source)):
        model = Toy()
        load_weights(model, weights)
        states.append(streams.state_of(model))
    liveness = streams.Liveness(source)
    load_weights(Toy(), liveness)
    return judge.verdict(states[0], states[1], liveness)


def test_a_loader_that_copies_each_step_is_safe():
    verdict, evidence = run(copy_each_step)
    assert verdict == "safe"
    assert evidence["peak_alive"] == 1


def test_a_loader_that_collects_the_stream_is_stale_everywhere():
    verdict, evidence = run(collect_then_copy)
    assert verdict == "stale"
    # The buffer is poisoned once more after the last tensor, so even "c" is lost.
    assert evidence["corrupted"] == ["a", "b", "c"]
    assert evidence["peak_alive"] == evidence["tensors"] == 3


def test_holding_one_tensor_to_the_end_is_stale_for_that_parameter_only():
    verdict, evidence = run(hold_first_to_the_end)
    assert verdict == "stale"
    assert evidence["corrupted"] == ["a"]
    # The held tensor and the one in the loop variable: not a memory problem,
    # a correctness one.
    assert evidence["peak_alive"] == 2


def test_keeping_every_tensor_object_materializes():
    verdict, evidence = run(keep_objects_copy_each_step)
    assert verdict == "materializes"
    assert evidence["peak_alive_fraction"] == 1.0


def test_the_reused_buffer_is_poisoned_after_the_last_tensor():
    kept = list(streams.reused_buffer(checkpoint()))
    assert all(torch.isnan(tensor).all() for _, tensor in kept)


CALIBRATION = ["LlamaForCausalLM", "Llama4ForConditionalGeneration",
               "NemotronH_Nano_VL_V2", "GraniteMoeForCausalLM"]


@pytest.mark.integration
def test_calibration_on_base_and_patched(tmp_path):
    from audit import run as audit_run

    results = audit_run.audit(["base", "patched"], CALIBRATION, out=tmp_path)
    verdict = {(r["architecture"], r["tree"]): r for r in results}
    print({k: v["verdict"] for k, v in verdict.items()})

    # v0.21.0 flags both models the series fixes and the audited offender...
    for arch in ("Llama4ForConditionalGeneration", "NemotronH_Nano_VL_V2",
                 "GraniteMoeForCausalLM"):
        assert verdict[arch, "base"]["verdict"] == "stale", arch
        assert verdict[arch, "base"]["evidence"]["peak_alive_fraction"] > 0.9, arch
    # ...the fork passes the two fixed models and still flags the offender...
    for arch in ("Llama4ForConditionalGeneration", "NemotronH_Nano_VL_V2"):
        assert verdict[arch, "patched"]["verdict"] == "safe", arch
    assert verdict["GraniteMoeForCausalLM", "patched"]["verdict"] == "stale"
    # ...and plain Llama is safe on both.
    assert verdict["LlamaForCausalLM", "base"]["verdict"] == "safe"
    assert verdict["LlamaForCausalLM", "patched"]["verdict"] == "safe"
