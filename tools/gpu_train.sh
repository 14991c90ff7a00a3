#!/usr/bin/env bash
# Train the embedded default model on the GPU machine, inside a wall-clock budget (docs/TRAINING.md).
#
#   tools/gpu_train.sh MINUTES        MINUTES = the whole call's budget: install, load, train, export,
#                                     evaluate and copy out all fit in it.
# Here, before the device call (once):
#   python tools/pack_carry.py --data ../shared/data/train --int8-vgg  -> .carry/train, .carry/stlpips{,-alex}
#   DIFFUSERS_VERSION=0.35.2 ../shared/device/make-bundle.sh .bundle
# Device call: carry [".bundle/install.sh", ".bundle/wheels", ".carry/train", ".carry/stlpips",
#                     ".carry/stlpips-alex"]  (~61 MiB with the ~28 MB tree: the int8 VGG is what
#                     fits; the fp16 one does not), command: bash tools/gpu_train.sh 8.5
#                     Since session 14 the tree holds a 22.2 MiB model: leave .carry/stlpips-alex out
#                     (the 64 MiB cap; run refuses the call at once otherwise).
# A second call continues the run: SCHEDULE_MIN=15 RESUME=1 bash tools/gpu_train.sh 8.5
#   (on the still-warm machine runs/gpu/state is there at full precision; on a fresh one, carry the
#   first call's state slimmed to 20 MiB as .carry/state instead of stlpips-alex: docs/TRAINING.md).
# Back here: python tools/export_state.py <files_at>/state codec/weights/ditic-small.safetensors
#
# Environment (defaults): CONFIG=ditic-small DATA=.carry/train RUN=runs/gpu OUT=$OUT (else RUN/out)
#   SCHEDULE_MIN   length of the whole schedule in training minutes, across calls (default: this
#                  call's training time, i.e. a one-call run)
#   RESUME=1       continue from RUN/state, else from .carry/state
#   STEPS=N        schedule by steps instead (CPU smoke tests); STOP_AT=N stops this call at step N
#   HOLDOUT=4      training photos kept out for the final check;  RESERVE_MIN=1.5 kept for the end
#   BATCH=32       crops per step (the small model is launch-bound: a bigger batch costs little)
#   NPROC=N        train one model with DDP over N GPUs (torchrun; BATCH crops per GPU per step)
#   EMA_DECAY=0.998  an average over ~500 steps, ~10 % of an 8-minute run
#   EXTRA="..."    more `ditic train` options, e.g. "--batch-size 24 --stage-c 0.1"
#   PYTHON=python3  BUNDLE=.bundle (its install.sh runs first when present)
set -euo pipefail
start=$(date +%s)
budget_min=${1:?usage: tools/gpu_train.sh MINUTES}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
BUNDLE=${BUNDLE:-.bundle}
if [ -f "$BUNDLE/install.sh" ]; then
  PYTHONPATH="$(bash "$BUNDLE/install.sh"):$PWD"
else
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH
ls .carry/stlpips/vgg_shift_tolerant.* >/dev/null 2>&1 && export DITIC_STLPIPS_DIR="$PWD/.carry/stlpips"
PY=${PYTHON:-python3}
CONFIG=${CONFIG:-ditic-small}
DATA=${DATA:-.carry/train}
RUN=${RUN:-runs/gpu}
OUT=${OUT:-$RUN/out}
HOLDOUT=${HOLDOUT:-4}
mkdir -p "$RUN" "$OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

resume=()
if [ "${RESUME:-0}" = 1 ]; then
  if [ ! -f "$RUN/state/state.json" ] && [ -f .carry/state/state.json ]; then
    mkdir -p "$RUN/state" && cp .carry/state/* "$RUN/state/"
  fi
  resume=(--resume)
fi

elapsed=$(($(date +%s) - start))
train_min=$("$PY" -c "print(round(max(0.2, $budget_min - $elapsed / 60 - ${RESERVE_MIN:-1.5}), 2))")
# a one-call schedule ends ~30 s before the budget stops the loop (state saves, the last log interval),
# so that the learning-rate decay runs to its end
schedule=(--minutes "${SCHEDULE_MIN:-$("$PY" -c "print(round(max(0.1, $train_min - 0.5), 2))")}")
[ -n "${STEPS:-}" ] && schedule=(--steps "$STEPS")
[ -n "${STOP_AT:-}" ] && schedule+=(--stop-at-step "$STOP_AT")
echo "gpu_train: $CONFIG, ${train_min} min of training in this call (${elapsed}s spent on setup)"

# shellcheck disable=SC2086  # EXTRA is a list of options
set +e  # whatever happens, bring back what exists (log, last saved state)
launch=("$PY")  # NPROC=N: one model, DDP over N GPUs (torchrun, no Ray); BATCH is per GPU
[ "${NPROC:-1}" -gt 1 ] && launch=("$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC")
"${launch[@]}" -m jobs.cli train --config "$CONFIG" --data "$DATA" --out "$RUN" "${schedule[@]}" \
  --time-budget-min "$train_min" --holdout "$HOLDOUT" --export "$RUN/$CONFIG.safetensors" \
  --batch-size "${BATCH:-32}" --ema-decay "${EMA_DECAY:-0.998}" "${resume[@]}" ${EXTRA:-} | tee "$RUN/summary.json"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || echo "gpu_train: training exited with $rc"

# the real-bitstream check on held-out training photos, with the metric not trained on
[ -f .carry/stlpips-alex/alex_shift_tolerant.pth ] && export DITIC_STLPIPS_DIR="$PWD/.carry/stlpips-alex"
"$PY" tools/quick_eval.py "$RUN/$CONFIG.safetensors" --data "$DATA" --holdout "$HOLDOUT" \
  --crop "${EVAL_CROP:-256}" --out "$RUN/quick_eval.json" ${EVAL_QUALITIES:+--qualities $EVAL_QUALITIES} > /dev/null \
  || echo "gpu_train: quick_eval failed"

# what comes back: <= 8 files of <= 16 MiB, 64 MiB in all. The training state goes at the richest
# precision within 44 MiB (lean for ditic-small: 3 shards); the fp16 export is rebuilt from it here.
"$PY" - "$RUN" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
from jobs.train_state import slim_state
run, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {}
if (run / "state" / "state.json").is_file():
    meta = slim_state(run / "state", out / "state", budget_bytes=44 * 2**20)
    report = {"state_precision": meta["precision"], "state_mib": round(meta["bytes"] / 2**20, 1)}
for name in ("summary.json", "quick_eval.json"):
    text = (run / name).read_text().strip() if (run / name).is_file() else ""
    try:
        report[name[:-5]] = json.loads(text.splitlines()[-1] if name == "summary.json" else text)
    except (ValueError, IndexError):
        report[name[:-5]] = None
(out / "report.json").write_text(json.dumps(report, indent=1))
if (run / "log.jsonl").is_file():
    shutil.copy(run / "log.jsonl", out / "log.jsonl")
print(json.dumps(report))
PY
echo "gpu_train: done in $(($(date +%s) - start)) s; $(find "$OUT" -type f | wc -l) files in $OUT"
exit "$rc"
