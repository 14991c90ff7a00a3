#!/usr/bin/env bash
# One H100/H200 call (session 3, issues 6 and 3): the GPU tests, then issue 6's table on
# ditic-official (random weights) — our eager fp32 baseline and bf16 with the DC-AE compiled, at
# 1024², 2048² (decode inside the default 4 GiB DC-AE budget: tiled by the plan when it does not fit)
# and 4096² — then the pipeline: ditic-small two actors on the GPU over a 12,000-image job, and
# ditic-official one actor. Carry .bundle/{install.sh,wheels,ray.tar.xz}. Results: $OUT/final3.tgz,
# rewritten after every step so a time-out still brings back what finished.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/final3; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  timeout "$limit" "$@" > $R/$name.log 2>&1 || echo "!!! $name failed ($?)"
  grep -E '^\| ditic|passed|failed|^\{' $R/$name.log | tail -8
  tar czf $OUT/final3.tgz -C $R .
}
bench() { local name=$1 limit=$2; shift 2; step $name $limit python3 -m jobs.cli bench --out $R/$name "$@"; }
step gpu-tests 100 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py tests/codec/test_golden_gpu.py
bench official-fp32 100 --model ditic-official --sizes 1024x1024,2048x2048 --dtypes fp32 --repeats 5 --warmup 2
bench official-compiled 150 --model ditic-official --sizes 1024x1024,2048x2048 --dtypes bf16 --compile --repeats 5 --warmup 2
bench official-2048-lowmem 90 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-memory-gib 1.5 \
  --decode-bytes-per-pixel 1024 --repeats 3 --warmup 1 --no-stages
bench official-batch 90 --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages
bench official-4k 90 --model ditic-official --sizes 4096x4096 --dtypes bf16 --decode-memory-gib 2 --repeats 2 --warmup 1 --no-stages
bench pipeline-small 150 --mode pipeline --model ditic-small --sizes 768x512 --dtypes bf16 --batch-sizes 16 \
  --items 12000 --gpus-per-actor 0.5 --repeats 20 --warmup 3
bench pipeline-official 120 --mode pipeline --model ditic-official --sizes 768x512 --dtypes bf16 --batch-sizes 8 \
  --items 800 --repeats 10 --warmup 2
