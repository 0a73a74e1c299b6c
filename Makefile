# Lumiere reproduction: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON3 ?= python3
STAMP := $(VENV)/.installed
# Two cores on the reference machine: one intra-op pool per process, no oversubscription.
export OMP_NUM_THREADS ?= 2
# libgomp spin-waits by default: with any other busy process on a 2-core machine a step can take
# 10x longer (measured 25 s vs 2.5 s for one T2I step); passive waiting removes that.
export OMP_WAIT_POLICY ?= PASSIVE
export WANDB_MODE ?= offline
export HYDRA_FULL_ERROR ?= 0

.PHONY: help install lint test test-fast demo demo-gpu demo-apps data weights bench bench-gpu clean

help:  ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(STAMP)  ## Create .venv with the CPU stack (torch pinned by constraints-cpu.txt)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON3) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints-cpu.txt torch==2.13.0
	$(PIP) install -q -c constraints-cpu.txt -e '.[dev,cluster]'
	touch $(STAMP)

lint: install  ## ruff: lint rules and import order (pyproject.toml [tool.ruff])
	$(VENV)/bin/ruff check .

test: install  ## Run the test suite (CPU, about 10-12 minutes on 2 cores)
	$(PY) -m pytest -q

test-fast: install  ## Run the tests not marked slow
	$(PY) -m pytest -q -m "not slow"

DEMO_RUNS := demo_t2i demo_stunet demo_ssr_t2i demo_ssr
# The demo trains on a slice of the benchmark that a CPU can learn to follow in minutes: one shape
# (circle, square or triangle; red, green, blue or yellow; 1.5x the usual size) moving left, right,
# up or down at medium speed on a plain background, starting near the side it moves away from
# (--linear-start behind: every frame's position then tells the direction). `make data` writes the
# full benchmark. The base stages read it at 16x16 (data.resolution), the SSR upsamples to 64x64.
DEMO_SLICE := --restrict shape=circle,square,triangle --restrict color=red,green,blue,yellow --restrict motion=linear \
	--restrict speed=medium --restrict background=plain --restrict num_objects=one --object-scale 1.5 --linear-start behind
DEMO_DATA := -m lumiere.data.synthetic --out data/demo --train 512 --val 32 --test 64 --frames 32 --fps 16 --size 32 --hr-size 64 --seed 0 $(DEMO_SLICE)
# After stage 0 the demo has two independent branches (base STUNet | SSR stage 0, SSR, then the
# evaluation's model-independent reference rows), then two consumers (the model's evaluation row |
# the cascade). They run two at a time with one intra-op thread each: on 2 cores that beats one job
# on 2 threads (measured: 1.0 s/step per job on 1 thread, two at once, vs 0.75 s/step for one job
# on 2 threads). Each job's output is printed when it finishes (make -O); its full log is in
# outputs/<task>/<run>/<task>.log.
ONE_THREAD := OMP_NUM_THREADS=1
# `make demo SEED=1`: the run seed of every stage (model initialisation, training noise, data order,
# sampling); the benchmark's data stay those of seed 0.
SEED ?= 0
DEMO_PARALLEL := cpu_threads=1 trainer.enable_progress_bar=false seed=$(SEED)

demo: install  ## Synthetic benchmark -> T2I -> STUNet -> SSR + MultiDiffusion cascade -> evaluation, on CPU
	$(PY) $(DEMO_DATA)
	$(PY) train.py experiment=demo_t2i seed=$(SEED)
	@echo "now two jobs at a time: STUNet | SSR stage 0 + SSR + reference rows, then evaluation | cascade"
	@$(MAKE) --no-print-directory -j2 -O demo-after-t2i
	$(PY) -m lumiere.viz.curves $(foreach run,$(DEMO_RUNS),outputs/$(run)/demo/csv/metrics.csv) --out outputs/demo/loss_curves.png
	@echo "demo done: clips in outputs/demo_cascade/demo/videos (ssr/batch_00000/cascade.gif: base above SSR)," \
	      "table in outputs/evaluate/demo/synthetic_eval.md, loss curves in outputs/demo/loss_curves.png"

.PHONY: demo-after-t2i demo-stunet demo-ssr demo-references demo-cascade demo-eval
demo-after-t2i: demo-cascade demo-eval
demo-stunet:
	$(ONE_THREAD) $(PY) train.py experiment=demo_stunet $(DEMO_PARALLEL)
demo-ssr:
	$(ONE_THREAD) $(PY) train.py experiment=demo_ssr_t2i $(DEMO_PARALLEL)
	$(ONE_THREAD) $(PY) train.py experiment=demo_ssr $(DEMO_PARALLEL)
# The real / static / noise rows and the domain classifier do not depend on the model: computed
# here they are cached (outputs/artifacts/), and the model's evaluation only adds its own row.
demo-references: demo-ssr
	$(ONE_THREAD) $(PY) evaluate.py experiment=demo_eval ckpt_path=null run_name=demo_references cpu_threads=1 seed=$(SEED)
demo-cascade: demo-stunet demo-ssr
	$(ONE_THREAD) $(PY) generate.py experiment=demo_cascade cpu_threads=1 seed=$(SEED)
demo-eval: demo-stunet demo-references
	$(ONE_THREAD) $(PY) evaluate.py experiment=demo_eval cpu_threads=1 seed=$(SEED)

data: install  ## Generate the default synthetic benchmark under data/synthetic
	$(PY) -m lumiere.data.synthetic --out data/synthetic

# The demo at GPU length and twice the CPU demo's base resolution (32x32): a 2000-step T2I and 1250
# STUNet steps of 16 clips (a few minutes on one GPU). Runs in the GPU environment (environment.yml),
# not the CPU .venv: `make demo-gpu GPU_PY=python`.
GPU_PY ?= python

demo-gpu:  ## On a GPU: demo data -> 2000-step T2I -> 1250-step STUNet (32x32, batch 16) -> direction probe
	$(GPU_PY) $(DEMO_DATA)
	$(GPU_PY) train.py experiment=demo_gpu_t2i
	$(GPU_PY) train.py experiment=demo_gpu_stunet
	$(GPU_PY) -m lumiere.evaluation.probes stunet outputs/demo_gpu_stunet/demo/checkpoints/last.ckpt \
		--device cuda --scheduler ddpm --steps 50 --sheet outputs/demo_gpu_stunet/demo/probe_sheet.png

weights: install  ## Fetch, convert and verify (stored fingerprint) the I3D (Kinetics-400) weights used by FVD
	$(PY) -m lumiere.metrics.i3d_weights --verify

bench: install  ## Run the benchmark scripts (numbers go in docs/benchmarks.md)
	$(PY) benchmarks/bench_dataloader.py
	$(PY) benchmarks/bench_stunet.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_multidiffusion.py
	$(PY) benchmarks/bench_ssr_memory.py

bench-gpu:  ## On a GPU (conda env): planned vs measured memory, training throughput and MFU -> outputs/bench-gpu; SDPA kernels and STUNet cost -> outputs/gpu_checks
	PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 480 $(GPU_PY) benchmarks/gpu_plan_and_throughput.py --out outputs/bench-gpu
	PYTHON=$(GPU_PY) bash benchmarks/gpu_checks.sh outputs/gpu_checks

demo-apps: install  ## After `make demo`: style T2I, conditional <J,C,M> model, then every Sec. 4 application
	$(PY) train.py experiment=demo_style_t2i
	$(PY) train.py experiment=demo_conditional
	$(PY) -m lumiere.apps.gallery --conditional-ckpt outputs/demo_conditional/demo/checkpoints/last.ckpt \
		--base-ckpt outputs/demo_stunet/demo/checkpoints/last.ckpt --style-dir outputs/artifacts/style_t2i --out outputs/demo/apps

clean:  ## Remove outputs (keeps data/ and .venv)
	rm -rf outputs multirun lightning_logs wandb .pytest_cache
