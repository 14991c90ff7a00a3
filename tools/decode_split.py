"""Where one image's decode goes, stage by stage, and what graphing the heads and compiling the DiT buy.

    python tools/decode_split.py --model ditic-official --sizes 1024x1024,2048x2048 --out split.json

One codec (bf16, ``compile=True``: the DC-AE as ``ditic bench --compile`` runs it), one real photo per
size, median ms of ``--repeats`` runs after warm-up, the device synchronised around every stage:

* ``entropy``: ``decompress_latent`` (z, h_s, the four context steps; ``coder`` = the range coder alone);
* ``heads eager`` + ``DiT graphed``: session 4's path (heads launched op by op, the DiT step graphed);
* ``heads+DiT graphed``: this session's path, one CUDA graph for heads, prompter and DiT step;
* ``DC-AE``: ``Codec.decode_pixels`` (graphed where ``fits_graphed``);
* ``decode``: the whole ``Codec.decode_items``;

then the same with the DiT compiled (``torch.compile``, default mode) inside the graph, and the PSNR of
that decode against the uncompiled one. GPU tool for issue 6; prints JSON lines, writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import bitstream  # noqa: E402
from codec.api import load_codec  # noqa: E402
from codec.graphs import GraphCache  # noqa: E402
from codec.metrics import psnr  # noqa: E402
from codec.model import PAD_MULTIPLE  # noqa: E402
from tools.profile_codec import _median_ms  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "photos"


def split(codec, payload: bytes, repeats: int) -> dict[str, float]:  # noqa: ANN001
    model, dtype = codec.model, codec.dtype
    header, strings, _ = bitstream.unpack(payload)
    shape = (header.coded_height // PAD_MULTIPLE, header.coded_width // PAD_MULTIPLE)
    q = header.quality
    y_hat, y_scales = model.decompress_latent([strings], shape, q)
    y, s = y_hat.to(dtype), y_scales.to(dtype)
    inverse = model.codec.inverse_gain_for(q, 1, y.device, dtype)
    heads = model.codec.heads_with(y, s, inverse)
    names = ("mean", "scale", "res", "prompt")
    dit_only = GraphCache(lambda *t: model.synthesize(dict(zip(names, t, strict=True)))[0])
    latent_hat = codec._dit_step(y, s, inverse)
    stages = {
        "entropy": lambda: model.decompress_latent([strings], shape, q),
        "heads_eager": lambda: model.codec.heads_with(y, s, inverse),
        "dit_graphed": lambda: dit_only(heads["mean"], heads["scale"], heads["res"], heads["prompt"]),
        "heads_dit_graphed": lambda: codec._dit_step(y, s, inverse),
        "dc_ae": lambda: codec.decode_pixels(latent_hat),
        "decode": lambda: codec.decode_items([payload]),
    }
    with torch.no_grad():
        for fn in stages.values():  # warm-up: captures, compiles
            fn()
            fn()
        row = {name: _median_ms(fn, repeats, warmup=0) for name, fn in stages.items()}
        coder = []
        for _ in range(repeats):
            model.decompress_latent([strings], shape, q)
            coder.append(model.codec.coding_seconds * 1e3)
    row["coder"] = statistics.median(coder)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-official")
    parser.add_argument("--sizes", default="1024x1024")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-compiled-dit", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("out/decode-split.json"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only to try the tool out
    codec = load_codec(args.model, device=device, dtype=torch.bfloat16, allow_untrained=True, compile=True)
    photo_path = sorted(PHOTOS.glob("*.jpg"))[0]
    rows = []
    payloads, decoded = {}, {}
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        photo = np.asarray(ImageOps.fit(Image.open(photo_path).convert("RGB"), (w, h)))
        payloads[size] = codec.encode([photo], max(codec.qualities))[0]
        row = {"size": size, "dit": "eager", **split(codec, payloads[size], args.repeats)}
        decoded[size] = np.asarray(codec.decode([payloads[size]])[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not args.no_compiled_dit:
        codec.model.DiT.compile(dynamic=False)
        codec._dit_step = GraphCache(codec.model.latent_from_y, name="heads and compiled DiT step")
        for size, payload in payloads.items():
            start = time.perf_counter()
            image = np.asarray(codec.decode([payload])[0])  # compiles for this shape, captures
            first = time.perf_counter() - start
            row = {"size": size, "dit": "compiled", "first_decode_s": first}
            row |= split(codec, payload, args.repeats)
            row["psnr_vs_eager_dit"] = float(psnr(image, decoded[size])[0])
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    args.out.write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
