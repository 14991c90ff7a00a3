#!/usr/bin/env bash
# On the GPU machine: torch.profiler split of ditic-official (random weights) at 1024² and 768×512,
# fp32 and bf16 (tools/profile_codec.py). Carry .bundle/{install.sh,wheels}.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/profile; mkdir -p $R
for size in ${SIZES:-1024x1024}; do
  for dtype in ${DTYPES:-bf16 fp32}; do
    echo "=== $size $dtype"
    timeout "${STEP_TIMEOUT:-240}" python3 tools/profile_codec.py --model ditic-official --size $size \
      --dtype $dtype --out $R/$size-$dtype || echo "!!! failed ($?): $size $dtype"
  done
done
tar czf $OUT/profile.tgz -C $R .
