# The fork's front door. Every target does its own set-up on a fresh machine.
#   make demo   the main job: base vs patched with the real streamer and engine
#   make test   every test: tooling, series lint, the series' tests on both trees
#               against each PR body's Test Result, integration
# On a GPU node, after `make gpu-env`: make demo DEVICE=cuda, make bench DEVICE=cuda.
PY := .venv/bin/python
# The GPU environment's interpreter, written by `make gpu-env`; without it,
# one line that says so and a failed target.
GPU_PY = $$(cat build/gpu-python 2>/dev/null || { echo "error: no GPU environment here: run make gpu-env first" >&2; echo false; })
ON_CPU := $(if $(filter cuda,$(DEVICE)),,env)

.PHONY: demo test bench audit tree export check check-all env lock roll gpu-env gpu-wheelhouse

demo: $(ON_CPU)
ifeq ($(DEVICE),cuda)
	VLLM_FORK_DEVICE=cuda $(GPU_PY) -m proof.demo
else
	$(PY) -m proof.demo
endif

test: env
	$(PY) -m pytest -q tools
	$(MAKE) --no-print-directory check
	python3 -m tools.bodies
	$(PY) -m pytest -q lab proof bench audit

# Host memory and load time against the floor: build/bench/, docs/benchmarks.md.
# DEVICE=cuda: a Llama-4-Scout-shaped slice into the real engine on one GPU
# (build/bench/results-cuda.json, docs/benchmarks-gpu.md).
bench: $(ON_CPU)
ifeq ($(DEVICE),cuda)
	VLLM_FORK_DEVICE=cuda $(GPU_PY) -m bench.gpu
else
	$(PY) -m bench.run
	$(PY) -m bench.last_patch
endif

# Which architectures load safely from streaming loaders: build/audit/, docs/streaming-safety.md.
audit: env
	$(PY) -m audit.run

# build/vllm: the pinned sdist as v0.21.0 plus the series, one commit a patch.
# Reading the sdist's metadata imports torch, hence the locked packages first.
tree:
	python3 -m tools.env packages
	python3 -m tools.tree

# Write build/vllm's commits back into patches/ (after editing the tree).
export:
	python3 -m tools.export

# Upstream review readiness: series lint (PR body, DCO, focus), the drift gate
# (patches/ == the tree's commits), and upstream's own pre-commit hooks, offline,
# on the files each commit changes.
check:
	test -d build/vllm/.git || $(MAKE) --no-print-directory tree
	python3 -m tools.lint
	python3 -m tools.export --check
	python3 -m tools.precommit

# What upstream CI runs: every hook on the whole tree at HEAD, compared with v0.21.0.
check-all:
	test -d build/vllm/.git || $(MAKE) --no-print-directory tree
	python3 -m tools.precommit --all-files

# .venv: locked packages, the tree editable with the CPU kernels, smoke check.
env:
	python3 -m tools.env

# Re-resolve env/requirements.lock (only when requirements.in or the pin changes).
lock:
	python3 -m tools.lock

# Roll the series onto another upstream release: make roll TO=0.22.0 [WRITE=1].
# Works under build/roll/$(TO)/; only WRITE=1 changes the repository.
roll:
	@test -n "$(TO)" || { echo "usage: make roll TO=<version> [WRITE=1]"; exit 2; }
	$(MAKE) --no-print-directory env
	python3 -m tools.roll $(TO) $(if $(WRITE),--write)

# GPU nodes: build/vllm with the pinned official CUDA kernels, no compile.
#   make gpu-env [PYTHON=python3.12 | EXISTING_TORCH=/path/to/python] [WHEELHOUSE=dir]
gpu-env:
	python3 -m tools.gpu_env $(if $(PYTHON),--python $(PYTHON)) \
	  $(if $(EXISTING_TORCH),--existing-torch $(EXISTING_TORCH)) \
	  $(if $(WHEELHOUSE),--wheelhouse $(WHEELHOUSE))

# On a connected machine, for an offline GPU node with the given Python:
#   make gpu-wheelhouse DEST=dir [PYTHON=python3.12 | PYTHON_VERSION=3.12] [EXISTING_TORCH=1]
# EXISTING_TORCH=1: for a node that has torch 2.11.0 (no torch stack, a few hundred MB).
gpu-wheelhouse:
	@test -n "$(DEST)" || { echo "usage: make gpu-wheelhouse DEST=<new dir> [PYTHON=python3.12 | PYTHON_VERSION=3.12] [EXISTING_TORCH=1]"; exit 2; }
	$(MAKE) --no-print-directory tree
	python3 -m tools.gpu_env wheelhouse $(DEST) $(if $(PYTHON),--python $(PYTHON)) \
	  $(if $(PYTHON_VERSION),--for-python $(PYTHON_VERSION)) $(if $(EXISTING_TORCH),--existing-torch)
