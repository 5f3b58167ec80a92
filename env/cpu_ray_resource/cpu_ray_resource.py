"""vLLM platform plugin: let the Ray executor place workers on CPU nodes.

vLLM places each Ray worker on one unit of its platform's `ray_device_key`
resource. The CPU platform of vLLM 0.21.0 (and of every release up to 0.34.0)
leaves that key empty, so `distributed_executor_backend="ray"` stops with
"current platform cpu does not support ray". This names "GPU": vLLM's Ray
executors (V1 and the default V2) then ask Ray for one logical GPU slot per
worker, and read the slot back through Ray's accelerator ids, which exist
only for accelerator resources (a custom resource name would fail there).
The test cluster (lab/raycluster.py) declares those slots on CPU nodes; no
GPU is touched, and the CPU platform is otherwise unchanged.

A platform plugin, not a general one: vLLM resolves its platform, and so
calls this, in every process that asks for it, including a Ray worker before
it reads the key. It activates no platform of its own (returns None).

Not part of the patch series; installed only into this repository's CPU
test/demo environment, and applies to the base and the patched tree alike.
"""


def register() -> None:
    try:
        from vllm.platforms.cpu import CpuPlatform
    except ImportError:  # not a vLLM with this platform: nothing to do
        return None
    if not CpuPlatform.ray_device_key:
        CpuPlatform.ray_device_key = "GPU"
    return None
