"""Reload a tiny NemotronH's weights in place, repeatedly, the way vLLM's
worker does it (`reload_weights` with checkpoint-format weights).

    python -m proof.reloadcheck MODEL_DIR RELOADS [--no-alias-check] OUT.json

Run once per tree (see harness.py). After each reload every parameter must
be bit-identical to the first load, and each `MambaMixer2.conv_weights`
must still share storage with its `conv1d.weight`. `--no-alias-check`
replaces the series' alias test with one that never matches, to time the
reload without it (benchmark only).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    model_dir, reloads, out = sys.argv[1], int(sys.argv[2]), sys.argv[-1]
    import torch
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.mamba.mamba_mixer2 import MambaMixer2
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.model_executor.model_loader.reload import (
        finalize_layerwise_reload,
        initialize_layerwise_reload,
    )

    from lab.model import build_model

    # On CPU, processing an unquantized linear layer repacks its weight for
    # oneDNN and replaces the parameter with an empty tensor, so layerwise
    # reload cannot copy into it (true of every model on CPU, with or without
    # the series). On GPU this step does nothing; do the same here. Nothing
    # runs a forward pass in this process.
    UnquantizedLinearMethod.process_weights_after_loading = lambda self, layer: None

    if "--no-alias-check" in sys.argv:
        from vllm.model_executor.model_loader.reload import meta

        meta._is_param_alias_buffer = lambda *args: False

    config, model = build_model(model_dir, "safetensors", {})
    loader = get_model_loader(config.load_config)
    loader.load_weights(model, config.model_config)
    first = {name: p.detach().clone() for name, p in model.named_parameters()}
    mixers = [m for m in model.modules() if isinstance(m, MambaMixer2)]

    history = []
    times = []
    for i in range(reloads):
        start = time.perf_counter()
        with torch.no_grad():
            initialize_layerwise_reload(model)
            model.load_weights(loader.get_all_weights(config.model_config, model))
            finalize_layerwise_reload(model, config.model_config)
        times.append(time.perf_counter() - start)
        params = dict(model.named_parameters())
        bad = sorted(n for n, p in params.items() if not torch.equal(p, first[n]))
        nan = sorted(n for n, p in params.items() if torch.isnan(p).any())
        aliased = all(m.conv_weights.untyped_storage().data_ptr()
                      == m.conv1d.weight.untyped_storage().data_ptr() for m in mixers)
        history.append({"reload": i + 1, "differing": bad, "nan": nan, "alias_kept": aliased})

    with open(out, "w") as f:
        json.dump({"mamba_mixers": len(mixers), "history": history, "reload_s": times}, f)
    os._exit(0)


if __name__ == "__main__":
    main()
