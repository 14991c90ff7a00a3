"""``ditic evaluate-video``: rate and distortion of our codec beside x264, x265 and SVT-AV1.

Every clip is decoded once to RGB (the reference). Our codec codes each frame on its own (all
qualities); the classical codecs code the clip through PyAV over a CRF sweep and are decoded
back. Rate: kbit/s of coded video (payloads, or the encoder's packets; no container overhead)
over the clip's real duration. Distortion: PSNR over RGB, and PSNR of BT.601 luma computed from
RGB (Y = 0.299 R + 0.587 G + 0.114 B, full range), each averaged over frames.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evaluate_clip", "psnr", "psnr_y", "add_arguments", "run"]

DEFAULT_CRFS = {
    "libx264": [18, 24, 30, 36, 42],
    "libx265": [20, 26, 32, 38, 44],
    "libsvtav1": [25, 35, 45, 55, 63],
}
BT601 = np.array([0.299, 0.587, 0.114])


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else 100.0


def psnr_y(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR of BT.601 luma computed from RGB (full range, 0-255)."""
    return psnr(x.astype(np.float64) @ BT601, y.astype(np.float64) @ BT601)


def _clip(path: Path, max_frames: int) -> tuple[Any, list[np.ndarray], float]:
    from pipeline.video import decode_range, probe_video

    probe = probe_video(str(path), name=path.name)
    count = min(probe.frame_count, max_frames)
    decoded = decode_range(str(path), probe, 0, count)
    if decoded.errors:
        raise ValueError(f"{path}: frames do not decode: {sorted(decoded.errors)[:5]}")
    slots = probe.slots[:count]
    seconds = float((slots[-1].pts + slots[-1].duration - slots[0].pts) * probe.header.time_base)
    return probe, [decoded.frames[i] for i in range(count)], seconds


def _scores(name: str, setting: str, bits: int, seconds: float, ref: list, out: list, ms: float) -> dict:
    return {
        "codec": name, "setting": setting, "kbps": bits / seconds / 1000,
        "psnr_rgb": float(np.mean([psnr(a, b) for a, b in zip(ref, out, strict=True)])),
        "psnr_y_bt601": float(np.mean([psnr_y(a, b) for a, b in zip(ref, out, strict=True)])),
        "encode_fps": len(ref) / (ms / 1000) if ms > 0 else None,
    }  # fmt: skip


def _ours(codec: Any, frames: list[np.ndarray], seconds: float, batch: int) -> list[dict]:
    rows = []
    for quality in codec.qualities:
        payloads, started = [], time.perf_counter()
        for a in range(0, len(frames), batch):
            payloads += [item.payload for item in codec.encode_items(frames[a : a + batch], quality=quality)]
        ms = (time.perf_counter() - started) * 1000
        decoded = [np.asarray(item.image.convert("RGB")) for item in codec.decode_items(payloads)]
        bits = 8 * sum(len(p) for p in payloads)
        label = codec.name if codec.decoder == "perceptual" else f"{codec.name}:{codec.decoder}"
        rows.append(_scores(f"DiT-IC ({label})", f"q{quality}", bits, seconds, frames, decoded, ms))
    return rows


def _classical(probe: Any, frames: list[np.ndarray], seconds: float, codec: str, crf: int) -> dict:
    from dataclasses import replace

    from pipeline.video import decode_range, probe_video
    from pipeline.video_writer import VideoWriter

    header = replace(probe.header, streams=())
    buffer, started = io.BytesIO(), time.perf_counter()
    with VideoWriter(buffer, header, codec, crf, format="matroska") as writer:
        for frame, slot in zip(frames, probe.slots, strict=False):
            writer.write(frame, slot.pts, slot.duration)
    ms = (time.perf_counter() - started) * 1000
    data = buffer.getvalue()
    back = probe_video(io.BytesIO(data))
    decoded = decode_range(io.BytesIO(data), back, 0, back.frame_count)
    out = [decoded.frames[i] for i in range(len(frames))]
    return _scores(codec, f"crf {crf}", 8 * writer.video_bytes, seconds, frames, out, ms)


def evaluate_clip(path: Path, codec: Any, crfs: dict[str, list[int]], max_frames: int = 30,
                  batch: int = 8) -> list[dict[str, Any]]:
    """All rows (one per codec setting) for one clip."""
    probe, frames, seconds = _clip(path, max_frames)
    rows = _ours(codec, frames, seconds, batch) if codec is not None else []
    for name, values in crfs.items():
        rows += [_classical(probe, frames, seconds, name, crf) for crf in values]
    info = {"clip": path.name, "size": f"{probe.header.width}x{probe.header.height}", "frames": len(frames)}
    return [{**info, **row} for row in rows]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| clip | size | frames | codec | setting | kbps | PSNR RGB (dB) | PSNR Y BT.601 (dB) |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['codec']} | {r['setting']} | "
                     f"{r['kbps']:.1f} | {r['psnr_rgb']:.2f} | {r['psnr_y_bt601']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """kbps against PSNR (RGB), one panel per clip; a small PNG for the docs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = sorted({r["clip"] for r in rows})
    fig, axes = plt.subplots(1, len(clips), figsize=(4.2 * len(clips), 3.4), squeeze=False)
    for ax, clip in zip(axes[0], clips, strict=True):
        for name in dict.fromkeys(r["codec"] for r in rows):
            pts = sorted((r["kbps"], r["psnr_rgb"]) for r in rows if r["clip"] == clip and r["codec"] == name)
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=name)
        ax.set(xscale="log", xlabel="kbit/s", ylabel="PSNR RGB (dB)", title=clip)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser, command_name: str) -> None:
    parser.add_argument("clips", nargs="*", default=["../shared/data/video"], help="clips or folders")
    parser.add_argument("--model", default="ditic-small", help="model name or checkpoint ('none' to skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-frames", type=int, default=30, help="first N frames of each clip")
    parser.add_argument("--codecs", default="libx264,libx265,libsvtav1", help="classical codecs to sweep")
    parser.add_argument("--json", type=Path, default=None, help="write all rows as JSON here")
    parser.add_argument("--table", type=Path, default=None, help="write the markdown table here")
    parser.add_argument("--plot", type=Path, default=None, help="write the rate-distortion PNG here")


def _paths(items: list[str]) -> list[Path]:
    from pipeline.video import VIDEO_EXTENSIONS

    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            paths.append(item)
    if not paths:
        raise FileNotFoundError(f"no video clips in {items}")
    return paths


def run(args: argparse.Namespace) -> int:
    codec = None
    if args.model != "none":
        import torch

        from codec.api import load_codec

        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        codec = load_codec(args.model, device=device, dtype=torch.float32)
    crfs = {name: DEFAULT_CRFS[name] for name in args.codecs.split(",") if name}
    rows = [row for path in _paths(args.clips) for row in evaluate_clip(path, codec, crfs, args.max_frames)]
    table = markdown_table(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if args.table:
        args.table.write_text(table)
    if args.plot:
        plot(rows, args.plot)
    return 0
