#!/usr/bin/env bash
# Session 20's H200 calls (issue 6): what session 19 left unmeasured, on the current code (bab3d52+).
# ditic-official random weights, bf16, compiled, ditic's allocator default (expandable segments).
#   MODE=a (~8 min): the GPU tests of the entropy path on the current decode code (session 19's mends
#          were CPU-tested only), then 768x512 batch 8 (full codec: decode and encode img/s) with a 300 s
#          limit (call 4 of session 19 ran out of 120 s while compiling).
#   MODE=b (~6 min): ditic-official's compiled bf16 decode against the fp32 eager decode at 1024² (PSNR,
#          after session 18's phase convs: tools/streamed_decode.py --exact), then the 2048² bar's bench.
# Carry [".carry/bundle"]. Results: $OUT/s20-$MODE.tgz (rewritten after every step).
MODE=${MODE:-a}
R=/tmp/s20-$MODE TGZ=s20-$MODE.tgz
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/ 2>/dev/null
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
M=${MODEL:-ditic-official}
if [ "$MODE" = a ]; then
  step gpu-tests "${L1:-150}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py
  bench b768 "${L2:-300}" --model "$M" --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 \
    --warmup 2 --no-stages
elif [ "$MODE" = b ]; then
  step exact "${L1:-180}" python3 tools/streamed_decode.py --model "$M" --exact 1024 --points 2048:2:auto \
    --repeats 3 --out "$R/exact/streamed.json"
  cat "$R/exact/streamed.md" 2>/dev/null
  bench b2048 "${L2:-200}" --model "$M" --sizes 2048x2048 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 10 --warmup 2 --decode-plan auto --decode-memory-gib 2
fi
for f in "$R"/b*/bench-codec.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
tar czf "$OUT/$TGZ" -C "$R" .
ls -la "$OUT"
