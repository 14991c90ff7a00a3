#!/usr/bin/env bash
# On a multi-GPU machine (kinds nvidia-h100-x2/-x4, nvidia-h200-x2/-x4): pipeline throughput on 1, 2, 4 ...
# GPUs (issues 3, 6 and 8), each run beside the codec alone on the same card in the same process.
#   N GPUs = CUDA_VISIBLE_DEVICES=0..N-1 (Ray sees N GPUs); N runs over GPU_COUNTS (default: 1, 2, 4, 8
#   up to what nvidia-smi lists). Items scale with N (ITEMS / OFFICIAL_ITEMS per GPU), so each run's
#   steady state lasts about as long.
#   RUNS (default "small-shared small official"):
#     small-shared  ditic-small (trained weights) 768x512 bf16 batch 16, two actors sharing each GPU
#                   (--gpus-per-actor 0.5: one actor's CPU entropy coding overlaps the other's GPU work)
#     small         the same, one actor per GPU
#     official      ditic-official (random weights) 768x512 bf16 batch 8, one actor per GPU
# nvidia-smi samples each card's utilisation twice a second during each run ($name.util.csv).
# Since session 20 `ditic bench --mode pipeline --gpus 1,2,...` runs the same scaling in one process, with
# each card's utilisation in its rows; this script keeps one process per count and raw nvidia-smi CSVs.
# Carry .bundle/{install.sh,wheels,ray.tar.xz} (with today's tree, Ray's tarball fits the 64 MiB cap only
# without ray/dashboard/client: see tools/gpu_session20.sh MODE=d). Results: $OUT/scaling.tgz (each run's folder and log),
# rewritten after every run so that a time-out still brings back what finished.
set -uo pipefail
export PYTHONPATH=$(bash .bundle/install.sh):$PWD PYTHONUNBUFFERED=1
R=/tmp/scaling; mkdir -p $R
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
gpus=$(nvidia-smi -L | wc -l)
if [ -z "${GPU_COUNTS:-}" ]; then
  GPU_COUNTS=""; for n in 1 2 4 8; do [ "$n" -le "$gpus" ] && GPU_COUNTS="$GPU_COUNTS $n"; done
fi
run() {  # run NAME N ARGS...  (N GPUs: 0..N-1)
  local name=$1 n=$2; shift 2
  local visible; visible=$(seq -s, 0 $((n - 1)))
  echo "=== $name (GPUs: $visible): $*"
  # GPU utilisation and memory of every card, sampled twice a second for the whole run (start-up too)
  nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 500 > $R/$name.util.csv 2>/dev/null &
  local sampler=$!
  CUDA_VISIBLE_DEVICES=$visible timeout "${STEP_TIMEOUT:-200}" python3 -m jobs.cli bench --mode pipeline \
    --dtypes bf16 --sizes 768x512 --repeats 20 --warmup 3 --out $R/$name "$@" > $R/$name.log 2>&1 \
    || echo "!!! $name failed ($?)"
  kill $sampler 2>/dev/null
  grep -E '^\{|Error' $R/$name.log | tail -3
  tar czf $OUT/scaling.tgz -C $R .
}
for kind in ${RUNS:-small-shared small official}; do
  for n in $GPU_COUNTS; do
    small="--model ditic-small --batch-sizes 16 --items $(( ${ITEMS:-3000} * n ))"
    official="--model ditic-official --batch-sizes 8 --items $(( ${OFFICIAL_ITEMS:-1200} * n ))"
    case $kind in
      small-shared) run "small-${n}gpu-shared" "$n" $small --gpus-per-actor 0.5 ;;
      small) run "small-${n}gpu" "$n" $small ;;
      official) run "official-${n}gpu" "$n" $official ;;
    esac
  done
done
