#!/usr/bin/env bash
# On the GPU machine (device tool), from the repo root, with .bundle/{install.sh,wheels} and
# .carry/ckpt/ditic-test-seeded.safetensors carried:
#   cross-device export (payloads encoded on the GPU, decoded later on a CPU by tools/check_decode.py),
#   then `ditic bench --mode codec` for ditic-official (random weights) and ditic-small.
# Everything comes back as $OUT/results.tgz and $OUT/log.txt.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/results; mkdir -p $R
step() { echo "=== $*"; timeout "${STEP_TIMEOUT:-300}" python3 -m jobs.cli "$@" || echo "!!! failed ($?): $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, diffusers; print("torch", torch.__version__, "diffusers", diffusers.__version__)'
step bench --mode export --model .carry/ckpt/ditic-test-seeded.safetensors --out $R/export-test
step bench --mode export --model ditic-small --out $R/export-small
step bench --model ditic-official --sizes 768x512,1024x1024,2048x2048 --dtypes fp32,bf16 --repeats 3 --warmup 1 --out $R/official
step bench --model ditic-official --sizes 768x512 --dtypes bf16 --batch-sizes 8 --repeats 3 --warmup 1 --no-stages --out $R/official-batch
step bench --model ditic-official --sizes 4096x4096 --dtypes bf16 --repeats 1 --warmup 1 --no-stages --out $R/official-4k
step bench --model ditic-small --sizes 768x512,1024x1024,2048x2048 --dtypes fp32,bf16 --repeats 3 --warmup 1 --out $R/small
step bench --model ditic-small --sizes 768x512 --dtypes bf16 --batch-sizes 16 --repeats 3 --warmup 1 --no-stages --out $R/small-batch
tar czf $OUT/results.tgz -C $R .
