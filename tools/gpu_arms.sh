#!/usr/bin/env bash
# Train several arms of ditic-small side by side on one GPU, then judge each on held-out training photos.
#
#   tools/gpu_arms.sh MINUTES "NAME=ditic train options" ["NAME=options" ...]
#
# The small model is launch-bound (docs/TRAINING.md): one process leaves the GPU idle much of the
# time, so two or three processes interleave their kernels on one card at little cost each. Each arm
# is tools/gpu_train.sh with its own run folder and EXTRA options (same seed, same data, same split).
# Afterwards tools/split_quality.py runs on each arm's export (held-out training photos, 512² crops).
# What comes back under $OUT (at most 8 files): arms.tgz (logs, reports, split JSON) and each arm's
# fp16 export (of the KEEP=3 best) cut in pieces of <= 15 MiB (NAME.safetensors.part-aa, -ab: `cat` them back together).
# PACK=1 packs logs and exports into one tar in pieces instead (KEEP=4 fits).
# An arm named NAME@GPUS (e.g. "A96d@0,1=...") trains on those GPUs, one model with DDP over them
# (tools/gpu_train.sh's NPROC); the others take GPU i mod the GPU count, i counting every arm.
# SITE=/tmp/site: the bundle is already unpacked there (another script of the same call did it).
# SPLIT=0 skips split_quality (a first call of a two-call schedule: SCHEDULE_MIN, RESUME=1 pass on to
# tools/gpu_train.sh). Carry as tools/gpu_train.sh does (bundle, .carry/train, .carry/stlpips, .carry/stlpips-alex).
set -uo pipefail
minutes=${1:?usage: tools/gpu_arms.sh MINUTES NAME=OPTIONS ...}
shift
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/arms/out}
mkdir -p runs/arms "$OUT"
if [ -n "${SITE:-}" ]; then
  PYTHONPATH="$SITE:$PWD"
elif [ -f .bundle/install.sh ]; then
  PYTHONPATH="$(bash .bundle/install.sh):$PWD"  # once: concurrent installs into one folder would race
else
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH PYTHONUNBUFFERED=1
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
names=()
for arm in "$@"; do  # arm i on GPU i mod the GPU count, or on NAME@GPUS
  name=${arm%%=*} devices=$(( ${#names[@]} % (gpus > 0 ? gpus : 1) ))
  if [[ $name == *@* ]]; then devices=${name#*@} name=${name%%@*}; fi
  nproc=$(awk -F, '{print NF}' <<< "$devices")
  CUDA_VISIBLE_DEVICES=$devices NPROC=$nproc BUNDLE=/nonexistent RUN="runs/arms/$name" \
    OUT="runs/arms/$name/out" EXTRA="${arm#*=}" bash tools/gpu_train.sh "$minutes" > "runs/arms/$name.log" 2>&1 &
  names+=("$name")
  sleep 2
done
wait
[ -f .carry/stlpips-alex/alex_shift_tolerant.pth ] && export DITIC_STLPIPS_DIR="$PWD/.carry/stlpips-alex"
threads=$(( $(nproc) / ${#names[@]} ))
for name in "${names[@]}"; do  # on the CPU, as here (tools/split_quality.py), all arms at once
  ckpt="runs/arms/$name/${CONFIG:-ditic-small}.safetensors"
  [ -f "$ckpt" ] || { echo "gpu_arms: $name has no export"; continue; }
  [ "${SPLIT:-1}" = 1 ] || { echo "{}" > "runs/arms/$name/split.json"; continue; }
  OMP_NUM_THREADS=$threads python3 tools/split_quality.py "$ckpt" --data .carry/train --holdout 4 \
    --crop 512 --out "runs/arms/$name/split.json" > "runs/arms/$name/split.txt" 2>&1 &
done
wait
for name in "${names[@]}"; do echo "== $name split"; grep -v Warn "runs/arms/$name/split.txt" | tail -4; done
# PACK=1 tars runs/arms/*.safetensors: drop a previous call's copies on a warm machine (their arms keep their
# own runs/arms/NAME/ export), so only this call's come back (session 15: a stale 44 MiB went over 64 MiB)
rm -f runs/arms/*.safetensors
# 8 files come back: the exports (2 pieces each) of the KEEP (3) arms best by held-out PSNR of what
# the codec decodes (the mean over qualities of split_quality's "full" column)
python3 - "${KEEP:-3}" "${names[@]}" <<'PY' | while read -r name; do
import json, sys
keep, names = int(sys.argv[1]), sys.argv[2:]
score = {}
for n in names:
    try:
        split = json.load(open(f"runs/arms/{n}/split.json"))
        if split:
            rows = split["qualities"].values()
            score[n] = sum(r["full"]["psnr"] for r in rows) / len(rows)
        else:  # no split: the real-bitstream check tools/gpu_train.sh ran (256² crops)
            rows = json.load(open(f"runs/arms/{n}/quick_eval.json"))["qualities"].values()
            score[n] = sum(r["psnr"] for r in rows) / len(rows)
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        pass
print("\n".join(sorted(score, key=score.get, reverse=True)[:keep]))
PY
  if [ "${PACK:-0}" = 1 ]; then cp "runs/arms/$name/${CONFIG:-ditic-small}.safetensors" "runs/arms/$name.safetensors"
  else split -b 15M "runs/arms/$name/${CONFIG:-ditic-small}.safetensors" "$OUT/$name.safetensors.part-"; fi
done
logs=(runs/arms/*.log runs/arms/*/log.jsonl runs/arms/*/summary.json runs/arms/*/quick_eval.json
      runs/arms/*/split.json runs/arms/*/split.txt)
if [ "${PACK:-0}" = 1 ]; then  # PACK=1: logs and the KEEP exports in one tar cut in 15 MiB pieces
  # (more than 3 exports fit the 8 files: `cat arms.tar.part-* | tar x`, exports as runs/arms/NAME.safetensors)
  tar cf - "${logs[@]}" runs/arms/*.safetensors 2>/dev/null | split -b 15M - "$OUT/arms.tar.part-"
else
  tar czf "$OUT/arms.tgz" "${logs[@]}" 2>/dev/null
fi
for name in "${names[@]}"; do echo "== $name"; tail -3 "runs/arms/$name.log"; done
ls -la "$OUT"
