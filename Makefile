# The two commands a newcomer types: `make demo` and `make test`. Both install what is missing first.
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: install demo test doctor data lint

install:
	@bash tools/install.sh

data: install
	@$(PY) tools/make_demo_data.py --out data/demo --seed 0

doctor: install
	@$(PY) tools/env_check.py

# The main job on the embedded data: pretrain SdAE & MAE, fine-tune Mask R-CNN & UperNet from SdAE, MAE and random
# init, test, report (work_dirs/demo/report/). Stages are cached: rerun after an interruption to continue.
demo: install
	@$(PY) tools/env_check.py
	@$(PY) tools/run_benchmark.py --preset demo

test: install
	@bash tools/install_browser.sh
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q tests

lint: install
	@$(PY) -m ruff check .
