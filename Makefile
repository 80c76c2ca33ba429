# Two entry points for a fresh machine:
#   make book   set up, execute every lesson, build the HTML book into _build/html
#   make test   set up, then run the unit, parity, notebook and book tests (the book opened in Chromium)
# and, for CI: make test-floor   the unit tests at the lowest versions pyproject.toml allows
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_DIR := /usr/share/datasets/fashion-mnist
CHROMIUM := /usr/bin/chromium
export TRANSFORMERS_VERBOSITY := error

# The pinned CPU numerics (sdlearn/numerics.env): the same kernels and thread count on every x86-64
# CPU, for the book build, the tests and the lesson timings. A variable already set in the
# environment wins, e.g. `ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE make test`.
NUMERICS := $(shell grep -E '^[A-Z_]+=' sdlearn/numerics.env)
$(foreach setting,$(NUMERICS),$(eval $(firstword $(subst =, ,$(setting))) ?= $(lastword $(subst =, ,$(setting)))))
export $(foreach setting,$(NUMERICS),$(firstword $(subst =, ,$(setting))))

.PHONY: book test test-floor setup data chromium student lessons clean benchmarks

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(BIN)/pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 | { grep -v "^WARNING: Location" || true; }
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# Debian ships Fashion-MNIST as a package; install it when apt is there and the files are not.
data:
	@if [ ! -f $(FASHION_DIR)/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# Debian's Chromium, for tests/test_browser.py (Playwright drives it; its own browser download is not
# used). Installed like the dataset: as root, where apt is there; elsewhere the browser tests say how.
chromium:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going

test: setup chromium
	$(BIN)/python -m pytest -ra

# The unit tests with every dependency at the lowest version pyproject.toml allows
# (constraints-floor.txt), in a virtualenv of their own: a range may not claim more than it delivers.
FLOOR := .venv-floor
FLOOR_STAMP := $(FLOOR)/.installed

$(FLOOR_STAMP): pyproject.toml constraints-floor.txt
	rm -rf $(FLOOR)
	$(PYTHON) -m venv $(FLOOR)
	set -o pipefail; $(FLOOR)/bin/pip install --quiet --upgrade pip 2>&1 | { grep -v "^WARNING: Location" || true; }
	set -o pipefail; $(FLOOR)/bin/pip install --quiet -c constraints-floor.txt -e . pytest pyyaml 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $(FLOOR_STAMP)

test-floor: $(FLOOR_STAMP) data
	$(FLOOR)/bin/python -m pytest -ra -p no:cacheprovider -o addopts="" tests \
		--ignore=tests/test_book.py --ignore=tests/test_browser.py --ignore=tests/test_wheel.py

# The student copies (solutions replaced by stubs) are committed in student/, where each lesson's
# second Colab link opens them; run this after changing a lesson (tests/test_grading.py checks).
student: setup
	$(BIN)/python -m sdlearn.exercises student lessons/[0-9][0-9]_*.ipynb --out student
	$(BIN)/python -m sdlearn.exercises instructor lessons/[0-9][0-9]_*.ipynb --out _build/instructor

# Re-execute every lesson in a fresh kernel and save it with its outputs (and the time table).
lessons: setup
	$(BIN)/python benchmarks/lesson_times.py --write

benchmarks: setup
	$(BIN)/python benchmarks/lesson_times.py

clean:
	rm -rf _build .pytest_cache
