#!/usr/bin/env bash
# Session 12's first call, on nvidia-h200-x4 (docs/TRAINING.md "Session 12"): two things side by side.
#  - Issue 4, GPUs 0-2: stage A continued. A2 starts from A96d's export (swapped into
#    codec/weights/ditic-small.safetensors for the call) and trains the DC-AE again with A96d's recipe,
#    one model with DDP over three GPUs (96 crops per step). The autoencoder is the ceiling of every
#    quality's PSNR; this buys it ~2.5x A96d's GPU time again.
#  - Issue 6, GPU 3: ditic-official at 2048² (bf16, compiled, decode-only, budgets 1 GiB, 1.5 GiB and
#    the default), twice in one process order: with the caching allocator's expandable segments
#    (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True), then without (session 11's setting, the
#    baseline of the same run). It shares the host with training, not the GPU.
# Carry [".carry/bundle", ".carry/train", ".carry/stlpips", ".carry/stlpips-alex"]; timeout 600.
# Back under $OUT: arms.tar.part-* (`cat arms.tar.part-* | tar x`: logs, split JSON, A2's export) and
# s12.tgz (issue 6's logs and bench JSON/Markdown).
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-8.3}
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/
SITE=$(bash .bundle/install.sh)
export SITE
(
  export CUDA_VISIBLE_DEVICES=3 R=/tmp/s12 TGZ=s12.tgz
  source tools/gpu_lib.sh
  args=(--model "${MODEL:-ditic-official}" --sizes "${SIZES:-2048x2048}" --dtypes "${DTYPES:-bf16}" --compile
        --decode-only --eager-encode --decode-plan auto --decode-memory-gib 1,1.5,default --repeats 3 --warmup 1)
  PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True bench expandable "${L2:-200}" "${args[@]}" ${BENCH_EXTRA:-}
  bench default-alloc "${L2:-200}" "${args[@]}" ${BENCH_EXTRA:-}
) > /tmp/s12.log 2>&1 &
A="--init codec/weights/ditic-small.safetensors --stage A --latent-m 96 --context-width 64 --linear-path"
A="$A --latent-weight 1 --stage-a-perceptual-weight 0.3 --lr 6e-4"
PACK=1 KEEP=1 RESERVE_MIN=1.2 bash tools/gpu_arms.sh "$MINUTES" "A2@0,1,2=$A"
wait
cat /tmp/s12.log
ls -la "$OUT"
