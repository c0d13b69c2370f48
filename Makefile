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
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: setup demo test test-fast lint clean

setup: $(STAMP)

# A setup step's output goes to $(SETUP_LOG) (pip, npm and apt are chatty); it is shown only
# when the step fails.
SETUP_LOG := $(VENV)/setup.log
QUIETLY = bash -c '"$$@" >>$(SETUP_LOG) 2>&1 || { tail -n 30 $(SETUP_LOG); \
	echo "setup step failed: $$*  (whole log: $(SETUP_LOG))"; exit 1; }' --

$(STAMP): pyproject.toml constraints.txt targets/web/package-lock.json
	@echo "setup: the pinned stack into $(VENV), npm packages, chromium (first run: a few minutes; log: $(SETUP_LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(QUIETLY) $(BIN)/python -m pip install --upgrade pip
	@$(QUIETLY) $(BIN)/python -m pip install -c constraints.txt -e '.[all,dev]'
	@# second step on purpose: litert-torch's typing-extensions pin conflicts with cattrs, and
	@# pip reports that conflict (README: expected)
	@$(QUIETLY) $(BIN)/python -m pip install 'litert-torch==0.10.0' 'ai-edge-quantizer==0.10.0'
	@$(QUIETLY) npm ci --prefix targets/web --no-audit --no-fund --loglevel=error
	@command -v chromium >/dev/null || $(QUIETLY) sh -c 'apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium'
	@touch $@

demo: setup
	$(BIN)/deploykit what-if --data digits --out $(OUT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the edit-test loop: everything not marked slow (under 90 s)
test-fast: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not slow"

lint: setup
	$(BIN)/ruff check src tests examples benchmarks tools targets

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache test-artifacts
