#!/usr/bin/env bash
# Session 20's H200 calls (issue 6): what session 19 left unmeasured, on the current code (bab3d52+).
# ditic-official random weights, bf16, compiled, ditic's allocator default (expandable segments).
#   MODE=a (~8 min): the GPU tests of the entropy path on the current decode code (session 19's mends
#          were CPU-tested only), then 768x512 batch 8 (full codec: decode and encode img/s) with a 300 s
#          limit (call 4 of session 19 ran out of 120 s while compiling).
#   MODE=b (~9 min): the GPU tests call a had no time for, then the 1024² and 2048² bars' benches with
#          --fidelity (after the timing, an fp32 eager decode of the same payloads: PSNR of the compiled bf16
#          pixels against it, and the latents compared; the first such check of ditic-official since
#          session 18's phase convs).
#   MODE=c (~8 min): 1024² again (the fp32 eager baseline first, then bf16 compiled with more repeats and the
#          stage split), and 4096² within 6 GiB on the current code.
#   MODE=d (~5 min): `ditic bench`'s GPU utilisation columns and plots on a card, codec mode (768x512 batch
#          8, eager) and pipeline mode (ditic-small, --gpus 1: a fresh local Ray on the first card).
#          Carry [".carry/bundle-ray"]: .carry/bundle plus make-bundle.sh's ray.tar.xz
#          without ray/dashboard/client (the web UI; 64 MiB cap) and the jsonschema wheels.
# Carry [".carry/bundle"]. Results: $OUT/s20-$MODE.tgz (rewritten after every step).
MODE=${MODE:-a}
R=/tmp/s20-$MODE TGZ=s20-$MODE.tgz
B=.carry/bundle; [ -f .carry/bundle-ray/ray.tar.xz ] && B=.carry/bundle-ray  # MODE=d: with ray.tar.xz
mkdir -p .bundle && cp -r $B/. .bundle/ 2>/dev/null
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
M=${MODEL:-ditic-official}
if [ "$MODE" = a ]; then
  step gpu-tests "${L1:-150}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py
  bench b768 "${L2:-300}" --model "$M" --sizes 768x512 --dtypes bf16 --compile --batch-sizes 8 --repeats 5 \
    --warmup 2 --no-stages
elif [ "$MODE" = b ]; then  # call a's test step ran out of 200 s in test_compiled_streamed_split_is_faithful
  step gpu-tests "${L1:-170}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py -k "streamed_split or triton"
  bench b1024 "${L2:-170}" --model "$M" --sizes 1024x1024 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 7 --warmup 2 --no-stages --fidelity
  bench b2048 "${L3:-220}" --model "$M" --sizes 2048x2048 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 10 --warmup 2 --decode-plan auto --decode-memory-gib 2 --fidelity
elif [ "$MODE" = c ]; then  # call b's 1024² (44.0 ms) ran 6 ms over session 19's, its coder 6.3 against 4.1 ms
  bench b1024-fp32 "${L1:-90}" --model "$M" --sizes 1024x1024 --dtypes fp32 --decode-only --eager-encode \
    --repeats 5 --warmup 1 --no-stages
  bench b1024 "${L2:-150}" --model "$M" --sizes 1024x1024 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 15 --warmup 3
  bench b4096 "${L3:-200}" --model "$M" --sizes 4096x4096 --dtypes bf16 --compile --decode-only --eager-encode \
    --repeats 3 --warmup 1 --decode-plan auto --decode-memory-gib 2
elif [ "$MODE" = d ]; then  # the bench's new columns on a card: GPU utilisation (nvidia-smi), plots, --gpus
  bench util "${L1:-120}" --model "$M" --sizes 768x512 --dtypes bf16 --batch-sizes 8 --repeats 10 --warmup 2 \
    --no-stages
  step pipe "${L2:-200}" python3 -m jobs.cli bench --mode pipeline --out "$R/pipe" --model ditic-small \
    --dtypes bf16 --sizes 768x512 --batch-sizes 16 --gpus-per-actor 0.5 --gpus 1 --items 1500 --repeats 10 --warmup 2
  cat "$R/pipe/bench-pipeline.md" 2>/dev/null
fi
for f in "$R"/b*/bench-codec.md; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done
tar czf "$OUT/$TGZ" -C "$R" .
ls -la "$OUT"
