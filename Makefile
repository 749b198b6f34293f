# atkit: `make demo` and `make test` work on a fresh machine with CPython >= 3.10 and access to PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_NOTEBOOKS ?= mse_perception boundary_samples always_failed_overlap
STAMP := $(VENV)/.atkit-installed

.PHONY: install demo test lab clean-outputs

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[notebooks,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	@for nb in $(DEMO_NOTEBOOKS); do \
	  echo "== $$nb (demo parameters, CPU, synthetic data) -> outputs/demo/$$nb"; \
	  $(PY) -m atkit notebook $$nb --params parameters/demo/$$nb.yaml --out outputs/demo/$$nb --device cpu || exit 1; \
	done
	@echo "== ablation sweep (parameters/demo/ablation_sweep.yaml: 3 points, 2 CPU workers) -> outputs/demo/sweeps/ablation"
	$(PY) -m atkit sweep ablation -f parameters/demo/ablation_sweep.yaml --out outputs/demo/sweeps/ablation --gpus "" --workers 2
	@echo "== results (every demo run beside the published numbers) -> outputs/demo/results"
	$(PY) -m atkit notebook results --params parameters/demo/results.yaml --out outputs/demo/results --device cpu

test: install
	$(PY) -m pytest -q

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-outputs:
	rm -rf outputs/demo outputs/smoke
