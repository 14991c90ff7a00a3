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
