#!/usr/bin/env bash
# Session 5's first H100/H200 call (issue 6): the GPU fast-path tests (the heads + DiT step now one CUDA
# graph; decode-only codecs), then tools/decode_split.py at 1024² and 2048² on ditic-official bf16
# (random weights, DC-AE compiled): the decode stage by stage, session 4's path (heads eager, DiT graphed)
# beside this session's (one graph), and the same with the DiT compiled inside the graph.
# Carry .bundle/{install.sh,wheels}; tools/gpu_lib.sh sets up. Results: $OUT/s5a.tgz, rewritten after every step.
R=/tmp/s5a TGZ=s5a.tgz
source "$(dirname "$0")/gpu_lib.sh"
step gpu-tests 200 python3 -m pytest -q -p no:cacheprovider tests/codec/test_gpu_fastpath.py
step decode-split 300 python3 tools/decode_split.py --model ditic-official --sizes 1024x1024,2048x2048 --out "$R/decode-split.json"
cat "$R/decode-split.log" | grep '^{' || tail -20 "$R/decode-split.log"
