#!/usr/bin/env bash
# Session 9's H200 call (issue 6): the streamed split decode of the DC-AE (codec.autoencoder: the global
# stages in row windows, EfficientViT attention in two passes; the split's steps compiled on a compiled
# codec) against session 5's blended tiles, ditic-official random weights, bf16, compiled, decode-only.
#  1. streamed: tools/streamed_decode.py, DC-AE decode alone, one process: exactness at 1024² (the
#     compiled bf16 streamed split vs the fp32 eager whole decode: PSNR, max abs; fp32 eager streamed
#     vs whole), then 2048² under 1 GiB, 4096² under 4 and 2 GiB (plan, estimate, first call with its
#     compiles, median ms, peak over resident, total and reserved peak).
#  2. the codec at 2048² under the default 4 GiB budget (ditic bench --decode-only), the new plan (auto:
#     the streamed split) and the old (tiles) on the same payloads, one process.
#  3. the compiled-path GPU tests (test_gpu_fastpath.py -k compiled: the streamed split's among them).
# Each step under its own time limit (500 s in all, plus the bundle's install). Carry .bundle/install.sh and
# .bundle/wheels. Results: $OUT/s9.tgz (rewritten after every step) and $OUT/s9-*.{json,md}.
R=/tmp/s9 TGZ=s9.tgz
source "$(dirname "$0")/gpu_lib.sh"
copy() { for f in "$R"/streamed/streamed.json "$R"/streamed/streamed.md "$R"/official-2048-plans/bench-codec.json \
  "$R"/official-2048-plans/bench-codec.md; do [ -f "$f" ] && cp "$f" "$OUT/s9-$(basename "$(dirname "$f")")-$(basename "$f")"; done; true; }
step streamed ${L1:-190} python3 tools/streamed_decode.py --model ditic-official --exact 1024 \
  --points 2048:1:auto,4096:4:auto,4096:2:auto --repeats 3 --out "$R/streamed/streamed.json"
copy
bench official-2048-plans ${L2:-220} --model ditic-official --sizes 2048x2048 --dtypes bf16 --compile --decode-only \
  --decode-plan auto,tiles --repeats 3 --warmup 1
copy
step gpu-tests ${L3:-90} python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py -k "compiled"
copy
