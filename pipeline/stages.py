"""The GPU stage: ``Encoder`` and ``Decoder``, Ray Data callable classes over the public Codec API.

Each actor loads the codec once, in ``__init__``, and keeps it on its device; every batch then
costs only the model call. Use them like any Ray Data callable class::

    ds = ray.data.read_images("s3://bucket/photos/")           # column "image"
    ds = ds.map_batches(Encoder, fn_constructor_kwargs={"model": "ditic-small", "quality": 2},
                        batch_size=8, num_gpus=1, concurrency=4)

A batch may mix image sizes; the encoder splits it by padded size (``bucket``) so that each
codec call holds one size. Rows that arrive with ``status == "error"`` (from the read stage)
pass through untouched, and an item the codec rejects becomes an error row: one bad image
never fails the batch.
"""

from __future__ import annotations

import math
import socket
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.sources import size_bucket

__all__ = ["Encoder", "Decoder", "ENCODED_COLUMNS"]

ENCODED_COLUMNS = [
    "payload", "model_id", "quality", "bpp", "enc_ms", "entropy_ms", "psnr", "ms_ssim", "node", "gpu",
]  # fmt: skip


def _resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _load(
    model: str, device: str | None, dtype: str, allow_untrained: bool = False, decode_only: bool = False
) -> tuple[Any, str]:
    import torch

    from codec.api import load_codec

    resolved = _resolve_device(device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    codec = load_codec(model, device=resolved, dtype=torch_dtype, allow_untrained=allow_untrained,
                       decode_only=decode_only)  # fmt: skip
    return codec, resolved


def _set_threads(threads: int | None) -> None:
    """Torch's CPU threads for this actor (Ray sets one thread for a fractional-CPU actor)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def _where(device: str) -> tuple[str, str]:
    """(node, gpu) labels for the manifest: the node's IP, and the GPU model or ``"cpu"``.

    An actor that holds Ray GPUs but runs on the CPU is a simulated GPU worker
    (``CompressOptions.simulate_gpus``): its label is ``"sim-gpu:K"``, K being Ray's GPU id.
    """
    try:
        import ray

        node = ray.util.get_node_ip_address() if ray.is_initialized() else socket.gethostname()
    except Exception:
        node = socket.gethostname()
    if not device.startswith("cuda"):
        return node, _simulated_gpu() or "cpu"
    import torch

    index = torch.cuda.current_device()
    return node, f"cuda:{index} {torch.cuda.get_device_name(index)}"


def _simulated_gpu() -> str | None:
    try:
        import ray

        ids = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:
        return None
    return "sim-gpu:" + ",".join(str(i) for i in ids) if ids else None


def _groups(batch: dict[str, Any], ok: list[int]) -> dict[str, list[int]]:
    buckets = batch.get("bucket")
    groups: dict[str, list[int]] = defaultdict(list)
    for i in ok:
        bucket = str(buckets[i]) if buckets is not None and buckets[i] else ""
        if not bucket:
            height, width = np.asarray(batch["image"][i]).shape[:2]
            bucket = size_bucket(height, width)
        groups[bucket].append(i)
    return groups


def _status(batch: dict[str, Any], n: int) -> tuple[list[str], list[str | None]]:
    status = [str(s) for s in batch["status"]] if "status" in batch else ["ok"] * n
    error = [e if isinstance(e, str) else None for e in batch["error"]] if "error" in batch else [None] * n
    return status, error


class Encoder:
    """Encode ``image`` (H×W×3 uint8) rows to payloads; the codec is loaded once per actor.

    Output: the input columns minus ``image``, plus ``payload`` (bytes; empty for errors),
    ``model_id``, ``quality``, ``width``, ``height``, ``bpp``, ``enc_ms`` (model on device),
    ``entropy_ms`` (CPU coding), ``psnr`` and ``ms_ssim`` (when ``metrics``: the payload is
    decoded again in the actor and compared with the input), ``node``, ``gpu``, ``status``,
    ``error``.
    """

    def __init__(
        self,
        model: str = "ditic-small",
        quality: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        metrics: bool = False,
        cpu_threads: int | None = None,
        allow_untrained: bool = False,
    ) -> None:
        _set_threads(cpu_threads)
        self.codec, self.device = _load(model, device, dtype, allow_untrained)
        qualities = list(self.codec.qualities)
        self.quality = max(qualities) if quality is None else int(quality)
        if self.quality not in qualities:
            raise ValueError(f"quality {quality!r} is not one of the model's qualities {qualities}")
        self.metrics = metrics
        self.node, self.gpu = _where(self.device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["image"])
        status, error = _status(batch, n)
        result: list[dict[str, Any]] = [{} for _ in range(n)]
        ok = [i for i in range(n) if status[i] == "ok"]
        for indexes in _groups(batch, ok).values():
            self._encode_group(batch, indexes, result, status, error)
        return self._output(batch, result, status, error)

    def _encode_group(
        self, batch: dict[str, Any], indexes: list[int], result: list[dict], status: list, error: list
    ) -> None:
        images = [np.ascontiguousarray(batch["image"][i], dtype=np.uint8) for i in indexes]
        try:
            items = self.codec.encode_items([self._input(batch, i) for i in indexes], quality=self.quality)
        except Exception:
            if len(indexes) == 1:
                raise
            items = None
        if items is None:  # one bad image must not fail its neighbours: retry one by one
            for i in indexes:
                try:
                    self._encode_group(batch, [i], result, status, error)
                except Exception as e:
                    status[i], error[i] = "error", f"{type(e).__name__}: {e}"
            return
        for i, _image, item in zip(indexes, images, items, strict=True):
            result[i] = {
                "payload": item.payload, "width": item.width, "height": item.height, "bpp": item.bpp,
                "enc_ms": item.enc_ms, "entropy_ms": item.entropy_ms,
            }  # fmt: skip
        if self.metrics:
            self._measure(indexes, images, result)

    def _input(self, batch: dict[str, Any], i: int) -> Any:
        """What the codec gets: the pixels, or the whole source image where the image policy keeps
        more than RGB (alpha, grey, 16-bit, ICC/EXIF/XMP), so that the payload carries it."""
        source = batch["source"][i] if "source" in batch else None
        if source is not None and len(source):
            from codec.image import open_image

            return open_image(bytes(source))
        return np.ascontiguousarray(batch["image"][i], dtype=np.uint8)

    def _measure(self, indexes: list[int], images: list[np.ndarray], result: list[dict]) -> None:
        from codec.metrics import ms_ssim, psnr

        decoded = self.codec.decode_items([result[i]["payload"] for i in indexes])
        for i, original, item in zip(indexes, images, decoded, strict=True):
            restored = np.asarray(item.image.convert("RGB"))
            result[i]["psnr"] = _finite(float(psnr(restored, original)[0]))
            result[i]["ms_ssim"] = _finite(float(ms_ssim(restored, original)[0]))

    def _output(self, batch: dict[str, Any], result: list[dict], status: list, error: list) -> dict[str, Any]:
        out = {k: v for k, v in batch.items() if k not in ("image", "source", "mode", "status", "error")}
        n = len(result)
        for column in ("payload", "bpp", "enc_ms", "entropy_ms", "psnr", "ms_ssim"):
            out[column] = [r.get(column) for r in result]
        out["payload"] = [p if p is not None else b"" for p in out["payload"]]
        for column in ("width", "height"):
            given = batch.get(column)
            out[column] = [r.get(column, _int_or_none(given[i]) if given is not None else None)
                           for i, r in enumerate(result)]  # fmt: skip
        out["model_id"] = [self.codec.model_id] * n
        out["quality"] = [self.quality] * n
        out["node"], out["gpu"] = [self.node] * n, [self.gpu] * n
        out["status"], out["error"] = list(status), list(error)
        return out


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else int(number)


def _finite(value: float) -> float | None:
    """Metrics with no finite value (MS-SSIM of a small image) become null, not NaN."""
    return value if math.isfinite(value) else None


class Decoder:
    """Decode ``payload`` rows back to pixels; the codec is loaded once per actor.

    Output: the input columns minus ``payload``, plus ``image`` (H×W×3 uint8; 1×1 for errors),
    ``dec_ms``, ``entropy_ms``, ``status`` and ``error``.
    """

    def __init__(
        self, model: str = "ditic-small", device: str | None = None, dtype: str = "float32",
        cpu_threads: int | None = None, max_pixels: int | None = None,
    ) -> None:  # fmt: skip
        _set_threads(cpu_threads)
        self.codec, self.device = _load(model, device, dtype, decode_only=True)
        if max_pixels:  # payloads above it fail one by one, before any decoding
            self.codec.max_pixels = int(max_pixels)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        payloads = [bytes(p) for p in batch["payload"]]
        n = len(payloads)
        status, error = _status(batch, n)
        images: list[np.ndarray | None] = [None] * n
        timing: list[tuple[float | None, float | None]] = [(None, None)] * n
        ok = [i for i in range(n) if status[i] == "ok"]
        try:  # the whole batch at once (the codec groups it by size) ...
            decoded = dict(zip(ok, self.codec.decode_items([payloads[i] for i in ok]), strict=True))
        except Exception:  # ... unless a payload is bad: then one by one, so only it fails
            decoded = {}
            for i in ok:
                try:
                    decoded[i] = self.codec.decode_items([payloads[i]])[0]
                except Exception as e:
                    status[i], error[i] = "error", f"{type(e).__name__}: {e}"
        for i, item in decoded.items():
            images[i] = np.asarray(item.image.convert("RGB"))
            timing[i] = (item.dec_ms, item.entropy_ms)
        out = {k: v for k, v in batch.items() if k not in ("payload", "status", "error")}
        placeholder = np.zeros((1, 1, 3), np.uint8)
        out["image"] = [img if img is not None else placeholder for img in images]
        out["dec_ms"] = [t[0] for t in timing]
        out["entropy_ms"] = [t[1] for t in timing]
        out["status"], out["error"] = status, error
        return out
