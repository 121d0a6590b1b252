# tilelang-repro. `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
# Which torch to install into a new environment (CI pins the CPU build: TORCH_SPEC=torch==2.13.0).
TORCH_SPEC ?= torch>=2.11,<=2.14.1
# Experiments measured by `make reproduce` on a machine with a GPU.
EXPERIMENTS ?= membw gemm flash_attention flash_attention_bwd train_step mla_decode dsa_indexer dsa_topk sparse_mla sparse_mla_bwd
RESULTS ?= results
# `make measure BUDGET=600`: whole seconds for the whole loop; no case starts after them (the one under way
# ends), later experiments are not started, and the same command resumes. Empty: no limit.
BUDGET ?=
LATEXMK ?= latexmk
# `make reproduce` on a GPU builds the baselines first; BASELINES=0 skips that.
BASELINES ?= 1
# Extra key=value overrides for python -m repro.baselines (e.g. sources_dir=third_party only=[fa3]).
BASELINES_ARGS ?=
# Options of python -m repro.quick (e.g. --only mla_decode --fail-on-regression).
QUICK_ARGS ?=

.PHONY: help setup test test-gpu baselines quick reproduce measure figures paper loc portability scaling clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

setup: $(VENV)/.installed  ## create .venv (reusing an installed torch/flash-attn) and install the suite

test: setup  ## CPU tests (GPU tests are skipped without a device)
	$(PY) -m pytest -q tests

test-gpu: setup  ## only the GPU tests (needs a CUDA device)
	$(PY) -m pytest -q -m gpu tests/gpu

baselines: setup  ## fetch and build the pinned comparators (FA2, FA3, FlashMLA, TileLang's examples, ...) into the cache
	$(PY) -m repro.baselines $(BASELINES_ARGS)

quick: setup  ## the quick scoreboard: every kernel at a few cases vs its best baseline, regressions marked (QUICK_ARGS=--fail-on-regression)
	$(PY) -m repro.quick --results $(RESULTS) $(QUICK_ARGS)

reproduce: setup  ## on a GPU: make baselines (unless BASELINES=0), measure every experiment; then regenerate the paper
	@if $(PY) -c "import sys; from repro.measure.hardware import detect_device; sys.exit(detect_device() is None)"; then \
	  if [ "$(BASELINES)" != 0 ]; then \
	    $(PY) -m repro.baselines --estimate $(BASELINES_ARGS) && echo "(BASELINES=0 skips this step)"; \
	    $(MAKE) --no-print-directory baselines || echo "some baselines failed to build (above): their rows will be skipped"; \
	  fi; \
	  $(MAKE) --no-print-directory measure; \
	else \
	  echo "No GPU here: regenerating tables, figures and the ledger from the committed $(RESULTS)/"; \
	fi
	$(MAKE) --no-print-directory paper

measure: setup  ## run the experiments' sweeps on every visible GPU (results/<hardware>/<experiment>.csv); BUDGET=600: stop after 600 s, rerun to resume
	@if [ -n "$(BUDGET)" ] && ! [ "$(BUDGET)" -gt 0 ] 2>/dev/null; then \
	  echo "error: BUDGET=$(BUDGET): a whole number of seconds > 0, e.g. make measure BUDGET=600 (empty: no limit)" >&2; exit 2; fi
	@$(PY) -m repro.run.estimate --results $(RESULTS) $(if $(BUDGET),--budget $(BUDGET)) $(EXPERIMENTS)
	@n=$$($(PY) -c "from repro.measure.devices import visible_gpus; print(len(visible_gpus()))"); \
	start=$$(date +%s); deadline=$(if $(BUDGET),$$((start + $(BUDGET)))); ran=0; \
	set -- $(EXPERIMENTS); \
	while [ $$# -gt 0 ]; do e=$$1; budget=; \
	  if [ -n "$$deadline" ]; then \
	    left=$$((deadline - $$(date +%s))); [ "$$left" -gt 0 ] || [ "$$ran" -eq 0 ] || break; \
	    budget="time_budget_s=$$((left > 0 ? left : 1))"; \
	  fi; \
	  use=; [ "$$e" != flash_attention_bwd ] || use=fa3_bwd,fa2_bwd; \
	  if [ "$$n" -gt 1 ]; then \
	    shards=$$($(PY) -c "print(','.join(f'{i}/$$n' for i in range($$n)))"); \
	    REPRO_BASELINES_USE=$${REPRO_BASELINES_USE:-$$use} $(PY) run.py -m hydra/launcher=joblib experiment=$$e ++shard=$$shards results_dir=$(RESULTS) $$budget || exit $$?; \
	  else REPRO_BASELINES_USE=$${REPRO_BASELINES_USE:-$$use} $(PY) run.py experiment=$$e results_dir=$(RESULTS) $$budget || exit $$?; fi; \
	  ran=$$((ran + 1)); shift; \
	done; \
	if [ -n "$$deadline" ] && [ "$$(date +%s)" -ge "$$deadline" ]; then \
	  echo "measure: time budget $(BUDGET) s spent; $$ran of $(words $(EXPERIMENTS)) experiment(s) run$${*:+, not started: $$*} (the last one's line above says what it left, if anything): run \`make measure BUDGET=$(BUDGET)\` again to resume"; \
	else \
	  echo "measure: $(words $(EXPERIMENTS)) experiments in $$(( ($$(date +%s) - start) / 60 )) min on $$n GPU(s); per-experiment times in each run's manifest (sweep)"; \
	fi

figures: setup  ## regenerate paper/figures from results/
	$(PY) -m repro.report --results $(RESULTS) --out paper --figures-only

paper: setup  ## regenerate tables, figures, ledger and appendix; build the PDF when latexmk exists
	$(PY) -m repro.report --results $(RESULTS) --out paper
	@if command -v $(LATEXMK) >/dev/null 2>&1; then cd paper && $(LATEXMK) -pdf -quiet main.tex; \
	else echo "$(LATEXMK) not found: paper/main.tex not built (the Markdown paper/README.md is current)"; fi

loc: setup  ## recount code lines (upstream from clones: make loc SOURCES=/path/to/clones)
	$(PY) run.py experiment=loc $(if $(SOURCES),loc.sources=$(SOURCES))

portability: setup  ## build every TileLang kernel for each target (results/portability.csv)
	$(PY) run.py experiment=portability

scaling: setup  ## the same GEMM + FlashAttention sweep on 1 and on GPUS GPUs (results/scaling.csv)
	$(PY) -m repro.run.scaling --gpus $(or $(GPUS),2)

clean:  ## remove the environment, caches and Hydra outputs (results/ and paper/ stay)
	rm -rf $(VENV) outputs multirun .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
