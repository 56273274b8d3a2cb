# Two commands set up a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo quick-demo test browser lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# the suite also needs the test-only extras (transformers, lm-eval, schemathesis), which the demo does not
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[dev,hf,eval,fuzz,ray]"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/nextlab demo

quick-demo: $(STAMP)
	$(BIN)/nextlab demo --quick

# The page's tests drive Debian's Chromium through Playwright (never a browser Playwright downloads).
# Installing it needs root; without it those tests are skipped (CI sets NEXTLAB_REQUIRE_BROWSER=1 to fail instead).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& { echo "installing Debian's chromium for the browser tests"; apt-get update -qq >/dev/null \
		     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "note: chromium is not installed (as root: apt-get install chromium); the browser tests will be skipped"; }

test: $(TEST_STAMP) browser
	$(BIN)/ruff check nextlab tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/sample_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache test-artifacts
