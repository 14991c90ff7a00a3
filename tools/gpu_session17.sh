#!/usr/bin/env bash
# Session 17's H200 calls (issue 6: 2048² decode in <= 130 ms and <= 4 GiB), ditic-official random weights,
# bf16, compiled. What changed (CPU-tested): the split decode's local part runs in *carried* strips
# (codec.autoencoder._carry_local): each conv hands the rows the next strip needs on to it instead of
# recomputing a halo window, so every pixel is decoded once (1.00x, against 1.39x under 1.5 GiB and 1.73x
# under 1 GiB at 2048² for the halo windows). The kind "halo" keeps the halo windows, the same-run baseline.
#   MODE=dcae  (~6 min): all of tests/codec/test_gpu_fastpath.py (the carried compiled split, and the
#              fidelity decoder through CUDA graphs / bf16 / compile, never run before), then the DC-AE
#              alone (tools/streamed_decode.py): exactness at 1024², and 2048² / 4096² points by kind.
#   MODE=codec (~6 min): `ditic bench` at 2048², decode-only, one process, the same payloads, decode
#              budgets 1 / 1.5 / 2 GiB carried, then 1.5 GiB in halo windows (the baseline).
# Carry [".carry/bundle"]. Results: $OUT/s17-$MODE.tgz (rewritten after every step).
# CPU dry run: MODE=codec MODEL=ditic-test DTYPES=fp32 SIZES=512x512 BENCH_EXTRA="--device cpu"
# OUT=/tmp/s17out bash tools/gpu_session17.sh  (in the venv, .bundle present).
MODE=${MODE:-dcae}
R=/tmp/s17-$MODE TGZ=s17-$MODE.tgz
mkdir -p .bundle && cp -r .carry/bundle/. .bundle/ 2>/dev/null
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
if [ "$MODE" = dcae ]; then
  step gpu-tests "${L1:-200}" python3 -m pytest -q tests/codec/test_gpu_fastpath.py
  P=2048:1:auto,2048:1:halo,2048:1.5:auto,2048:1.5:halo,2048:2:auto,2048:3:auto,4096:2:auto,4096:2:halo,4096:4:auto
  step dcae "${L2:-330}" python3 tools/streamed_decode.py --model "${MODEL:-ditic-official}" --exact 1024 \
    --points "${POINTS:-$P}" --repeats 5 --out "$R/dcae/streamed.json"
  cat "$R/dcae/streamed.md" 2>/dev/null
else
  args=(--model "${MODEL:-ditic-official}" --sizes "${SIZES:-2048x2048}" --dtypes "${DTYPES:-bf16}" --compile
        --decode-only --eager-encode --repeats 5 --warmup 1)
  bench carried "${L1:-330}" "${args[@]}" --decode-plan auto --decode-memory-gib 1,1.5,2 ${BENCH_EXTRA:-}
  bench halo "${L2:-200}" "${args[@]}" --decode-plan halo --decode-memory-gib 1.5 ${BENCH_EXTRA:-}
  for f in "$R"/*/bench-codec.md; do echo "== $f"; cat "$f"; done
fi
tar czf "$OUT/$TGZ" -C "$R" .
ls -la "$OUT"
