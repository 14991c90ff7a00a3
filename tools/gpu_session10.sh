#!/usr/bin/env bash
# Session 10's H200 call (issue 6: 2048² decode in <= 130 ms and <= 4 GiB), ditic-official random weights,
# bf16, compiled, decode-only. What changed since session 9 (CPU-tested):
#  - the float64 entropy path keeps the originals' float32 weights and casts them at each call
#    (codec.fastconv.Float64Conv2d, bit-identical): 0.79 -> 0.40 GiB of parameters;
#  - its nine CUDA graphs per size allocate from one memory pool (codec.graphs.GraphPool);
#  - every graph capture warms up on one side stream (cuBLAS keeps a 32 MiB workspace per stream it ran
#    on: a fresh stream per capture left one behind per graph, a suspect for session 5/9's resident 3.03
#    GiB against 2.29 GiB of weights).
# Steps, each under its own limit (env L1, L2; 330 s at most, ~270 s expected, plus the bundle's install):
#  1. gpu-tests (L1=140): all of tests/codec/test_gpu_fastpath.py (8 tests: the entropy path's shared
#     graph pool among them).
#  2. budgets (L2=190): `ditic bench` at 2048², decode plan auto, decode budgets 1 GiB, 1.5 GiB and the
#     default (4 GiB), one process, the same payloads for all three (encoded by an uncompiled codec:
#     --eager-encode; the enc columns are eager's), repeats 3, warm-up 1. Its peaks are totals
#     (torch.cuda.max_memory_allocated / max_memory_reserved: the resident weights included):
#     dec_peak_gib over warm-up + timed decodes (the first call's compiles and captures too),
#     dec_steady_peak_gib over one more decode after them, dec_reserved_gib the process's footprint.
#     Each row also has loaded_gib (allocated right after loading the decode-only codec: its resident
#     weights, entropy path included), entropy_path_gib (that path's bytes), idle_gib (allocated between
#     decodes), graph_pools_gib (CUDA-graph pool segments) and blas_workspaces_gib (freed at the end).
# Carry .bundle/install.sh and .bundle/wheels. Results: $OUT/s10.tgz (rewritten after every step),
# $OUT/s10-gpu-tests.log, $OUT/s10-budgets-bench-codec.{json,md}, $OUT/s10-summary.md (a table per budget).
# CPU dry run of the flags and files: MODEL=ditic-test SIZES=256x256 DTYPES=fp32 BENCH_EXTRA="--device cpu"
# OUT=/tmp/s10out bash tools/gpu_session10.sh  (in the venv; the GPU tests skip themselves there).
R=/tmp/s10 TGZ=s10.tgz
source "$(dirname "$0")/gpu_lib.sh"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee "$R/versions.log"
summary() {
  python3 - "$R/budgets/bench-codec.json" > "$OUT/s10-summary.md" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
f = lambda r, k, d=2: "" if r.get(k) is None else f"{r[k]:.{d}f}"
print("Totals, weights included (max_memory_allocated / reserved). Bar: dec ms p50 <= 130 and peak <= 4 GiB.\n")
print("| budget | dec ms p50 (p99) | entropy / heads+DiT / DC-AE ms | peak GiB first calls / steady"
      " | reserved GiB | loaded GiB (entropy path) | idle GiB | graph pools GiB | cuBLAS ws GiB"
      " | DC-AE peak over resident (est) | bar (steady) |")
print("|" + " --- |" * 11)
for r in rows:
    ok = r["dec_ms_p50"] <= 130 and r.get("dec_steady_peak_gib", 99) <= 4
    split = " / ".join(f(r, k, 1) for k in ("entropy_ms", "heads_dit_ms", "vae_decode_ms"))
    print(f"| {r.get('decode_budget', 'default')} | {f(r, 'dec_ms_p50', 1)} ({f(r, 'dec_ms_p99', 1)}) | {split}"
          f" | {f(r, 'dec_peak_gib')} / {f(r, 'dec_steady_peak_gib')} | {f(r, 'dec_reserved_gib')}"
          f" | {f(r, 'loaded_gib')} ({f(r, 'entropy_path_gib')}) | {f(r, 'idle_gib')} | {f(r, 'graph_pools_gib')}"
          f" | {f(r, 'blas_workspaces_gib')} | {f(r, 'dc_ae_peak_gib')} ({f(r, 'dc_ae_est_gib')})"
          f" | {'yes' if ok else 'no'} |")
print()
for r in rows:
    print(f"- {r.get('decode_budget', 'default')}: {r.get('decode_plan', '')}")
PY
}
copy() {
  for f in gpu-tests.log versions.log budgets/bench-codec.json budgets/bench-codec.md; do
    [ -f "$R/$f" ] && cp "$R/$f" "$OUT/s10-${f//\//-}"
  done
  [ -f "$R/budgets/bench-codec.json" ] && summary && cat "$OUT/s10-summary.md"
  true
}
step gpu-tests "${L1:-140}" python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py
copy
bench budgets "${L2:-190}" --model "${MODEL:-ditic-official}" --sizes "${SIZES:-2048x2048}" --dtypes "${DTYPES:-bf16}" \
  --compile --decode-only --eager-encode --decode-plan auto --decode-memory-gib "${BUDGETS:-1,1.5,default}" \
  --repeats 3 --warmup 1 ${BENCH_EXTRA:-}
copy
