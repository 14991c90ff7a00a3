#!/usr/bin/env bash
# On a 2-GPU machine (kind nvidia-h100-x2 / nvidia-h200-x2): pipeline throughput on 1 and 2 GPUs
# (issues 3, 6 and 8), each run beside the codec alone on the same card in the same process.
#   1 GPU  = CUDA_VISIBLE_DEVICES=0 (Ray sees one GPU);  2 GPUs = both.
#   ditic-small (trained weights) 768x512 bf16 batch 16, one actor per GPU and two sharing each GPU
#   (--gpus-per-actor 0.5: one actor's CPU entropy coding overlaps the other's GPU work);
#   ditic-official (random weights) 768x512 bf16 batch 8, one actor per GPU.
# Carry .bundle/{install.sh,wheels,ray.tar.xz}. Results: $OUT/scaling.tgz (each run's folder and log),
# rewritten after every run so that a time-out still brings back what finished.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/scaling; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run() {  # run NAME GPUS ARGS...
  local name=$1 gpus=$2; shift 2
  echo "=== $name (GPUs: $gpus): $*"
  CUDA_VISIBLE_DEVICES=$gpus timeout "${STEP_TIMEOUT:-200}" python3 -m jobs.cli bench --mode pipeline \
    --dtypes bf16 --sizes 768x512 --repeats 20 --warmup 3 --out $R/$name "$@" > $R/$name.log 2>&1 \
    || echo "!!! $name failed ($?)"
  grep -E '^\{|Error' $R/$name.log | tail -3
  tar czf $OUT/scaling.tgz -C $R .
}
small="--model ditic-small --batch-sizes 16 --items ${ITEMS:-4000}"
official="--model ditic-official --batch-sizes 8 --items ${OFFICIAL_ITEMS:-1200}"
run small-1gpu 0 $small
run small-2gpu 0,1 $small
run small-1gpu-shared 0 $small --gpus-per-actor 0.5
run small-2gpu-shared 0,1 $small --gpus-per-actor 0.5
run official-1gpu 0 $official
run official-2gpu 0,1 $official
