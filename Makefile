# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CI and local runs read MovieLens from ../shared/datasets when it exists (see README for other options).
export COLLM_DATA_DIR ?= $(if $(wildcard ../shared/datasets/ml-100k/u.data),$(abspath ../shared/datasets),)
DS ?= $(shell date -u +%F)

.PHONY: venv demo test clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/collm run --conf conf/local.yaml --ds $(DS)

test: venv
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf warehouse spark-warehouse metastore_db derby.log
