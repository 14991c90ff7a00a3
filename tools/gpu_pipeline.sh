#!/usr/bin/env bash
# On the GPU machine: the trained ditic-small through the real compress pipeline (Ray Data, discarding
# sink) beside the codec alone, then its codec benchmark. Carry .bundle/{install.sh,wheels,ray.tar.xz}.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
R=/tmp/results; mkdir -p $R
step() { echo "=== $*"; timeout "${STEP_TIMEOUT:-240}" python3 -m jobs.cli "$@" || echo "!!! failed ($?): $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
step bench --mode pipeline --model ditic-small --sizes 768x512 --dtypes bf16 --batch-sizes 16 --items 3000 --num-actors 1 --repeats 5 --warmup 2 --out $R/pipeline
[ "${SMALL_BENCH:-0}" = 1 ] && step bench --model ditic-small --sizes 768x512,1024x1024 --dtypes fp32,bf16 --batch-sizes 1,16 --repeats 5 --warmup 2 --no-stages --out $R/small-trained
tar czf $OUT/results.tgz -C $R .
