"""End to end on the real stack: SeaweedFS S3 + local Ray + the ditic-test codec on CPU.

One archive is built once per module (real photos plus the bad-input corpus) and then
restored, extracted, verified and tampered with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from corpus import build_corpus
from PIL import Image

from codec.api import load_codec
from jobs.cli import main
from pipeline.archive import find_item, read_payload, verify_archive
from pipeline.job import CompressOptions, compress_images, measure_throughput
from pipeline.manifest import ArchiveLayout, read_manifests
from pipeline.restore import extract_item
from pipeline.storage import open_location

MODEL = "ditic-test"


def _small_copy(photo: Path, target: Path, long_side: int) -> None:
    image = Image.open(photo).convert("RGB")
    image.thumbnail((long_side, long_side))
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, quality=92)


@pytest.fixture(scope="module")
def built(s3_store, ray_cluster, example_photos, shared_data, tmp_path_factory) -> dict:
    """Real photos (scaled down: CPU time) and the bad-input corpus, compressed once."""
    local = tmp_path_factory.mktemp("src")
    photos = [p for p in example_photos if p.suffix == ".jpg"]
    for photo in photos[:2]:
        _small_copy(photo, local / "photos" / photo.name, 224)  # 224 px: MS-SSIM is defined
    for i, photo in enumerate(sorted((shared_data / "dev").iterdir())):
        _small_copy(photo, local / "dev" / f"{photo.stem}.jpg", 64 + 16 * i)
    expected = build_corpus(local / "corpus", photos[0])
    bucket = s3_store.bucket()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            s3_store.upload(path, f"{bucket}/src/{path.relative_to(local)}")
    options = CompressOptions(
        source=f"{bucket}/src", dest=f"{bucket}/archive", model=MODEL, batch_size=3, shard_size=4,
        storage_options=s3_store.storage_options, progress=False, metrics=True,
    )  # fmt: skip
    summary = compress_images(options)
    keys = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    return {"options": options, "summary": summary, "keys": keys, "corpus": expected, "local": local}


def test_every_input_is_committed_once_with_the_contract_columns(built) -> None:
    options = built["options"]
    location = open_location(options.dest, options.storage_options)
    table = read_manifests(location)
    assert sorted(table["key"].to_pylist()) == built["keys"]
    rows = {r["key"]: r for r in table.to_pylist()}
    for key, expected in built["corpus"].items():
        row = rows[f"corpus/{key}"]
        if expected == "ok":
            assert row["status"] == "ok", (key, row["error"])
        else:
            assert row["status"] == "error" and expected in row["error"], (key, row["error"])
    ok = [r for r in rows.values() if r["status"] == "ok"]
    codec = load_codec(MODEL)
    for row in ok:
        assert row["model_id"] == codec.model_id and row["quality"] == max(codec.qualities)
        assert row["bpp"] > 0 and row["payload_bytes"] > 0 and row["enc_ms"] > 0
        assert row["gpu"] == "cpu" and row["node"] and row["attempt"] == 1
        assert len(row["source_sha256"]) == 64
    big = [r for r in ok if min(r["width"], r["height"]) >= 161]
    assert big and all(r["psnr"] is not None and r["ms_ssim"] is not None for r in big)
    summary = built["summary"]
    assert summary["items"] == len(built["keys"]) and summary["ok"] == len(ok)
    assert summary["error"] == sum(v != "ok" for v in built["corpus"].values())
    assert summary["bytes_out"] == sum(r["payload_bytes"] for r in ok)
    assert len(ArchiveLayout(location).manifest_paths()) == len(summary["shards"]) >= 3
    fs = location.fs
    record = json.loads(fs.cat_file(ArchiveLayout(location).summary("json")))
    assert record["ok"] == summary["ok"]


def test_verify_passes_and_catches_a_flipped_byte(built, s3_store) -> None:
    options = built["options"]
    location = open_location(options.dest, options.storage_options)
    report = verify_archive(location)
    assert report.passed, report.problems
    assert report.payloads_checked == report.ok > 0 and not report.warnings
    # copy the archive, flip one payload byte in the copy: verify must name the item
    fs = location.fs
    copy = f"{options.dest}-tampered"
    fs.copy(location.root, copy.removeprefix("s3://"), recursive=True)
    tampered = open_location(copy, options.storage_options)
    row = next(r for r in read_manifests(tampered).to_pylist() if r["status"] == "ok")
    shard = ArchiveLayout(tampered).shard_path(row["payload_uri"])
    data = bytearray(fs.cat_file(shard))
    data[row["payload_offset"] + row["payload_bytes"] - 6] ^= 0xFF
    fs.pipe_file(shard, bytes(data))
    bad = verify_archive(tampered)
    assert not bad.passed and any(row["key"] in p and "checksum" in p.lower() for p in bad.problems)
    flags = ["--storage-options", json.dumps(options.storage_options)]
    assert main(["verify", options.dest, *flags]) == 0
    assert main(["verify", copy, *flags]) == 1


def test_restore_round_trip_equals_codec_decode(built, tmp_path) -> None:
    options = built["options"]
    out = tmp_path / "restored"
    flags = ["--storage-options", json.dumps(options.storage_options), "--no-progress"]
    assert main(["restore", options.dest, str(out), *flags]) == 0  # the CLI, on the session's Ray
    location = open_location(options.dest, options.storage_options)
    ok = [r for r in read_manifests(location).to_pylist() if r["status"] == "ok"]
    assert len(list(out.rglob("*.png"))) == len(ok)
    codec = load_codec(MODEL)
    for row in ok:
        restored = out / (row["key"].rsplit(".", 1)[0] + ".png")
        reference = np.asarray(codec.decode([read_payload(location, row)])[0].convert("RGB"), dtype=int)
        got = np.asarray(Image.open(restored).convert("RGB"), dtype=int)
        # restore decodes same-size items in one batch; float32 convolutions may round a pixel one level
        # apart from a one-image decode (the CPU's kernels depend on the batch size; seen at 2 of 7 dev
        # images). Entropy decoding itself is exact: tests/codec/test_golden_gpu.py.
        assert got.shape == reference.shape and np.abs(got - reference).max() <= 1, row["key"]
        assert np.mean(got == reference) > 0.99, row["key"]


def test_extract_one_item_by_ranged_read(built, tmp_path) -> None:
    options = built["options"]
    location = open_location(options.dest, options.storage_options)
    key = "photos/" + sorted(k for k in built["keys"] if k.startswith("photos/"))[0].split("/", 1)[1]
    target = tmp_path / "one.png"
    info = extract_item(options.dest, key, str(target), storage_options=options.storage_options)
    row = find_item(location, key)
    assert (info["width"], info["height"]) == (row["width"], row["height"])
    reference = load_codec(MODEL).decode([read_payload(location, row)])[0].convert("RGB")
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(reference))


def test_rerun_commits_nothing_new(built) -> None:
    summary = compress_images(built["options"])
    assert summary["run"]["submitted"] == 0 and summary["run"]["skipped"] == len(built["keys"])
    assert summary["items"] == len(built["keys"])


def test_resume_with_other_settings_is_refused(built) -> None:
    options = built["options"]
    other = CompressOptions(**{**options.__dict__, "quality": 1})
    with pytest.raises(ValueError, match="--overwrite"):
        compress_images(other)


def test_throughput_with_a_discarding_sink(built) -> None:
    options = built["options"]
    source = f"{options.source}/photos"
    result = measure_throughput(
        CompressOptions(**{**options.__dict__, "source": source, "dest": "", "metrics": False})
    )
    assert result["items"] == result["ok"] == 2
    assert result["end_to_end_images_per_s"] > 0 and result["codec_images_per_s"] > 0
