# Every target installs the pinned environment into .venv first (once per requirements.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo_out
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo demo-contrastive bench gpu-check clean

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
		--dataset demo --model lvmae_tiny --epochs 16 --warmup_epochs 2 --blr 1.6e-2 --batch_size 16 --num_workers 0 \
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

# Masked video-text contrastive training and its zero-shot evaluations on the synthetic corpus in a
# tiny CLIP text tower's space (CPU, 2 threads, seeded): the tower -> corpus (its scene prototypes
# are the tower's caption embeddings) -> text databases (video descriptions, order questions) ->
# an MAE-only LV-MAE (for the ridge baseline) and contrastive runs at mask ratio 0 / 0.25 / 0.5 /
# 0.75, all at the same budget -> the length trade-off at a short window (DC_WINDOW segments): unmasked
# at DC_WINDOW vs 75% masked at 4 x DC_WINDOW (the same encoder tokens per video at most) ->
# retrieval and order questions for the raw-mean baseline, the ridge-mapped LV-MAE and every
# contrastive run -> the tables and the trade-off plot.
# README "Retrieval and zero-shot QA", docs/contrastive.md "Evaluation".
DC := demo_contrastive
DC_EPOCHS ?= 5
DC_TRAIN = $(PY) main_pretrain.py --data_path $(DC)/corpus/pretrain --dataset demo-contrastive --model lvmae_tiny \
	--epochs $(DC_EPOCHS) --warmup_epochs 1 --num_workers 0 --keep_every 0 --no_progress
DC_BASE = --data_path $(DC)/corpus/benchmark --splits $(DC)/corpus/latents.csv --dataset synthetic \
	--output_dir $(DC)/eval --device cpu
DC_TOWER = --encoder clip --checkpoint $(DC)/tiny_clip
DC_RATIOS = 0 0.25 0.5 0.75
DC_WINDOW ?= 16
DC_CON = --objective contrastive --texts $(DC)/texts_pretrain --blr 1.6e-2 --batch_size 64 --input_scale sqrt_dim
DC_SHORT = $(DC)/window_$(DC_WINDOW)_mask_0
DC_LONG_WINDOW = $(shell echo $$((4 * $(DC_WINDOW))))
DC_LONG = $(DC)/window_$(DC_LONG_WINDOW)_mask_0.75
DC_RUNS = $(foreach r,$(DC_RATIOS),$(DC)/contrastive_$(r)) $(DC_SHORT) $(DC_LONG)
cstage = @echo "[demo-contrastive] $(1): $(2)"; t=$$(date +%s); $(2) && echo "[demo-contrastive] $(1): \
	$$(($$(date +%s) - t)) s" >> $(DC)/times.txt && tail -n 1 $(DC)/times.txt

demo-contrastive: export OMP_NUM_THREADS := 2
demo-contrastive: export MKL_NUM_THREADS := 2
demo-contrastive: export PYTHONHASHSEED := 0
demo-contrastive: $(STAMP)
	rm -rf $(DC) && mkdir -p $(DC)
	$(call cstage,tiny CLIP,$(PY) -m preprocessing.make_tiny_encoder --backend clip --out $(DC)/tiny_clip)
	$(call cstage,corpus,$(PY) -m datasets.synthetic --out $(DC)/corpus --text_encoder clip \
		--text_checkpoint $(DC)/tiny_clip --num_videos 600 --num_pretrain 1500 --num_movies 0 --extra_videos 600 \
		--extra_fractions 0 0.25 0.75)
	$(call cstage,texts,for s in pretrain benchmark; do $(PY) -m datasets.texts --texts $(DC)/corpus/texts.csv \
		--data_path $(DC)/corpus/$$s $(DC_TOWER) --output_dir $(DC)/texts_$$s || exit 1; done)
	$(call cstage,order questions,$(PY) -m datasets.questions --questions $(DC)/corpus/order_questions.csv \
		--data_path $(DC)/corpus/benchmark $(DC_TOWER) --output_dir $(DC)/order)
	$(call cstage,MAE-only pretraining,$(DC_TRAIN) --objective mae --blr 1.6e-2 --batch_size 16 --output_dir $(DC)/mae)
	$(call cstage,contrastive training x 4 ratios,for r in $(DC_RATIOS); do $(DC_TRAIN) $(DC_CON) \
		--mask_ratio $$r --output_dir $(DC)/contrastive_$$r || exit 1; done)
	$(call cstage,length: unmasked at $(DC_WINDOW) vs 75% masked at 4x,$(DC_TRAIN) $(DC_CON) --mask_ratio 0 \
		--num_patches $(DC_WINDOW) --output_dir $(DC_SHORT) && $(DC_TRAIN) $(DC_CON) --mask_ratio 0.75 \
		--num_patches $(DC_LONG_WINDOW) --output_dir $(DC_LONG))
	$(call cstage,evaluation,$(PY) eval_retrieval.py $(DC_BASE) --texts $(DC)/texts_benchmark --backbone raw \
		&& $(PY) eval_mcqa.py $(DC_BASE) --questions $(DC)/order --backbone raw \
		&& $(PY) eval_retrieval.py $(DC_BASE) --texts $(DC)/texts_benchmark --backbone lvmae \
			--checkpoint $(DC)/mae/checkpoint-last.pth \
		&& $(PY) eval_mcqa.py $(DC_BASE) --questions $(DC)/order --backbone lvmae \
			--checkpoint $(DC)/mae/checkpoint-last.pth --ridge_texts $(DC)/texts_benchmark \
		&& for d in $(DC_RUNS); do c=$$d/checkpoint-last.pth; \
			$(PY) eval_retrieval.py $(DC_BASE) --texts $(DC)/texts_benchmark --backbone lvmae --checkpoint $$c > /dev/null \
			&& $(PY) eval_mcqa.py $(DC_BASE) --questions $(DC)/order --backbone lvmae --checkpoint $$c > /dev/null \
			|| exit 1; done)
	$(call cstage,tables,$(PY) engine_retrieval.py $(DC)/eval --dataset synthetic --out $(DC)/tables.md \
		--plot $(DC)/tradeoff.png)
	@echo; echo "[demo-contrastive] stage times (wall clock):"; cat $(DC)/times.txt; \
		awk '{s += $$(NF - 1)} END {print "[demo-contrastive] total: " s " s"}' $(DC)/times.txt

bench: $(STAMP)
	$(PY) benchmarks/bench_model.py
	$(PY) benchmarks/bench_pretrain.py
	$(PY) benchmarks/bench_probe.py
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_contrastive.py

# Every CUDA path in one command, with the machine's own Python and PyTorch (no .venv: a GPU
# machine brings its CUDA build); one JSON line, exit 1 on any failure, "no GPU" and exit 0
# without one. `make test` runs its CPU mode (tests/test_gpu_check.py).
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py

clean:
	rm -rf $(DEMO) $(DC) .pytest_cache
