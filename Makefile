# Every target installs the pinned environment into .venv first (once per requirements.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo_out
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo bench gpu-check clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-testdata.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -r requirements-testdata.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job end to end on the built-in synthetic corpus (CPU, ~7 minutes on 2 cores):
# corpus -> LV-MAE pretraining (lvmae_tiny; reconstruction error vs two baselines) ->
# attentive (paper Table 7 settings) and linear probes of LV-MAE and of the raw embeddings,
# 3 seeds -> the table. Why --blr 6.4e-2 and the linear probe's --lr 1e-2: README, "The demo".
demo: $(STAMP)
	rm -rf $(DEMO)
	$(PY) -m datasets.synthetic --out $(DEMO)/corpus --num_videos 800
	$(PY) main_pretrain.py --data_path $(DEMO)/corpus/pretrain --output_dir $(DEMO)/pretrain --dataset demo \
		--model lvmae_tiny --epochs 16 --warmup_epochs 2 --blr 6.4e-2 --batch_size 16 --num_workers 0 --keep_every 0
	$(PY) sweep_probes.py --checkpoint $(DEMO)/pretrain/checkpoint-last.pth --output_dir $(DEMO)/probe --seeds 3 \
		--synthetic $(DEMO)/corpus/benchmark --synthetic_annotations $(DEMO)/corpus/tasks --probes ap
	$(PY) sweep_probes.py --checkpoint $(DEMO)/pretrain/checkpoint-last.pth --output_dir $(DEMO)/probe --seeds 3 \
		--synthetic $(DEMO)/corpus/benchmark --synthetic_annotations $(DEMO)/corpus/tasks --probes lp --lr 1e-2
	$(PY) reproduce_tables.py $(DEMO)/probe --tables synthetic --out $(DEMO)/table.md

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_pretrain.py
	$(PY) benchmarks/bench_probe.py
	$(PY) benchmarks/bench_extract.py

# Every CUDA path in one command, with the machine's own Python and PyTorch (no .venv: a GPU
# machine brings its CUDA build); one JSON line, exit 1 on any failure, "no GPU" and exit 0
# without one. `make test` runs its CPU mode (tests/test_gpu_check.py).
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf $(DEMO) .pytest_cache
