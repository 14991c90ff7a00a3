#!/usr/bin/env bash
# Session 11's first call, on nvidia-h200-x4 (docs/TRAINING.md "Session 11"): two things side by side.
#  - Issue 4, GPUs 0-2: stage A of ditic-small with a wider y (--latent-m 96 --context-width 64), one model
#    with DDP over GPUs 0 and 1 (A96d, the first GPU run of tools/gpu_train.sh's NPROC) and the same
#    recipe alone on GPU 2 (A96): the better held-out autoencoder starts stage B, and the pair says
#    whether DDP buys quality per minute.
#  - Issue 6, GPU 3: tools/gpu_session10.sh (every GPU test, then ditic-official at 2048² under decode
#    budgets 1 GiB, 1.5 GiB and the default). It shares the host (64 cores) with the training
#    processes, not its GPU.
# Carry [".carry/bundle", ".carry/train", ".carry/stlpips", ".carry/stlpips-alex"]; timeout 600.
# Back under $OUT: arms.tar.part-* (`cat arms.tar.part-* | tar x`: logs, split JSON, both exports) and
# s10.tgz (issue 6's logs, bench JSON/Markdown and summary).
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-8.8}
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/
SITE=$(bash .bundle/install.sh)
export SITE
s10=/tmp/s10out
mkdir -p "$s10"
(CUDA_VISIBLE_DEVICES=3 OUT=$s10 bash tools/gpu_session10.sh > "$s10/run.log" 2>&1) &
A="--stage A --latent-m 96 --context-width 64 --linear-path --latent-weight 1 --stage-a-perceptual-weight 0.3"
A="$A --lr 6e-4"
PACK=1 KEEP=2 RESERVE_MIN=1.2 bash tools/gpu_arms.sh "$MINUTES" "A96d@0,1=$A" "A96@2=$A"
wait
tar czf "$OUT/s10.tgz" -C /tmp s10out
cat "$s10/run.log"
ls -la "$OUT"
