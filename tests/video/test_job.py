"""The compress-videos job on a local Ray (2 CPUs, fractional actors) over SeaweedFS, and restore."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.dticv_reader import open_container
from pipeline.storage import open_location
from pipeline.video import media_summary
from pipeline.video_job import VideoJob, compress_videos
from pipeline.video_manifest import committed_videos
from pipeline.video_restore import restore_video

pytestmark = pytest.mark.slow
MODEL = "ditic-test"


@pytest.fixture(scope="module")
def video_bucket(s3_store, clips, bad_files) -> dict[str, object]:
    """Sources in a bucket: good clips (one with audio, one VFR), a corrupt one and bad files."""
    src = s3_store.bucket("src")
    layout = {"a/audio.mp4": clips["audio_mp4"], "b/plain.mp4": clips["plain"], "vfr.mkv": clips["vfr"],
              "corrupt.avi": clips["corrupt"], "bad/truncated.mp4": bad_files["truncated"],
              "bad/notes.mp4": bad_files["text"], "bad/audio_only.mkv": bad_files["audio_only"]}  # fmt: skip
    for key, path in layout.items():
        s3_store.upload(path, f"{src}/{key}")
    return {"src": src, "options": s3_store.storage_options, "files": layout}


def _job(src: str, dest: str, options: dict, **kw) -> VideoJob:
    base = dict(model=MODEL, range_frames=4, batch_size=2, actors=2, cpus_per_actor=0.5, cpus_per_task=0.5)
    return VideoJob(src=src, dest=dest, storage_options=options, **{**base, **kw})


@pytest.fixture(scope="module")
def first_run(ray_cluster, s3_store, video_bucket) -> dict[str, object]:
    dest = s3_store.bucket("dst")
    summary = compress_videos(_job(video_bucket["src"], dest, video_bucket["options"]))
    return {"dest": dest, "summary": summary}


def _frames(dest: str, options: dict, key: str) -> list[dict]:
    location = open_location(dest, options)
    from pipeline.video_manifest import video_id

    path = location.path("manifests", "frames", f"{video_id(key)}.parquet")
    return pq.read_table(location.fs.open(path, "rb")).to_pylist()


def test_job_codes_good_videos_and_reports_bad_ones(first_run, video_bucket):
    summary = first_run["summary"]
    assert summary["videos"] == {"ok": 3, "partial": 1, "error": 3, "skipped": 0}
    rows = committed_videos(open_location(first_run["dest"], video_bucket["options"]))
    assert set(rows) == set(video_bucket["files"])
    assert "cannot open" in rows["bad/notes.mp4"]["error"]
    assert "no video stream" in rows["bad/audio_only.mkv"]["error"]
    assert rows["corrupt.avi"]["frames_failed"] == 1 and "frame 5" in rows["corrupt.avi"]["error"]
    audio = rows["a/audio.mp4"]
    assert audio["frames_ok"] == 10 and audio["duration_s"] == pytest.approx(0.4)
    assert audio["kbps"] == pytest.approx(audio["mean_bpp"] * 64 * 48 * 25 / 1000, rel=1e-6)
    assert audio["encode_fps"] > 0 and audio["decode_fps"] > 0 and audio["psnr"] is not None


def test_frame_rows_and_container_agree(first_run, video_bucket):
    options = video_bucket["options"]
    frames = _frames(first_run["dest"], options, "vfr.mkv")
    assert [r["frame_index"] for r in frames] == list(range(10))
    assert [r["pts"] for r in frames] == [0, 20, 80, 120, 140, 200, 240, 260, 320, 360]
    reader = open_container(f"{first_run['dest']}/vfr.mkv.dticv", options)
    for row, entry, payload in zip(frames, reader.index.frames, reader.read_frames(), strict=True):
        assert (row["pts"], row["payload_offset"]) == (entry.pts, entry.offset)
        assert row["payload_bytes"] == len(payload)
    corrupt = _frames(first_run["dest"], options, "corrupt.avi")
    assert [r["status"] for r in corrupt].count("error") == 1 and corrupt[5]["status"] == "error"


def test_ranges_of_one_video_spread_over_two_actors(first_run, video_bucket):
    frames = _frames(first_run["dest"], video_bucket["options"], "b/plain.mp4")
    assert len({r["worker"] for r in frames}) == 2


def test_split_run_is_byte_identical_to_one_actor_run(first_run, s3_store, video_bucket, tmp_path: Path):
    src, options = video_bucket["src"], video_bucket["options"]
    work_list = tmp_path / "one.parquet"  # the same key, so the same header, as in the first run
    pq.write_table(pa.table({"key": ["b/plain.mp4"], "uri": [f"{src}/b/plain.mp4"]}), work_list)
    single = s3_store.bucket("one")
    job = _job(str(work_list), single, options, actors=1, range_frames=1000, cpus_per_actor=1.0)
    assert compress_videos(job)["videos"]["ok"] == 1
    fs = open_location(single, options).fs
    one = fs.cat_file(f"{single}/b/plain.mp4.dticv")
    split = fs.cat_file(f"{first_run['dest']}/b/plain.mp4.dticv")
    assert one == split and len(one) > 500


def test_rerun_skips_committed_videos(first_run, video_bucket):
    location = open_location(first_run["dest"], video_bucket["options"])
    before = sorted(location.fs.find(location.root))
    summary = compress_videos(_job(video_bucket["src"], first_run["dest"], video_bucket["options"]))
    assert summary["videos"] == {"ok": 0, "partial": 0, "error": 0, "skipped": 7}
    assert sorted(location.fs.find(location.root)) == before


def test_restore_round_trip_keeps_timing_and_audio(first_run, video_bucket, clips, tmp_path: Path):
    out = tmp_path / "restored.mp4"
    result = restore_video(f"{first_run['dest']}/a/audio.mp4.dticv", str(out), video_bucket["options"],
                           model=MODEL)  # fmt: skip
    before, after = media_summary(str(clips["audio_mp4"])), media_summary(str(out))
    assert result["frames"] == after["frames"] == before["frames"] == 10
    np.testing.assert_allclose(after["pts"], before["pts"], atol=1e-6)
    assert after["streams"] == ["video", "audio"]
    assert after["duration"] == pytest.approx(before["duration"], abs=1e-3)


def test_restore_frame_range_reads_only_that_range(first_run, video_bucket, tmp_path: Path, monkeypatch):
    import pipeline.storage as storage

    reads: list[tuple] = []
    real = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda fs, p, a=None, b=None, **k: reads.append((a, b)) or
                        real(fs, p, a, b, **k))  # fmt: skip
    url = f"{first_run['dest']}/b/plain.mp4.dticv"
    out = tmp_path / "part.mkv"
    result = restore_video(url, str(out), video_bucket["options"], model=MODEL, codec="ffv1", frames="4:7")
    assert result["frames"] == 3 and media_summary(str(out))["pts"] == pytest.approx([0.0, 0.04, 0.08])
    reader = open_container(url, video_bucket["options"])
    wanted = reader.index.frames[4:7]
    span = (wanted[0].offset, wanted[-1].offset + wanted[-1].size)
    frame_reads = [(a, b) for a, b in reads if a is not None and a >= reader.header_size and b <= span[1]]
    assert frame_reads == [span]
    assert all(b - a < reader.size for a, b in reads if a is not None)


def test_restore_refuses_another_model(first_run, video_bucket, tmp_path: Path):
    from codec.errors import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="encoded by model"):
        restore_video(f"{first_run['dest']}/vfr.mkv.dticv", str(tmp_path / "x.mp4"), video_bucket["options"],
                      model="ditic-small")  # fmt: skip


def test_a_local_folder_works_as_source_and_destination(ray_cluster, clips, tmp_path: Path):
    """A plain local DEST has real folders: staging and upload must create them (object stores do not)."""
    src = tmp_path / "videos"
    src.mkdir()
    (src / "plain.mp4").write_bytes(clips["plain"].read_bytes())
    dest = tmp_path / "archive"  # does not exist yet
    summary = compress_videos(_job(str(src), str(dest), {}, actors=1, cpus_per_actor=1.0))
    assert summary["videos"]["ok"] == 1, summary
    container = open_container(str(dest / "plain.mp4.dticv"))
    assert container.frame_count == 12
    assert all(container.read_frames())
