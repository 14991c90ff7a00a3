"""Plain helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def example_photo_paths() -> list[Path]:
    """The small, freely licensed photos shipped in the repo (examples/photos)."""
    folder = REPO / "examples" / "photos"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def write_small_photos(folder: Path, count: int = 3, side: int = 128) -> Path:
    """``count`` of the example photos as RGB PNGs with a longer side of at most ``side`` in ``folder``
    (created): real pictures that keep training crops cheap."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = example_photo_paths()[:count]
    assert len(sources) == count, "examples/photos should hold a few photos"
    for src in sources:
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            im.save(folder / f"{src.stem}.png")
    return folder


def committed_exactly_once(dest: str, storage_options: dict, keys: list[str]) -> tuple[list[dict], object]:
    """The archive's manifest rows, asserting every key in ``keys`` is there once, ok, and that
    ``verify`` passes; returns (rows, the verify report) for further checks."""
    from collections import Counter

    from pipeline.archive import verify_archive
    from pipeline.manifest import read_manifests
    from pipeline.storage import open_location

    location = open_location(dest, storage_options)
    rows = read_manifests(location).to_pylist()
    counts = Counter(r["key"] for r in rows)
    assert sorted(counts) == keys and set(counts.values()) == {1}, counts
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["status"] != "ok"]
    report = verify_archive(location)
    assert report.passed, report.problems
    return rows, report


def write_crops(
    folder: Path, photos: list[Path], count: int, side: tuple[int, int, int] = (96, 8, 64), quality: int = 90
) -> list[str]:
    """``count`` square crops of real photos as JPEGs under ``folder`` (keys ``set<k>/crop_<i>.jpg``);
    crop ``i`` is ``side[0] + (i * side[1]) % side[2]`` px. Returns the keys, sorted."""
    from PIL import Image

    keys = []
    for i in range(count):
        with Image.open(photos[i % len(photos)]) as im:
            image = im.convert("RGB")
        edge = side[0] + (i * side[1]) % side[2]
        left, top = (i * 37) % max(1, image.width - edge), (i * 53) % max(1, image.height - edge)
        key = f"set{i % 3}/crop_{i:02d}.jpg"
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        image.crop((left, top, left + edge, top + edge)).save(folder / key, quality=quality)
        keys.append(key)
    return sorted(keys)


def measured_cpu_peak(fn) -> int:  # noqa: ANN001
    """Peak bytes allocated during ``fn()`` on the CPU (profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def whole_and_channels_last(decoder, z, decode):  # noqa: ANN001
    """(the decoder's whole decode of ``z``, ``decode(decoder, z)`` with the decoder and ``z`` in
    channels-last), without gradients; the decoder goes back to the contiguous format."""
    import torch

    with torch.no_grad():
        whole = decoder(z)
        decoder.to(memory_format=torch.channels_last)
        try:
            return whole, decode(decoder, z.contiguous(memory_format=torch.channels_last))
        finally:
            decoder.to(memory_format=torch.contiguous_format)
