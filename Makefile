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

# The main job end to end on the built-in synthetic corpus (CPU, 2 threads, every RNG seeded; each
# stage prints its wall time, all of them again at the end): corpus (2,040 pretraining videos;
# 2,000 labelled: 560 train / 420 val / 1,020 test, the 1,200 --extra_videos only in val and test)
# -> LV-MAE pretraining (lvmae_tiny, 16 epochs) -> probes of LV-MAE and of the raw embeddings, 3
# seeds: attentive (Table 7) with the probe's own [CLS] + sin-cos positions and without added
# positions, with all and with 10% of the training labels; the converged linear probe (L-BFGS);
# the pace regression head -> the table. Choices: README, "The demo".
DEMO_SWEEP = $(PY) sweep_probes.py --checkpoint $(DEMO)/pretrain/checkpoint-last.pth --output_dir $(DEMO)/probe \
	--seeds 3 --synthetic $(DEMO)/corpus/benchmark --synthetic_annotations $(DEMO)/corpus/tasks
# $(call stage,NAME,COMMAND): run COMMAND; print and record its wall time
stage = @echo "[demo] $(1): $(2)"; t=$$(date +%s); $(2) && echo "[demo] $(1): $$(($$(date +%s) - t)) s" >> $(DEMO)/times.txt \
	&& tail -n 1 $(DEMO)/times.txt

demo: export OMP_NUM_THREADS := 2
demo: export MKL_NUM_THREADS := 2
demo: export PYTHONHASHSEED := 0
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(call stage,corpus,$(PY) -m datasets.synthetic --out $(DEMO)/corpus --num_videos 800 \
		--extra_videos 1200 --extra_fractions 0 0.25 0.75)
	$(call stage,pretraining,$(PY) main_pretrain.py --data_path $(DEMO)/corpus/pretrain --output_dir $(DEMO)/pretrain \
		--dataset demo --model lvmae_tiny --epochs 16 --warmup_epochs 2 --blr 6.4e-2 --batch_size 16 --num_workers 0 \
		--keep_every 0)
	$(call stage,AP with sin-cos positions (grammar; pace),$(DEMO_SWEEP) --probes ap --tasks grammar pace \
		--probe_positions own)
	$(call stage,AP without added positions (grammar),$(DEMO_SWEEP) --probes ap --tasks grammar --probe_positions none)
	$(call stage,AP with sin-cos positions and 10% of the labels (grammar),$(DEMO_SWEEP) --probes ap --tasks grammar \
		--probe_positions own --label_fraction 0.1)
	$(call stage,converged linear probe (all tasks),$(DEMO_SWEEP) --probes lp --solver lbfgs)
	$(call stage,table,$(PY) reproduce_tables.py $(DEMO)/probe --tables synthetic label_efficiency \
		--out $(DEMO)/table.md --plot $(DEMO)/label_efficiency.png)
	@echo; echo "[demo] stage times (wall clock):"; cat $(DEMO)/times.txt; \
		awk '{s += $$(NF - 1)} END {print "[demo] total: " s " s"}' $(DEMO)/times.txt

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
