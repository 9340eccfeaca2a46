# Two entry points for a fresh machine: `make demo` and `make test` (see README).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test test-slow fuzz lint fetch clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned first so nothing later can pull a different (multi-GB) build
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -c "import torch, numpy; assert torch.__version__.startswith('2.14.1'), torch.__version__; assert numpy.__version__ < '2', numpy.__version__"
	touch $@

fetch: install
	$(BIN)/prepcodec models fetch

demo: fetch
	$(BIN)/prepcodec demo

lint: install
	$(BIN)/ruff check src tests scripts

test: fetch lint
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: fetch
	$(BIN)/pytest -q -m slow $(PYTEST_ARGS)

FUZZ_EXAMPLES ?= 2000
fuzz: install
	PREPCODEC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q tests/test_fuzz.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
