# The two commands a newcomer types: `make demo` and `make test`. Both install what is missing first.
PY := .venv/bin/python

.PHONY: install demo test doctor data lint gpu-check

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

# GPU readiness: tier 1 (pretraining step MFU in bf16/fp16, fused attention, NCCL torchrun + resume) needs no mmcv CUDA
# ops and fits a short GPU lease; `make gpu-check TIER2=1` also builds mmcv's CUDA ops and fine-tunes the demo configs.
gpu-check:
	@SDAE_MMCV_CUDA=$(if $(TIER2),1,0) bash tools/install.sh
	@$(PY) tools/gpu_check.py $(if $(TIER2),--tier2)
