"""Frame-by-frame video throughput of the image codec on one device (issue 5's GPU report).

    python tools/video_fps.py [--model ditic-small] [--size 1280x720] [--frames 240] [--batch 16]

Makes a 720p H.264 clip (a slow pan over a photo, so frames differ), decodes it with threaded PyAV,
encodes every frame with the codec in batches, decodes the payloads, and prints frames/s for each step
(the first batch is a warm-up and is left out), kbps at the clip's frame rate and mean PSNR. It times the
codec on frames, not the Ray job (`ditic compress-videos`), which adds reading and assembly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codec.api import load_codec  # noqa: E402
from codec.metrics import psnr  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def make_clip(path: Path, width: int, height: int, frames: int, fps: int) -> None:
    photo = sorted((REPO / "examples" / "photos").glob("*.jpg"))[1]
    big = ImageOps.fit(Image.open(photo).convert("RGB"), (int(width * 1.5), int(height * 1.5)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            x = int((big.width - width) * i / max(1, frames - 1))
            pixels = np.asarray(big.crop((x, 0, x + width, height)))
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def decode_clip(path: Path) -> tuple[list[np.ndarray], float, float]:
    start = time.perf_counter()
    with av.open(str(path)) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        rate = float(vs.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(vs)]
    return frames, len(frames) / (time.perf_counter() - start), rate


def timed_batches(fn, items: list, batch: int, sync) -> tuple[list, float]:  # noqa: ANN001
    """Apply ``fn`` to batches; frames/s over all batches but the first (warm-up)."""
    out, elapsed, counted = [], 0.0, 0
    for k in range(0, len(items), batch):
        sync()
        start = time.perf_counter()
        out += fn(items[k : k + batch])
        sync()
        if k:
            elapsed += time.perf_counter() - start
            counted += len(items[k : k + batch])
    return out, counted / elapsed if elapsed else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ditic-small")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    clip = Path("/tmp") / f"clip_{width}x{height}.mp4"
    make_clip(clip, width, height, args.frames, args.fps)
    frames, decode_fps, rate = decode_clip(clip)
    codec = load_codec(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    quality = max(codec.qualities)
    payloads, enc_fps = timed_batches(lambda b: codec.encode(b, quality), frames, args.batch, sync)
    decoded, dec_fps = timed_batches(codec.decode, payloads, args.batch, sync)
    bits = 8 * sum(len(p) for p in payloads)
    scores = [psnr(np.asarray(d), f) for d, f in zip(decoded, frames, strict=True)]
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "model": args.model, "model_id": codec.model_id, "dtype": args.dtype, "size": args.size,
        "frames": len(frames), "batch": args.batch, "quality": quality,
        "pyav_decode_fps": round(decode_fps, 1),
        "encode_fps": round(enc_fps, 1), "decode_fps": round(dec_fps, 1),
        "kbps": round(bits / len(frames) * rate / 1000, 1),
        "bpp": bits / (len(frames) * width * height),
        "psnr_rgb": round(float(np.mean(scores)), 2),
    }  # fmt: skip
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
