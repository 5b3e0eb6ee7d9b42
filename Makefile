# make demo   set up a fresh machine and train on the demo data
# make test   set up and run the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test setup bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1 || $(PY) -m pip install --quiet torch torchvision
	$(PY) -m pip install --quiet -e '.[dev,search,export]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m cropseg.train

test: setup
	$(PY) -m pytest -q --timeout=900

bench: setup
	$(PY) bench/bench_dataloader.py
	$(PY) bench/bench_train_step.py

clean:
	rm -rf logs outputs multirun data/demo
