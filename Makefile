# Every target installs the pinned environment into .venv first (once per requirements.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo_out
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job end to end on the built-in synthetic corpus (CPU, a few minutes).
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) -m datasets.synthetic --out $(DEMO)/corpus

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(DEMO) .pytest_cache
