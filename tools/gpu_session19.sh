#!/usr/bin/env bash
# Session 19's H200 calls (issue 6), ditic-official random weights, bf16, compiled, ditic's allocator default
# (expandable segments) unless said otherwise. What changed (CPU-tested): a GPU decoder computes each context
# step's table levels and y_hat beside the scales (StepPositions.levels/place: one int32 transfer per step,
# no numpy level search), and images whose symbols all use one table skip the grouping sort.
#   MODE=entropy (~9 min): the GPU tests of the entropy path (levels on the GPU against numpy, graphs),
#            tools/decode_gap.py at 2048² / 2 GiB with the entropy decode's parts, then `ditic bench` at
#            2048² / 2 GiB (the bar's command).
#   MODE=bars (~9 min): the other bars again with the fast forms: `ditic bench` at 1024² (bf16 compiled,
#            then the fp32 eager baseline), 4096² within 6 GiB (2 GiB DC-AE budget), 768x512 batch 8.
#            In call 4 the full-codec 1024² and the 768x512 benches ran out of their limits (compiling the
#            whole codec now takes longer than session 5's limits allowed); call 5 ran 1024² decode-only.
#   MODE=verify (~9 min, not run yet): 768x512 batch 8 with a 280 s limit, ditic-official's compiled bf16
#            DC-AE split against the fp32 eager whole decode at 1024² (PSNR, after session 18's phase
#            convs), and the 2048² bar's bench again.
# Carry [".carry/bundle"]. Results: $OUT/s19-$MODE.tgz (rewritten after every step).
MODE=${MODE:-entropy}
R=/tmp/s19-$MODE TGZ=s19-$MODE.tgz
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/ 2>/dev/null
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
M=${MODEL:-ditic-official}
if [ "$MODE" = entropy ]; then
  step entropy-tests "${L1:-150}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py -k "levels or entropy_path"
  step gap "${L2:-200}" python3 tools/decode_gap.py --model "$M" --size 2048 --gib 2 --out "$R/gap"
  grep -E 'whole_ms_p50|_ms"|gap_ms|_gib' "$R/gap/gap.json" | head -12
  python3 -c "import json; print(json.load(open('$R/gap/gap.json'))['entropy_parts_ms'])"
  bench bench "${L3:-200}" --model "$M" --sizes 2048x2048 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 10 --warmup 2 --decode-plan auto --decode-memory-gib 2
  cat "$R/bench/bench-codec.md" 2>/dev/null
elif [ "$MODE" = bars ]; then  # session 5's commands for 1024² and 768x512; 4096² as session 9's budget
  bench b1024 "${L1:-130}" --model "$M" --sizes 1024x1024 --dtypes bf16 --compile --repeats 7 --warmup 2
  bench b1024-fp32 "${L2:-80}" --model "$M" --sizes 1024x1024 --dtypes fp32 --repeats 3 --warmup 1
  bench b4096 "${L3:-170}" --model "$M" --sizes 4096x4096 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 3 --warmup 1 --decode-plan auto --decode-memory-gib 2
  bench b768 "${L4:-120}" --model "$M" --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 \
    --warmup 2 --no-stages
  for f in "$R"/b*/bench-codec.md; do echo "== $f"; cat "$f"; done
elif [ "$MODE" = verify ]; then  # what session 19 left unmeasured (~9 min): limits sized for today's compiles
  bench b768 "${L1:-280}" --model "$M" --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 \
    --warmup 2 --no-stages
  step exact "${L2:-150}" python3 tools/streamed_decode.py --model "$M" --exact 1024 --points 2048:2:auto \
    --repeats 3 --out "$R/exact/streamed.json"
  cat "$R/exact/streamed.md" 2>/dev/null
  bench b2048 "${L3:-150}" --model "$M" --sizes 2048x2048 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 10 --warmup 2 --decode-plan auto --decode-memory-gib 2
  for f in "$R"/b*/bench-codec.md; do echo "== $f"; cat "$f"; done
fi
tar czf "$OUT/$TGZ" -C "$R" .
ls -la "$OUT"
