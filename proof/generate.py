"""Start the real vLLM engine, read back what every rank loaded, and
generate greedily.

    python -m proof.generate MODEL_DIR LOADER [--reloads=N] [--layout=L] OUT.json

Every run on a device uses the same engine settings (lab/engine.py): on CPU
tensor parallel 2 on the mp executor, on a GPU tensor parallel 1; bfloat16
everywhere. Only the loader (lab.engine.LOADERS) differs between a run and
its reference, so the two can be compared exactly; a different parallel
layout rounds differently and greedy tokens of a random tiny model flip on
near-ties.

Run once per tree (see harness.py). Writes, per rank, a digest of every
parameter right after loading (see proof/rankdigest.py), the generated
token ids, and the settings it ran with. With --reloads=N the engine then
reloads its weights in place N times, the way RL trainers do
(`reload_weights`: layerwise reload of checkpoint-format weights), and after
each reload records every rank's parameters, the tokens, and whether each
Mamba layer's conv weights still alias its conv1d parameter.

With --layout=ray1node or ray2nodes (CPU only, lab/engine.LAYOUTS) the
engine runs on vLLM's Ray executor: this process starts a Ray cluster of one
or two nodes on the loopback network with its own environment (so Ray's
workers import the same tree and streamer), and stops it when the run ends
or fails (lab/raycluster.py). Each rank then also reports its Ray node, and
what its load_weights held after each step (rankdigest: LAB_LIVENESS).
"""

from __future__ import annotations

import json
import os
import sys

from lab.engine import MAX_TOKENS, PROMPTS, engine_args, engine_env, recorded_env


def option(name: str, default):
    return next((type(default)(a.split("=", 1)[1]) for a in sys.argv[3:-1]
                 if a.startswith(f"--{name}=")), default)


def main() -> None:
    model_dir, loader = sys.argv[1], sys.argv[2]
    reloads, layout = option("reloads", 0), option("layout", "mp")
    os.environ.update(engine_env(loader, layout=layout))
    from lab import cpushm
    from lab.raycluster import cluster_for

    cpushm.sweep()  # a killed engine's segment must not block this one's port

    with cluster_for(layout):
        run(model_dir, loader, reloads, layout)


def run(model_dir: str, loader: str, reloads: int, layout: str) -> None:
    out = sys.argv[-1]
    from vllm import LLM, SamplingParams

    args = engine_args(model_dir, loader, layout=layout)
    llm = LLM(**args)
    ranks = sorted(llm.collective_rpc("loaded_param_digests"), key=lambda r: r["rank"])
    sampling = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    outputs = llm.generate(PROMPTS, sampling)
    history = []
    if reloads:
        before = sorted(llm.collective_rpc("param_digests_now"), key=lambda r: r["rank"])
        for i in range(reloads):
            llm.collective_rpc("reload_weights")
            now = sorted(llm.collective_rpc("param_digests_now"), key=lambda r: r["rank"])
            tokens = [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, sampling)]
            history.append({
                "reload": i + 1, "tokens": tokens,
                "differing_per_rank": [sorted(n for n, d in r["params"].items()
                                              if b["params"].get(n) != d)
                                       for r, b in zip(now, before, strict=True)],
                "alias_kept": all(r["mamba_alias_kept"] for r in now),
            })
    import runai_model_streamer
    import vllm

    result = {
        "engine_args": args,
        "layout": layout,
        "env": recorded_env(),
        "vllm_file": vllm.__file__,
        "runai_file": runai_model_streamer.__file__,
        "ranks": ranks,
        "tokens": [list(o.outputs[0].token_ids) for o in outputs],
        "text": [o.outputs[0].text for o in outputs],
        "reloads": history,
    }
    if layout != "mp":
        # The engine and its workers stop before the cluster under them goes.
        llm.llm_engine.engine_core.shutdown()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
