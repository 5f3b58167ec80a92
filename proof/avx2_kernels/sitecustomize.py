"""Run vLLM on its AVX2 CPU kernels on a CPU that also has AVX-512.

Put on PYTHONPATH by proof/harness.py (kernels="avx2"); Python imports it at
start-up in every process, engine workers included. vLLM picks its kernel
build (`_C`, `_C_AVX512` or `_C_AVX2`) and some code paths (AMX, AVX-512
attention) by asking torch what the CPU supports, so torch is made to answer
as an AVX2-only CPU would. ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA, set
beside it, do the same for torch's and oneDNN's own kernels.
"""

import torch.cpu


def _unsupported() -> bool:
    return False


for _name in ("_is_avx512_supported", "_is_avx512_vnni_supported", "_is_avx512_bf16_supported",
              "_is_amx_tile_supported", "_is_amx_fp16_supported"):
    if hasattr(torch.cpu, _name):
        setattr(torch.cpu, _name, _unsupported)
