# Two commands do all setup on a fresh machine (Python 3.11, pip; later also Node/npm, apt):
#   make demo   the main job on the built-in digits data
#   make test   the test suite (what .ci/run calls)
# Each creates .venv and installs what it needs the first time; later runs skip that
# (the stamp file is newer than pyproject.toml and constraints.txt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deploykit-installed
OUT    ?= whatif-out
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt targets/web/package-lock.json
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	@# second step on purpose: litert-torch's typing-extensions pin conflicts with cattrs
	$(BIN)/python -m pip install --quiet 'litert-torch==0.10.0' 'ai-edge-quantizer==0.10.0'
	cd targets/web && npm ci --no-audit --no-fund --loglevel=error
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@touch $@

demo: setup
	$(BIN)/deploykit what-if --data digits --out $(OUT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests examples

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
