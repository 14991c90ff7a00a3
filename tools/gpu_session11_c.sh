#!/usr/bin/env bash
# Session 11's third call, on nvidia-h200-x4 (docs/TRAINING.md "Session 11"): stage C (GAN 0.25, lr 2e-4, as
# C25L) on each of call 2's stage-B models, one model per GPU pair (DDP).
#  - On the machine call 2 left warm, its exports are still in runs/arms/B96*/: C96 continues B96 on
#    GPUs 0-1 and C96g continues B96g on GPUs 2-3.
#  - On a fresh machine only the carried codec/weights/ditic-small.safetensors is there (the better of
#    the two, swapped in by hand): C96x continues it with DDP over all four GPUs.
# Carry as call 1 ([".carry/bundle", ".carry/train", ".carry/stlpips", ".carry/stlpips-alex"]).
# Back under $OUT: arms.tar.part-* (`cat arms.tar.part-* | tar x`).
# As run (the first attempt lacked --latent-m/--context-width, which --init now inherits, and moved the
# B exports to runs/prev before it failed): MINUTES=6.2 SPLIT=0, split_quality then ran on the CPU here.
set -uo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-8.4}
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/
C="--latent-m 96 --context-width 64 --linear-path --latent-weight 1 --lr 2e-4 --stage C --gan-weight 0.25"
arms=()
if [ -f runs/arms/B96/ditic-small.safetensors ] && [ -f runs/arms/B96g/ditic-small.safetensors ]; then
  rm -rf runs/prev && mkdir -p runs/prev && mv runs/arms/B96 runs/arms/B96g runs/prev/
fi
rm -rf runs/arms
if [ -f runs/prev/B96/ditic-small.safetensors ] && [ -f runs/prev/B96g/ditic-small.safetensors ]; then
  echo "warm machine: continuing B96 and B96g"
  arms=("C96@0,1=--init runs/prev/B96/ditic-small.safetensors $C"
        "C96g@2,3=--init runs/prev/B96g/ditic-small.safetensors $C")
else
  echo "fresh machine: continuing the carried export"
  arms=("C96x@0,1,2,3=--init codec/weights/ditic-small.safetensors $C")
fi
PACK=1 KEEP=2 RESERVE_MIN=1.2 bash tools/gpu_arms.sh "$MINUTES" "${arms[@]}"
