#!/usr/bin/env bash
# On the GPU machine: the trained ditic-small through the real compress pipeline (Ray Data, discarding
# sink) beside the codec alone, with the GPU actor's torch threads at Ray's default (1) and at
# ACTOR_THREADS (default 4). Carry .bundle/{install.sh,wheels,ray.tar.xz}. Results: $OUT/results.tgz.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
R=/tmp/results; mkdir -p $R
step() { echo "=== $*"; timeout "${STEP_TIMEOUT:-240}" python3 -m jobs.cli "$@" || echo "!!! failed ($?): $*"; }
nvidia-smi --query-gpu=name --format=csv,noheader
common="bench --mode pipeline --model ditic-small --sizes 768x512 --dtypes bf16 --batch-sizes 16 --items ${ITEMS:-3000} --num-actors 1 --repeats 5 --warmup 2"
step $common --out $R/pipeline
step $common --actor-threads ${ACTOR_THREADS:-4} --out $R/pipeline-threads
tar czf $OUT/results.tgz -C $R .
