"""Hostile sources and archives through ``ditic compress-images``, ``compress-videos``, ``restore``,
``extract`` and ``verify`` (in process, on the session's Ray, local folders).

An archive is built once from real crops plus hostile images; copies of it are then tampered
with the way a hostile or damaged manifest would be: keys that escape OUT, shards outside the
archive, ranges that lie, unreadable manifests. Every case: a clear error (exit 1 and a message,
or a failed item), never a write outside OUT, and the untouched items still restored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_crops
from hostile import hostile_images

from jobs.cli import main
from pipeline.manifest import MANIFEST_SCHEMA

pytestmark = pytest.mark.slow
MODEL = "ditic-test"


@pytest.fixture(scope="module")
def archive(ray_cluster, example_photos, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile-archive")
    keys = write_crops(root / "src", [p for p in example_photos if p.suffix == ".jpg"], 5)
    expected = hostile_images(root / "src" / "hostile", example_photos[0])
    dest = root / "archive"
    code = main(["compress-images", str(root / "src"), str(dest), "--model", MODEL, "--batch-size", "2",
                 "--shard-size", "16", "--address", ray_cluster, "--no-progress"])  # fmt: skip
    assert code == 0
    manifests = sorted((dest / "manifests").glob("*.parquet"))
    assert len(manifests) == 1
    return {"dest": dest, "keys": keys, "hostile": expected, "rows": pq.read_table(manifests[0]).to_pylist()}


def test_compress_images_records_each_hostile_image_once(archive) -> None:
    rows = {r["key"]: r for r in archive["rows"]}
    assert sorted(rows) == sorted(archive["keys"] + [f"hostile/{k}" for k in archive["hostile"]])
    bomb = rows["hostile/jpeg_bomb.jpg"]
    assert bomb["status"] == "error" and "pixels" in bomb["error"]
    assert all(rows[k]["status"] == "ok" for k in archive["keys"])
    assert main(["verify", str(archive["dest"])]) == 0


@pytest.mark.parametrize("key", ["../../escape.jpg", "/tmp/absolute.jpg", "set0/../../../escape.jpg"])
def test_compress_images_refuses_a_work_list_key_that_escapes(
    key, archive, ray_cluster, tmp_path, capsys
) -> None:
    photo = archive["dest"].parent / "src" / archive["keys"][0]
    work = tmp_path / "work.parquet"
    pq.write_table(pa.table({"uri": [str(photo), str(photo)], "key": ["fine.jpg", key]}), work)
    code = main(["compress-images", str(work), str(tmp_path / "dest"), "--model", MODEL,
                 "--address", ray_cluster, "--no-progress"])  # fmt: skip
    assert code == 1 and "unsafe key" in capsys.readouterr().err
    assert not (tmp_path / "dest" / "manifests").exists() and not (tmp_path / "dest" / "shards").exists()
    assert not (tmp_path / "dest" / "job.json").exists()  # no run recorded as started


def _tampered(archive: dict, folder: Path, edit) -> Path:
    """A copy of the archive whose manifest rows went through ``edit(rows) -> rows``."""
    dest = folder / "archive"
    shutil.copytree(archive["dest"], dest)
    manifest = next((dest / "manifests").glob("*.parquet"))
    rows = edit([dict(r) for r in archive["rows"]])
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), manifest)
    return dest


def _verify_problems(dest: Path, capsys) -> list[str]:
    """``ditic verify --json`` of ``dest``, which must fail with a report (not an error line)."""
    code = main(["verify", str(dest), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and not captured.err, captured
    report = json.loads(captured.out)
    assert report["passed"] is False
    return report["problems"]


def _ok_keys(archive: dict) -> list[str]:
    return [r["key"] for r in archive["rows"] if r["status"] == "ok"]


def test_restore_refuses_manifest_keys_that_escape_out(archive, ray_cluster, tmp_path, capsys) -> None:
    escaping = ["../../escape.jpg", "/tmp/ditic-absolute-escape.jpg"]
    ok = _ok_keys(archive)

    def edit(rows: list[dict]) -> list[dict]:
        for row, key in zip([r for r in rows if r["key"] in ok], escaping, strict=False):
            row["key"] = key
        return rows

    dest = _tampered(archive, tmp_path / "t", edit)
    problems = _verify_problems(dest, capsys)
    for key in escaping:
        assert any(p.startswith(f"{key!r}: unsafe key") for p in problems), (key, problems)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "t" / "out"
    code = main(["restore", str(dest), str(out), "--address", ray_cluster, "--no-progress"])
    assert code == 1 and "unsafe key" in capsys.readouterr().err
    assert {p for p in tmp_path.rglob("*")} == before and not Path("/tmp/ditic-absolute-escape.png").exists()
    one = tmp_path / "t" / "one.png"
    assert main(["extract", str(dest), escaping[0], "-o", str(one)]) == 0  # OUT is the -o file, not the key
    assert one.exists() and {p for p in tmp_path.rglob("*")} - before == {one}


def _lying_rows(rows: list[dict]) -> list[dict]:
    """The first five ok items point outside the archive (two into one shard: a whole-shard read)
    or outside their shard."""
    targets = [r for r in rows if r["status"] == "ok"][:5]
    targets[0]["payload_uri"] = targets[4]["payload_uri"] = "../outside.bin"
    targets[1]["payload_offset"] = 10**12
    targets[2]["payload_bytes"] = 2**40
    targets[3]["payload_offset"] = -5
    return rows


def test_restore_extract_verify_with_lying_ranges_and_a_planted_link(
    archive, ray_cluster, tmp_path, capsys
) -> None:
    dest = _tampered(archive, tmp_path / "t", _lying_rows)
    shard = next((dest / "shards").glob("*.bin"))
    shutil.copy(shard, dest.parent / "outside.bin")  # real payload bytes, outside the archive
    lying = [r["key"] for r in _lying_rows([dict(r) for r in archive["rows"]]) if r["status"] == "ok"][:5]
    honest = [k for k in _ok_keys(archive) if k not in lying]
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    planted = honest[-1].split("/")[0]  # a folder of an honest key, linked out of OUT
    (out / planted).symlink_to(elsewhere, target_is_directory=True)
    code = main(["restore", str(dest), str(out), "--address", ray_cluster, "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1
    assert not list(elsewhere.iterdir()), "restore wrote through a symbolic link out of OUT"
    linked = [k for k in honest if k.startswith(planted + "/")]
    for key in honest:
        png = out / (key.rsplit(".", 1)[0] + ".png")
        assert png.exists() == (key not in linked), key
    failed = {line.removeprefix("  failed: ").split(": ", 1)[0] for line in printed.splitlines()
              if line.startswith("  failed: ")}  # fmt: skip
    assert failed == set(lying) | set(linked), printed
    problems = _verify_problems(dest, capsys)
    assert len(problems) == len(lying), problems  # one listed problem per lying row, nothing else
    for key in lying:
        assert sum(p.startswith(f"{key!r}: ") for p in problems) == 1, (key, problems)
    assert sum("'../outside.bin' is outside the archive" in p for p in problems) == 2, problems
    assert main(["verify", str(dest)]) == 1
    printed = capsys.readouterr().out
    assert printed.count("  PROBLEM: ") == len(lying) and "verify: FAILED (5 problems)" in printed
    for key in lying:
        assert main(["extract", str(dest), key, "-o", str(tmp_path / "x.png")]) == 1, key
        assert capsys.readouterr().err.startswith("ditic extract: error: ")
    assert not (tmp_path / "x.png").exists()


OUTSIDE_SHARDS = ["/etc/passwd", "s3://another-bucket/shards/x.bin", "manifests/x.parquet",
                  "shards/../job.json"]  # fmt: skip


@pytest.mark.parametrize("uri", [*OUTSIDE_SHARDS, None])
def test_verify_lists_a_payload_uri_outside_the_shards(uri, archive, tmp_path, capsys) -> None:
    victim = _ok_keys(archive)[0]

    def edit(rows: list[dict]) -> list[dict]:
        next(r for r in rows if r["key"] == victim)["payload_uri"] = uri
        return rows

    dest = _tampered(archive, tmp_path / "t", edit)
    problems = _verify_problems(dest, capsys)
    assert problems == [f"{victim!r}: payload_uri {uri!r} is outside the archive's shards/ folder"]
    assert main(["verify", str(archive["dest"])]) == 0  # the untampered archive still passes
    capsys.readouterr()


@pytest.mark.parametrize("damage", ["garbage_manifest", "keys_only_manifest", "garbage_job_record"])
def test_unreadable_archive_parts_are_clear_errors(damage, archive, ray_cluster, tmp_path, capsys) -> None:
    dest = tmp_path / "archive"
    shutil.copytree(archive["dest"], dest)
    if damage == "garbage_manifest":
        (dest / "manifests" / "zz-garbage.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    elif damage == "keys_only_manifest":
        pq.write_table(pa.table({"key": ["set0/other.jpg"]}), dest / "manifests" / "zz-keys.parquet")
    else:
        (dest / "job.json").write_text("{not json")
    out = tmp_path / "out"
    commands = {
        "restore": ["restore", str(dest), str(out), "--address", ray_cluster, "--no-progress"],
        "extract": ["extract", str(dest), archive["keys"][0], "-o", str(tmp_path / "one.png")],
        "verify": ["verify", str(dest), "--json"],
    }
    for name, argv in commands.items():
        code = main(argv)
        captured = capsys.readouterr()
        if damage == "garbage_job_record" and name == "verify":
            assert code == 0, captured  # verify does not read job.json
            continue
        assert code == 1, (name, captured)
        message = captured.err + captured.out
        assert f"ditic {name}: error: " in message or '"passed": false' in message, (name, message)
    assert not out.exists() or not any(out.rglob("*.png"))


def test_compress_videos_refuses_a_work_list_key_that_escapes(ray_cluster, tmp_path, capsys) -> None:
    work = tmp_path / "videos.parquet"
    pq.write_table(pa.table({"uri": [str(tmp_path / "a.mp4")], "key": ["../../escape.mp4"]}), work)
    code = main(["compress-videos", str(work), str(tmp_path / "dest"), "--model", MODEL, "--device", "cpu",
                 "--address", ray_cluster])  # fmt: skip
    assert code == 1 and "unsafe key" in capsys.readouterr().err
    assert not (tmp_path.parent / "escape.dticv").exists() and not (tmp_path / "dest").exists()
