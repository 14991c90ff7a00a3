#!/usr/bin/env bash
# Session 4's second H100/H200 call (issue 6), after the DC-AE graph was limited to plans whose
# twice-estimate fits the memory budget: the graphed-decoder GPU tests, 768x512 batch 8 (encoder now
# channels-last), and 2048² under the default 4 GiB budget (not graphed: compiled strips).
# Carry .bundle/{install.sh,wheels}; tools/gpu_lib.sh sets up. Results: $OUT/s4b.tgz, rewritten after every step.
R=/tmp/s4b TGZ=s4b.tgz
source "$(dirname "$0")/gpu_lib.sh"
step gpu-tests 150 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py -k "graphed_dc_ae or compiled"
bench official-batch 130 --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages
bench official-2048 90 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --repeats 3 --warmup 1 --no-stages
