#!/usr/bin/env bash
# One H100/H200 call (session 4, issue 6): the GPU fast-path tests, then issue 6's table on
# ditic-official (random weights) with the DC-AE compiled channels-last and its decoder replayed from
# CUDA graphs: our eager fp32 baseline, bf16 at 1024² and 2048² (each size in its own process, so the
# reserved-memory figure is that size's alone), 2048² under a 1.5 GiB DC-AE budget, 768x512 batch 8.
# Carry .bundle/{install.sh,wheels}; tools/gpu_lib.sh sets up. Results: $OUT/s4.tgz, rewritten after every step.
R=/tmp/s4 TGZ=s4.tgz
source "$(dirname "$0")/gpu_lib.sh"
step gpu-tests 90 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py
bench official-fp32 80 --model ditic-official --sizes 1024x1024,2048x2048 --dtypes fp32 --repeats 3 --warmup 1
bench official-1024 90 --model ditic-official --sizes 1024x1024 --dtypes bf16 --compile --repeats 5 --warmup 2
bench official-2048 100 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --repeats 5 --warmup 2 \
  --decode-bytes-per-pixel 1024
bench official-2048-lowmem 90 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-memory-gib 1.5 \
  --decode-bytes-per-pixel 1024 --repeats 3 --warmup 1 --no-stages
bench official-batch 80 --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages
