#!/usr/bin/env bash
# Session 5's third H100/H200 call (issue 6): 768x512 batch 8 with --compile (DC-AE and DiT), which ran
# past its limit in the second call while compiling, and 2048² decoded by a decode-only codec under the
# default budget and planner (no calibration: the plan users get), with the steady-state decode peak
# (one more decode after warm-up) beside the peak that includes the first call's compile and capture.
# Carry .bundle/{install.sh,wheels}. Results: $OUT/s5c.tgz, rewritten after every step.
R=/tmp/s5c TGZ=s5c.tgz
source "$(dirname "$0")/gpu_lib.sh"
bench official-batch 170 --model ditic-official --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 --warmup 2 --no-stages
bench official-2048-default 150 --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-only --repeats 5 --warmup 2
