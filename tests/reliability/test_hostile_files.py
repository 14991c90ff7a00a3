"""Hostile files through the local entry points: ``ditic compress``, ``decompress``, ``info``
(subprocesses under a 2 GiB address-space limit) and ``ditic restore-video`` (in process, every
Python and numpy allocation traced).

Every case must end in a clear error (non-zero exit, one line naming the file, no traceback) or
in a correct result, within bounded memory, and write nothing outside the output folder.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hostile import hostile_containers, hostile_images, hostile_payloads
from reliability_helpers import REPO, TRACEBACK, corpus

from codec.api import load_codec
from jobs.cli import main

MEMORY_LIMIT = 2 << 30  # address space of each CLI subprocess (torch and the tiny model need ~1.5 GiB)
MODEL = ["--model", "ditic-test", "--device", "cpu"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m jobs.cli ARGS`` under the memory limit; a MemoryError would show as a traceback."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("DITIC_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=cwd, env=env, preexec_fn=limit,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _assert_clean_failures(result: subprocess.CompletedProcess, command: str, bad: list[Path]) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert not TRACEBACK.search(result.stderr + result.stdout), result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"ditic {command}: ")]
    for path in bad:
        assert any(str(path) in line for line in lines), f"no error line for {path}:\n{result.stderr}"


@pytest.fixture(scope="module")
def codec():
    return load_codec("ditic-test")


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)] + [
        rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    ]


def test_compress_survives_the_image_corpus(tmp_path, example_photos) -> None:
    inputs = tmp_path / "in"
    expected = {Path(k).name: ("ok" if v == "ok" else "error")
                for k, v in corpus.build_corpus(inputs, example_photos[0]).items()}  # fmt: skip
    expected |= hostile_images(inputs / "hostile", example_photos[0])
    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    before = _tree(tmp_path)
    result = _cli(["compress", *map(str, files), "-o", "out", *MODEL, "--batch", "4"], tmp_path)
    errors = {p.name for p in files if f"{p}:" in result.stderr}
    must_fail = [p for p in files if expected[p.name] == "error"]
    _assert_clean_failures(result, "compress", must_fail)
    for path in files:
        written = (tmp_path / "out" / f"{path.stem}.dtic").exists()
        assert written != (path.name in errors), path  # each file: a payload or an error line, never both
        if expected[path.name] == "ok":
            assert written, result.stderr
    assert all(p.startswith("out") for p in _tree(tmp_path) - before)
    print(f"compress: {len(files)} files, {len(errors)} refused: {sorted(errors)}")


def test_decompress_and_info_refuse_forged_payloads(tmp_path, codec, pictures) -> None:
    valid, _, other = codec.encode(pictures)
    payloads = {"valid.dtic": valid, **hostile_payloads(valid, other)}
    folder = tmp_path / "payloads"
    folder.mkdir()
    for name, data in payloads.items():
        (folder / name).write_bytes(data)
    files = [folder / name for name in payloads]
    bad = [p for p in files if p.name != "valid.dtic"]
    before = _tree(tmp_path)
    result = _cli(["decompress", *map(str, files), "-o", "out", *MODEL], tmp_path)
    _assert_clean_failures(result, "decompress", bad)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["valid.png"]
    assert _tree(tmp_path) - before == {"out", "out/valid.png"}
    info = _cli(["info", *map(str, files), "--json"], tmp_path)
    # info reads headers only: forged sizes and models with correct CRCs are described, not decoded
    described = {"valid.dtic", "lying_size.dtic", "other_model.dtic", "swapped_strings.dtic",
                 "other_size_strings.dtic"}  # fmt: skip
    _assert_clean_failures(info, "info", [p for p in files if p.name not in described])
    assert info.stdout.count('"file"') == len(described)


def _restore_video(container: Path, out: Path) -> tuple[int, int]:
    """(exit code, peak traced bytes) of ``ditic restore-video`` in this process."""
    tracemalloc.start()
    try:
        code = main(["restore-video", str(container), "-o", str(out), *MODEL])
        return code, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_restore_video_refuses_forged_containers(tmp_path, codec, pictures, capsys) -> None:
    frames = codec.encode(pictures[:2], quality=codec.qualities[0])
    other = codec.encode(pictures[2:], quality=codec.qualities[0])[0]
    containers = hostile_containers(codec.model_id, codec.qualities[0], frames, other)
    valid = _write(tmp_path / "valid.dticv", containers.pop("valid.dticv"))
    code, _ = _restore_video(valid, tmp_path / "ok.mp4")
    assert code == 0 and (tmp_path / "ok.mp4").stat().st_size > 0, capsys.readouterr().err
    capsys.readouterr()
    for name, data in containers.items():
        out = tmp_path / f"{name}.mp4"
        code, peak = _restore_video(_write(tmp_path / name, data), out)
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("ditic restore-video: error: "), (name, err)
        assert peak < 64 << 20, f"{name}: {peak} bytes traced"  # refused before any frame-sized buffer
        assert not out.exists(), name
    frames_option = main(["restore-video", str(tmp_path / "valid.dticv"), "-o", str(tmp_path / "r.mp4"),
                          "--frames", "0:99999", *MODEL])  # fmt: skip
    assert frames_option == 1 and "--frames" in capsys.readouterr().err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
