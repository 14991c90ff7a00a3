#!/usr/bin/env bash
# Issue 4 on a 4-GPU machine: the default model and its three alignment ablations trained side by side
# from the same seed and schedule, one per GPU (tools/gpu_train.sh each), then each evaluated on the dev
# set (never trained on) on its GPU. ONE_GPU=1 runs all four on GPU 0 of a one-GPU machine (the small
# model is launch-bound, so four processes share a GPU well; each gets fewer steps in the same minutes).
#   carry [".bundle/install.sh", ".bundle/wheels", ".carry/train", ".carry/stlpips", ".carry/stlpips-alex",
#          ".carry/dev"]; command: bash tools/gpu_ablation.sh MINUTES   (MINUTES: each training call's budget)
# Comes back: $OUT/main/{state/*,report.json,log.jsonl} (the default model's state, exported here with
# tools/export_state.py) and $OUT/ablation.tgz (every run's report, log and dev-set evaluation).
set -uo pipefail
minutes=${1:?usage: tools/gpu_ablation.sh MINUTES}
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
export BUNDLE=/nonexistent  # installed once, above: four concurrent installs would collide
# the dev-set evaluation needs pytorch-msssim, which the device image lacks: its wheel must be in the bundle
python3 -c "import pytorch_msssim" || { echo "gpu_ablation: add the pytorch-msssim wheel to .bundle/wheels"; exit 2; }
gpu() { [ "${ONE_GPU:-0}" = 1 ] && echo 0 || echo "$1"; }  # ONE_GPU=1: all four runs share GPU 0
nvidia-smi --query-gpu=index,name --format=csv,noheader
LAMBDAS=${LAMBDAS:---lambda-max 0.5 --lambda-min 0.03}
declare -A SWITCH=([main]="" [no-vgrf]="--no-variance-guidance" [no-distill]="--no-distill" [no-lcg]="--no-prompter")
runs=(main no-vgrf no-distill no-lcg)
A=/tmp/ablation; mkdir -p $A
for i in "${!runs[@]}"; do
  name=${runs[$i]}
  out=$A/$name; [ "$name" = main ] && out=$OUT/main
  CUDA_VISIBLE_DEVICES=$(gpu $i) RUN=runs/$name OUT=$out EMA_DECAY=${EMA_DECAY:-0.99} \
    EXTRA="$LAMBDAS ${SWITCH[$name]}" bash tools/gpu_train.sh "$minutes" > $A/train-$name.log 2>&1 &
done
wait
export DITIC_STLPIPS_DIR=$PWD/.carry/stlpips-alex
for i in "${!runs[@]}"; do
  name=${runs[$i]}
  CUDA_VISIBLE_DEVICES=$(gpu $i) timeout 240 python3 -m jobs.cli evaluate .carry/dev \
    --codecs runs/$name/${CONFIG:-ditic-small}.safetensors --device ${DEVICE:-cuda} --out $A/eval-$name > $A/eval-$name.log 2>&1 &
done
wait
for name in "${runs[@]}"; do
  echo "== $name"; tail -3 $A/train-$name.log; grep -E "^\|" $A/eval-$name/*.md 2>/dev/null | head -8
done
cp $OUT/main/report.json $A/report-main.json 2>/dev/null
tar czf $OUT/ablation.tgz --exclude=state -C $A .
