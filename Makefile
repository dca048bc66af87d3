# Two commands do all the set-up on a fresh clone:
#   make run   — create .venv (first use), install zoo + in-repo plugins, run the main job
#   make test  — same set-up, then the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.zoo-installed
# in-repo plugin distributions installed like any user's plugin
PLUGINS := plugins/zoo-efficientnet-lite plugins/zoo-openclip plugins/zoo-mlflow $(wildcard plugins/zoo-example-*)
PLUGIN_PYPROJECTS := $(foreach p,$(PLUGINS),$(wildcard $(p)/pyproject.toml))

.PHONY: run test install clean bench

install: $(STAMP)

$(STAMP): pyproject.toml $(PLUGIN_PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/zoo run resnet18 --strategy finetune

test: $(STAMP)
	$(BIN)/python -m pytest tests $(foreach p,$(PLUGINS),$(wildcard $(p)/tests)) -q

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/probe_cache.py
	$(BIN)/python benchmarks/cli_latency.py
	$(BIN)/python benchmarks/step_memory.py
	$(BIN)/python benchmarks/import_cost.py

clean:
	rm -rf $(VENV) runs
