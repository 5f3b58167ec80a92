"""A pytest plugin that injects the regression the liveness tests are named
after: the fixed models' `load_weights` first takes every weight it is given
into a list, then loads from that list.

    LAB_MATERIALIZE=list|clone|copy|contiguous

list keeps the yielded tensors; clone, copy and contiguous keep a private
copy of each (`.clone()`, `empty_like().copy_()`, a transposed
`.contiguous()`), so the yielded tensors themselves die at once. Used by
proof/test_liveness.py on the patched tree.
"""

import os

TAKE = {
    "list": lambda w: w,
    "clone": lambda w: w.clone(),
    "copy": lambda w: w.new_empty(w.shape).copy_(w),
    "contiguous": lambda w: w.t().contiguous().t() if w.dim() == 2 else w.contiguous().clone(),
}


def pytest_configure(config):
    from vllm.model_executor.models.mllama4 import Llama4ForConditionalGeneration
    from vllm.model_executor.models.nano_nemotron_vl import NemotronH_Nano_VL_V2

    take = TAKE[os.environ["LAB_MATERIALIZE"]]
    for cls in (Llama4ForConditionalGeneration, NemotronH_Nano_VL_V2):
        original = cls.load_weights

        def materializing(self, weights, _original=original):
            held = [(name, take(weight)) for name, weight in weights]
            return _original(self, iter(held))

        cls.load_weights = materializing
