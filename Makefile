# Set-up: `make demo` runs the main job, `make test` runs the whole suite (ruff + pytest).
# Both create .venv themselves; a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
# Every extra the test suite exercises; users install only what they need.
EXTRAS ?= dev,train,eval,explain,video,faces,faces-cnn,serve,onnx

MODEL ?=
IMAGES ?=

.PHONY: help install test lint demo clean

help:
	@echo "make demo MODEL=FOLDER IMAGES='a.jpg folder/'  score images with a checkpoint folder"
	@echo "make test                                     lint (ruff) and run the test suite"
	@echo "make install                                  create .venv with everything pinned"

# torch goes in first, pinned, so that no later requirement can pull a different (CUDA) build;
# constraints.txt pins every other package to the versions the tests were run with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	$(PY) -m pytest -q

# Until the project ships a model of its own, the demo scores with a checkpoint folder you name.
demo: $(STAMP)
	@if [ -z "$(MODEL)" ] || [ -z "$(IMAGES)" ]; then \
		echo "make demo needs a checkpoint and images: make demo MODEL=path/to/checkpoint IMAGES='photo.jpg folder/'"; \
		echo "(a checkpoint is any save_pretrained() folder of an image-classification model, e.g. a downloaded"; \
		echo " prithivMLmods/Deep-Fake-Detector-v2-Model; the project does not ship a model of its own yet)"; \
		exit 2; \
	fi
	$(VENV)/bin/deepfake-detector predict $(IMAGES) --model $(MODEL)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
