# mri-recon: every target that needs the environment depends on .venv, so a fresh clone needs
# nothing done before `make train` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo
RUNS := runs
ABLATIONS := $(RUNS)/ablations/$(shell date +%Y-%m-%d_%H-%M-%S)

.PHONY: install wheels gpu-check data train eval tensorboard test test-all docs docs-serve bench ablations lint clean

install: $(STAMP)

# Offline, on a GPU server with its own PyTorch and no internet: `make wheels` (on a machine with
# network) gathers every other dependency as wheels; `make install WHEELS=DIR` (or any target,
# e.g. `make gpu-check WHEELS=DIR`) then makes .venv on top of the PyTorch already installed
# (--system-site-packages) and installs from DIR alone.
WHEELS ?=
ifeq ($(strip $(WHEELS)),)
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)
else
$(STAMP): pyproject.toml constraints.txt
	@ls $(WHEELS)/*.whl >/dev/null 2>&1 || { echo "WHEELS=$(WHEELS): no wheels there (make them with 'make wheels' on a machine with network)" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	@# --system-site-packages reaches the base interpreter's packages only: where $(PYTHON) is
	@# itself a virtual environment (a GPU image's /opt/.../.venv), its packages are added by path.
	$(PYTHON) -c "import site; print(*site.getsitepackages(), sep='\n')" \
		> "$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/base_python.pth"
	@$(BIN)/python -c "import torch" 2>/dev/null || { echo "WHEELS=$(WHEELS): $(PYTHON) has no PyTorch to build on (install the one for this machine's GPU first)" >&2; exit 2; }
	$(BIN)/pip install --quiet --no-index --no-deps $(WHEELS)/*.whl
	$(BIN)/pip install --quiet --no-index --no-deps --no-build-isolation -e .
	touch $(STAMP)
endif

# Every dependency but PyTorch as wheels, in WHEELS_OUT, for WHEELS_PYTHON (default: this one).
WHEELS_OUT ?= wheels
WHEELS_PYTHON ?=
wheels: $(STAMP)
	$(BIN)/python scripts/gather_wheels.py --out $(WHEELS_OUT) $(if $(WHEELS_PYTHON),--python $(WHEELS_PYTHON))

# On a CUDA machine: make train's run, its profile and its evaluation on the GPU, the suite with
# CUDA visible, a budgeted run, the GPU benchmarks; writes docs/gpu.md (each stage under its own
# limit; docs/gpu.md has each stage's seconds on an H200). GPU_CHECK_ARGS: e.g.
# --time-limit 540, or --stages suite,bench (scripts/gpu_check.py --help).
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

$(DEMO)/singlecoil_train: | $(STAMP)
	$(BIN)/mri-recon-data out=$(DEMO)

data: $(STAMP)
	$(BIN)/mri-recon-data out=$(DEMO)

# The demo run: 32 epochs, or TRAIN_TIME of training (the schedule laid over it) where the CPU is
# too slow for 32 epochs in that time, so that `make train` ends inside 10 minutes, install and
# data included. `make train TRAIN_TIME=null` always trains the 32 epochs.
TRAIN_TIME ?= 00:05:30
train: $(STAMP) | $(DEMO)/singlecoil_train
	$(BIN)/mri-recon-train trainer.max_time=$(TRAIN_TIME) $(ARGS)

# Evaluates the newest demo training run (best checkpoint) on the val split.
eval: $(STAMP) | $(DEMO)/singlecoil_train
	@run=$$(ls -td $(RUNS)/train/*/checkpoints/best.pt 2>/dev/null | head -n 1); \
	if [ -z "$$run" ]; then echo "no checkpoint under $(RUNS)/train/: run 'make train' first" >&2; exit 2; fi; \
	$(BIN)/mri-recon-eval checkpoint=$$run $(ARGS)

# Serves on this machine only (reach it from elsewhere with `ssh -L 6006:localhost:6006 HOST`);
# `make tensorboard TB_HOST=0.0.0.0` serves on every interface, to anyone who can reach the port.
TB_HOST ?= localhost
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir $(RUNS) --host $(TB_HOST)

# One pytest worker per core (pytest-xdist), each with one torch thread: most tests are short
# launches and tiny models that keep one core busy, so two threads in each of two workers only
# make them wait on each other. Run one test alone with `.venv/bin/pytest tests/... -k NAME`.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/pytest -q -n auto --dist worksteal
test: $(STAMP) docs
	$(PYTEST) -m "not slow"

test-all: $(STAMP) docs
	$(PYTEST)

# The documentation site (mkdocs.yml): --strict fails on a broken link, an unknown anchor or a
# page missing from the navigation (not with --quiet, which hides the warnings it counts);
# `make test` runs it. docs-serve: http://localhost:8000.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
docs: $(STAMP)
	$(MKDOCS) build --strict

docs-serve: $(STAMP)
	$(MKDOCS) serve

bench: $(STAMP) | $(DEMO)/singlecoil_train
	$(BIN)/python scripts/benchmark.py

# The lecture's optimizer and normalization sweeps on the demo data, each run twice: the same
# epochs for every run, then the same wall-clock budget for every run (ABLATION_TIME, what a
# batch-8 run of the epoch sweep takes on a 2-core Xeon with bf16), since an optimizer or batch
# size that is cheaper per step gets more steps in equal time (63 min on that CPU). Then one
# plot and table per sweep (comparison.png, comparison.md) in runs/ablations/<time>/.
ABLATION_TIME ?= 00:00:23
ablations: $(STAMP) | $(DEMO)/singlecoil_train
	$(BIN)/mri-recon-train -m experiment=optimizer_ablation hydra.sweep.dir=$(ABLATIONS)/optimizer
	$(BIN)/mri-recon-train -m experiment=norm_ablation hydra.sweep.dir=$(ABLATIONS)/norm
	$(BIN)/mri-recon-train -m experiment=optimizer_ablation trainer.max_epochs=null \
	    trainer.max_time=$(ABLATION_TIME) hydra.sweep.dir=$(ABLATIONS)/optimizer_budget
	$(BIN)/mri-recon-train -m experiment=norm_ablation trainer.max_epochs=null \
	    trainer.max_time=$(ABLATION_TIME) hydra.sweep.dir=$(ABLATIONS)/norm_budget
	for sweep in optimizer norm optimizer_budget norm_budget; do \
	    $(BIN)/python scripts/compare_runs.py $(ABLATIONS)/$$sweep || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check mri_recon scripts tests
	$(BIN)/ruff format --check mri_recon scripts tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache site
