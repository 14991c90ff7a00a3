#!/usr/bin/env bash
# Session 5's second H100/H200 call (issue 6), after the heads + DiT step became one CUDA graph and
# --compile took in the DiT: issue 6's table on ditic-official (random weights). Our fp32 baseline and
# bf16 at 1024²; 2048² decoded by a decode-only codec (encoders off the GPU) under the default 4 GiB
# DC-AE budget and under 1.5 GiB; 768x512 batch 8; then the compiled-path GPU tests. Each bench in its
# own process. Carry .bundle/{install.sh,wheels}. Results: $OUT/s5b.tgz, rewritten after every step.
R=/tmp/s5b TGZ=s5b.tgz
source "$(dirname "$0")/gpu_lib.sh"
bench official-1024 110 --model ditic-official --sizes 1024x1024 --dtypes bf16 --compile --repeats 7 --warmup 2
bench official-fp32 60 --model ditic-official --sizes 1024x1024 --dtypes fp32 --repeats 3 --warmup 1
bench official-2048 130 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-only \
  --decode-bytes-per-pixel 1024 --repeats 5 --warmup 2
bench official-2048-lowmem 100 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-only \
  --decode-memory-gib 1.5 --decode-bytes-per-pixel 1024 --repeats 3 --warmup 1 --no-stages
bench official-batch 90 --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages
step gpu-tests 80 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py -k "compiled"
