# make demo   set up a fresh machine and train on the demo data
# make test   set up and run the test suite (what CI runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test setup bench gpu-wheels clean

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

# Wheels the device machine's Python 3.12 image lacks, for bench/gpu_check.sh (carry .whl/).
GPU_WHEELS = segmentation_models_pytorch==0.6.0 hydra-core==1.3.8 omegaconf==2.3.1 rasterio==1.4.4 affine==3.0.1 \
	cligj==0.7.2 click-plugins==1.1.1.2
gpu-wheels: setup
	rm -rf .whl && mkdir -p .whl
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)
	$(PY) -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3   # sdist only: built here

clean:
	rm -rf logs outputs multirun data/demo
