#!/usr/bin/env bash
# The whole benchmark (pretrain SdAE & MAE -> export -> Mask R-CNN & UperNet from each init -> test -> report), resumable.
#   tools/run_benchmark.sh --preset full --gpus 8 --imagenet DIR --coco DIR --ade DIR [--work-dir DIR]
#   tools/run_benchmark.sh --preset demo-long          # embedded data, ~2 h on 2 CPU cores, 2 seeds
# See `tools/run_benchmark.sh --help` for every option.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
exec "$PY" "$ROOT/tools/run_benchmark.py" "$@"
