#!/usr/bin/env bash
# Session 18's H200 calls (issue 6: 2048² decode in <= 130 ms and <= 4 GiB), ditic-official random weights,
# bf16, compiled. What changed (CPU-tested): codec.fastforms, faster forms of the DC-AE's and DiT's parts
# under compile (grouped 1x1 as one bmm, the linear attentions' [v; 1] k^T in pixel chunks, depthwise
# convs and the last norm as codec.kernels' Triton ops, upsample convs as phase convs); DITIC_FAST_FORMS=0
# is the same-run baseline. The modes ran in this order; the early ones ran earlier code (the depthwise
# convs as inductor-fused sums: see docs/BENCHMARKS.md, session 18).
#   MODE=vit (~8 min): the DC-AE alone (tools/streamed_decode.py), whole and carried 2 GiB at 2048²,
#            fast parts off, then on (with --exact 1024 and --profile).
#   MODE=gap (~8 min): the DC-AE alone again (profiled, inductor's output code kept), then
#            tools/decode_gap.py at 2048² / 2 GiB (the whole decode against its stages, alternating, and a
#            profile of one whole decode).
#   MODE=kern (~9 min): codec.kernels (Triton depthwise conv, RMSNorm): their GPU tests and the compiled
#            split's, the DC-AE alone (exactness at 1024², whole and 2 GiB at 2048², profiled), decode_gap.
#   MODE=final (~9 min): the GPU tests of the compiled paths, decode_gap, `ditic bench` at 2048² / 2 GiB.
#   MODE=alloc (~5 min): decode_gap with the plain allocator, then with ditic's expandable segments.
#   MODE=tests: tests/codec/test_gpu_fastpath.py.
# Carry [".carry/bundle"]. Results: $OUT/s18-$MODE.tgz (rewritten after every step).
MODE=${MODE:-vit}
R=/tmp/s18-$MODE TGZ=s18-$MODE.tgz
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/ 2>/dev/null
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
P=${POINTS:-2048:64:auto,2048:2:auto}
if [ "$MODE" = vit ]; then
  DITIC_FAST_FORMS=0 step vit-off "${L1:-230}" python3 tools/streamed_decode.py --model "${MODEL:-ditic-official}" \
    --points "$P" --repeats 5 --out "$R/vit-off/streamed.json"
  step vit-on "${L2:-330}" python3 tools/streamed_decode.py --model "${MODEL:-ditic-official}" --exact 1024 \
    --points "$P" --repeats 5 --profile --out "$R/vit-on/streamed.json"
  for f in "$R"/vit-*/streamed.md; do echo "== $f"; cat "$f"; done
elif [ "$MODE" = gap ]; then
  TORCH_LOGS=output_code step vit-code "${L1:-200}" python3 tools/streamed_decode.py \
    --model "${MODEL:-ditic-official}" --points "$P" --repeats 5 --profile --out "$R/vit-code/streamed.json"
  gzip -f "$R/vit-code.log"; cat "$R/vit-code/streamed.md"
  step gap "${L2:-280}" python3 tools/decode_gap.py --model "${MODEL:-ditic-official}" --size 2048 --gib 2 \
    --out "$R/gap"
  grep -E 'whole_ms_p50|_ms"|gap_ms' "$R/gap/gap.json" | head -12
elif [ "$MODE" = kern ]; then
  step kern-tests "${L1:-200}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py -k "triton or streamed_split"
  step kern "${L2:-220}" python3 tools/streamed_decode.py --model "${MODEL:-ditic-official}" --exact 1024 \
    --points "$P" --repeats 5 --profile --out "$R/kern/streamed.json"
  cat "$R/kern/streamed.md"
  step gap "${L3:-200}" python3 tools/decode_gap.py --model "${MODEL:-ditic-official}" --size 2048 --gib 2 \
    --out "$R/gap"
  grep -E 'whole_ms_p50|_ms"|gap_ms' "$R/gap/gap.json" | head -12
elif [ "$MODE" = final ]; then
  step final-tests "${L1:-200}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py \
    -k "triton or streamed_split or compiled or graphed"
  step gap "${L2:-200}" python3 tools/decode_gap.py --model "${MODEL:-ditic-official}" --size 2048 --gib 2 \
    --out "$R/gap"
  grep -E 'whole_ms_p50|_ms"|gap_ms' "$R/gap/gap.json" | head -12
  bench bench "${L3:-250}" --model "${MODEL:-ditic-official}" --sizes 2048x2048 --dtypes bf16 --compile \
    --decode-only --eager-encode --repeats 5 --warmup 1 --decode-plan auto --decode-memory-gib 2
  cat "$R/bench/bench-codec.md" 2>/dev/null
elif [ "$MODE" = alloc ]; then  # the bench-against-decode_gap difference of call 5 (~5 min)
  step gap-plain "${L1:-200}" python3 tools/decode_gap.py --model "${MODEL:-ditic-official}" --size 2048 --gib 2 \
    --plain-allocator --out "$R/gap-plain"
  step gap-expandable "${L2:-200}" python3 tools/decode_gap.py --model "${MODEL:-ditic-official}" --size 2048 \
    --gib 2 --out "$R/gap-expandable"
  grep -hE 'allocator|whole_ms_p50|_ms"|gap_ms|_gib' "$R"/gap-*/gap.json
else
  step gpu-tests "${L1:-300}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py
fi
tar czf "$OUT/$TGZ" -C "$R" .
ls -la "$OUT"
