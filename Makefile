# atkit: `make demo` and `make test` work on a fresh machine with CPython >= 3.10 and access to PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_NOTEBOOKS ?= mse_perception boundary_samples always_failed_overlap
STAMP := $(VENV)/.atkit-installed

.PHONY: install notebook-filter demo test lab clean-outputs

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changed.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[notebooks,dev]"
	touch $(STAMP)

install: $(STAMP) notebook-filter

# Run notebooks keep their outputs on disk, never in git: .gitattributes sends notebooks/*.ipynb through this clean
# filter (atkit/workbench/strip_outputs.py), so git status and git diff show no change after a notebook runs.
notebook-filter:
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.atkit-strip-outputs.clean "$(PY) -m atkit.workbench.strip_outputs" && \
	  echo "git: notebooks/*.ipynb are compared and committed without outputs (filter atkit-strip-outputs)"; \
	else echo "not a git checkout: no output filter for notebooks/*.ipynb"; fi

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

# After each save, git forgets a notebook whose only change is outputs (atkit.workbench.strip_outputs).
lab: install
	$(VENV)/bin/jupyter lab --ContentsManager.post_save_hook=atkit.workbench.strip_outputs.refresh_git_status notebooks/

clean-outputs:
	rm -rf outputs/demo outputs/smoke
