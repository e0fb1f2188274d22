# Two commands on a fresh machine: `make run` and `make test`. Both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Two BLAS threads on a shared 2-core box ran 10-40x slower than one.
export OMP_NUM_THREADS ?= 1
ARGS ?=
# make run's budget: `cpu` finishes in under 20 minutes on 2 cores, SASRec baseline included; PRESET=paper is the reference.
PRESET ?= cpu

.PHONY: run test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: unpinned torch pulls a multi-GB CUDA build. The CPU wheel comes from
	# PIP_FIND_LINKS where the machine provides one; elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu.
	$(PY) -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# MovieLens-100K ships inside this wheel; --no-deps keeps recbole's heavy deps out (it is never imported).
	$(PY) -m pip install --no-deps recbole==1.2.1
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lares-rl run preset=$(PRESET) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

clean:  # the venv and the data cache; results in runs/ and multirun/ are kept
	rm -rf $(VENV) .lares_cache
