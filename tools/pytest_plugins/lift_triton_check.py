"""A pytest plugin for `make roll`: lift the CPU platform's "x86 CPUs require
triton-cpu" check of newer vLLM releases (0.34 and later), which no package
registry can satisfy here.

The series' tests build a model from a tiny config and call its
`load_weights`; no Triton kernel runs in them. The check stops them at setup
all the same, so without this the roll has no evidence on those releases.
Every verdict reached with it says so (tools/roll.py).
"""


def pytest_configure(config):
    import vllm.triton_utils as triton_utils

    # The platform reads this at config time (`from vllm.triton_utils import
    # HAS_TRITON` inside check_and_update_config), so setting it here is enough.
    triton_utils.HAS_TRITON = True
