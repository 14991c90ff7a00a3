#!/usr/bin/env bash
# On the GPU machine (issue 6): the fast path's GPU tests, a cross-device export (checked on a CPU by
# tools/check_decode.py), the profiler split, and `ditic bench` of ditic-official (random weights):
# eager fp32 (the baseline) and bf16, then bf16 with the DC-AE compiled. Carry .bundle/{install.sh,wheels}.
# Results: $OUT/fast.tgz.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/fast; mkdir -p $R
step() { echo "=== $*"; timeout "${STEP_TIMEOUT:-300}" python3 -m jobs.cli "$@" || echo "!!! failed ($?): $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py tests/codec/test_fastconv.py 2>&1 | tail -15
[ "${EXPORT:-0}" = 1 ] && step bench --mode export --model tests/codec/data/golden_gpu/ditic-test-seeded.safetensors --out $R/export-test
[ "${PROFILE:-1}" = 1 ] && timeout 240 python3 tools/profile_codec.py --model ditic-official --size 1024x1024 \
  --dtype bf16 --out $R/profile-1024-bf16 2>&1 | grep -E "median|variants|cudnn.benchmark|compile|Error|error"
step bench --model ditic-official --sizes ${SIZES:-768x512,1024x1024,2048x2048} --dtypes fp32,bf16 --repeats 5 --warmup 2 --out $R/official
step bench --model ditic-official --sizes 1024x1024 --dtypes bf16 --compile --repeats 5 --warmup 2 --out $R/official-compiled
step bench --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages --out $R/official-compiled-batch
tar czf $OUT/fast.tgz -C $R .
