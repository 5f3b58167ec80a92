"""vLLM general plugin: make 0.21.0's CPU MoE fallback usable on AVX2 machines.

vLLM 0.21.0's torch MoE fallback on CPU maps SiLU to a lambda that builds a
`SiluAndMul` CustomOp on every forward call; building a CustomOp reads the
current vLLM config, which is not set during the forward pass, so Llama 4
dies with "Current vLLM config is not set". The op's own `forward_native` is
a static method: calling it directly computes the same thing without
building the op.

This is not part of the patch series (it is a different bug and the series
stays three commits); it is installed only into this repository's CPU
test/demo environment and applies to the base and the patched tree alike.
"""


def register() -> None:
    try:
        from vllm.model_executor.layers.activation import SiluAndMul
        from vllm.model_executor.layers.fused_moe import cpu_fused_moe
        from vllm.model_executor.layers.fused_moe.activation import MoEActivation
    except ImportError:  # not a vLLM with this fallback: nothing to do
        return
    table = getattr(cpu_fused_moe, "_CPU_MOE_ACT_FN", None)
    if table is not None and MoEActivation.SILU in table:
        table[MoEActivation.SILU] = SiluAndMul.forward_native
