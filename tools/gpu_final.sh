#!/usr/bin/env bash
# On the GPU machine (issue 6): ditic-small through the fast path (the bar's "same table"), then
# ditic-official at 2048² bf16 with the DC-AE compiled, untiled and tiled. Each step's table goes to
# $OUT as soon as it exists. Carry .bundle/{install.sh,wheels}.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
step() { local name=$1; shift; echo "=== $*"; timeout "${STEP_TIMEOUT:-150}" python3 -m jobs.cli "$@" --out /tmp/final/$name \
  | grep -E "^\|" ; cp /tmp/final/$name/bench-codec.md $OUT/$name.md 2>/dev/null; cp /tmp/final/$name/bench-codec.json $OUT/$name.json 2>/dev/null; }
nvidia-smi --query-gpu=name --format=csv,noheader
step small bench --model ditic-small --sizes 768x512,1024x1024,2048x2048 --dtypes fp32,bf16 --repeats 5 --warmup 2
step small-batch bench --model ditic-small --sizes 768x512 --dtypes bf16 --batch-sizes 16 --repeats 5 --warmup 2 --no-stages
step official-2048-compiled bench --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --repeats 3 --warmup 1
step official-2048-tiled bench --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --tiled --repeats 3 --warmup 1
