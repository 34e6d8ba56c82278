# Two commands do all the set-up on a fresh machine with Python 3.10+ and pip:
#   make demo   creates .venv, installs reslab, runs the main job (fine-tune vs from scratch)
#   make test   creates .venv, installs reslab with its test extras, runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test test-fast test-installed system bench notebook clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[digits]'
	touch $@

$(VENV)/.all: $(VENV)/.core
	$(PIP) install -q -e '.[all]'
	touch $@

# Optional system packages for the tests (Fashion-MNIST from Debian, Chromium for the
# HTML report test). Best effort: skipped when not root or not on Debian/Ubuntu.
system:
	@bash scripts/setup_system.sh

demo: $(VENV)/.core
	$(VENV)/bin/reslab demo

test: $(VENV)/.all system
	$(PY) -m pytest

test-fast: $(VENV)/.all
	$(PY) -m pytest -m "not slow"

# The wheel built from this checkout, installed outside it and run from another folder
# (packaged recipes, `reslab train --config fmnist_fast` for one tiny epoch, `reslab demo --quick`).
test-installed: $(VENV)/.all
	$(PY) -m pytest tests/test_installed.py

bench: $(VENV)/.all
	$(PY) benchmarks/run_all.py

# JupyterLab on notebooks/ with this venv's Python as the kernel (jupyterlab is not in `all`:
# the tests run the notebooks headless with nbclient).
notebook: $(VENV)/.all
	$(PIP) install -q jupyterlab
	$(PY) -m ipykernel install --sys-prefix --name python3
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
