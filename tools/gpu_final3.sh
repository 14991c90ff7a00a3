#!/usr/bin/env bash
# One H100/H200 call (session 3, issues 6 and 3): the GPU tests, then issue 6's table on
# ditic-official (random weights) — our eager fp32 baseline and bf16 with the DC-AE compiled, at
# 1024², 2048² (decode inside the default 4 GiB DC-AE budget: tiled by the plan when it does not fit)
# and 4096² — then the pipeline: ditic-small two actors on the GPU over a 12,000-image job, and
# ditic-official one actor. Carry .bundle/{install.sh,wheels,ray.tar.xz}; tools/gpu_lib.sh sets up. Results: $OUT/final3.tgz,
# rewritten after every step so a time-out still brings back what finished.
R=/tmp/final3 TGZ=final3.tgz
source "$(dirname "$0")/gpu_lib.sh"
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
