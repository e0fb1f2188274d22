# Two commands on a fresh machine: `make run` and `make test`. Both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests and lint: one thread. Two busy-waiting OpenMP threads on a shared 2-core box ran 10-40x slower than one.
export OMP_NUM_THREADS ?= 1
ARGS ?=
# make run's budget: `cpu` trains every model to early stopping in about 16 minutes of wall time on
# 2 idle cores, SASRec baseline included; PRESET=paper is the reference.
PRESET ?= cpu
# make run uses every usable CPU: one process of RUN_THREADS threads (15.9 min on 2 idle cores, against
# 21.7 for two one-thread processes). Its OpenMP threads spin 3,000 rounds (GNU OpenMP's default is
# 300,000) before they sleep: a whole make run as fast as with the default (15.9 vs 16.4 min), and
# beside other jobs an SPT step ran at 121-134 windows/s instead of 7-50 (docs/scaling.md,
# benchmarks/omp_wait.py). On a machine that other jobs keep busy: make run RUN_THREADS=1.
RUN_THREADS ?= $(shell nproc 2>/dev/null || echo 1)
RUN_SPINCOUNT ?= 3000

.PHONY: run test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: unpinned torch pulls a multi-GB CUDA build. The CPU wheel comes from
	# PIP_FIND_LINKS where the machine provides one; elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu.
	$(PY) -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	# MovieLens-100K ships inside this wheel; --no-deps keeps recbole's heavy deps out (it is never
	# imported). Last, so that no later install reports recbole's deliberately missing dependencies.
	$(PY) -m pip install --no-deps recbole==1.2.1
	touch $(STAMP)

run: $(STAMP)
	OMP_NUM_THREADS=$(RUN_THREADS) GOMP_SPINCOUNT=$(RUN_SPINCOUNT) $(VENV)/bin/lares-rl run preset=$(PRESET) $(ARGS)

# The default suite deselects the tests marked slow (pyproject's addopts): child processes that train
# and get killed and resumed, torchrun, the benchmark chains. `make test ARGS="-m slow"` runs those.
# Either runs in TEST_JOBS pytest-xdist workers, one whole test file per worker at a time (loadfile: a
# module's shared fixture, e.g. one SPT checkpoint, is built once); TEST_JOBS=0 runs in this process.
TEST_JOBS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

# The house rules (docs/DESIGN.md section 5): ruff's lint and format, and import-linter's contracts
# (stages import downwards only, no import circles). import-linter reads an installed tree because
# envs/ and policies/ install as lares_rl.envs and lares_rl.policies.
IMPORT_TREE := build/import-tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf $(IMPORT_TREE)
	$(PY) -m pip install -q --no-deps --no-build-isolation --no-compile --target $(IMPORT_TREE) . 2>/dev/null
	cd $(IMPORT_TREE) && PYTHONPATH=. $(abspath $(VENV))/bin/lint-imports --config $(CURDIR)/.importlinter --no-cache

clean:  # the venv and the benchmarks' data cache (.lares_cache; the CLI's is per user, README section Data); results in runs/ and multirun/ are kept
	rm -rf $(VENV) .lares_cache build
