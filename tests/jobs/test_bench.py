"""``ditic bench --mode codec`` on the CPU with the tiny ``ditic-test`` config: the rows it writes, the
decode split, and ``--decode-only`` (a second, decode-only codec decodes what the first encoded)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main


@pytest.mark.parametrize("decode_only", [False, True])
def test_codec_bench_writes_rows_with_the_decode_split(tmp_path, decode_only: bool) -> None:
    argv = ["bench", "--mode", "codec", "--model", "ditic-test", "--sizes", "128x128,192x128",
            "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1", "--device", "cpu", "--threads", "1",
            "--out", str(tmp_path)] + (["--decode-only"] if decode_only else [])  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((tmp_path / "bench-codec.json").read_text())
    assert [(r["width"], r["height"], r["batch"]) for r in rows] == [
        (128, 128, 1), (128, 128, 2), (192, 128, 1), (192, 128, 2)
    ]  # fmt: skip
    for r in rows:
        assert r["decode_only"] is decode_only
        assert r["bpp"] > 0 and r["enc_ms_p50"] > 0 and r["dec_ms_p50"] > 0
        assert r["dec_ms_p99"] >= r["dec_ms_p50"] and r["dec_images_s"] > 0
        split = [r.get(k) for k in ("entropy_ms", "heads_dit_ms", "vae_decode_ms", "to_host_ms")]
        if r["batch"] == 1:  # the split is per image, one payload decoded stage by stage
            assert all(v is not None and v > 0 for v in split)
            assert sum(split) < 5 * r["dec_ms_p99"]  # the stages are parts of one decode, not more
        else:
            assert split == [None, None, None, None]
    assert pq.read_table(tmp_path / "bench-codec.parquet").num_rows == 4
    assert all(math.isnan(r["enc_gpu_util_pct"]) and math.isnan(r["dec_gpu_util_pct"]) for r in rows)
    assert all(r["gpu_util_source"] is None for r in rows)  # nothing sampled on the CPU
    assert (tmp_path / "bench-codec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "bench-codec.md").read_text()
    assert "entropy / heads+DiT / DC-AE / to host ms" in table
    assert "| ditic-test | fp32 | 192x128 | 2 |" in table


def test_codec_bench_decodes_the_same_payloads_under_several_budgets(tmp_path) -> None:
    """``--decode-memory-gib 1,default``: one decode row per budget, the same payloads, one process; each
    row says its budget and what the decoding codec's float64 entropy path holds."""
    argv = ["bench", "--mode", "codec", "--model", "ditic-test", "--sizes", "128x128", "--repeats", "1",
            "--warmup", "0", "--device", "cpu", "--threads", "1", "--decode-only", "--eager-encode",
            "--decode-memory-gib", "1,default", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads((tmp_path / "bench-codec.json").read_text())
    budgets = [(r["decode_memory_gib"], r["decode_budget"]) for r in rows]
    assert budgets == [(1.0, "1 GiB"), (None, "default budget")]
    assert rows[0]["bpp"] == rows[1]["bpp"] and all(r["dec_ms_p50"] > 0 for r in rows)
    assert all(r["entropy_path_gib"] > 0 and r["eager_encode"] for r in rows)
    table = (tmp_path / "bench-codec.md").read_text()
    assert "| 128x128 (1 GiB) |" in table and "| 128x128 (default budget) |" in table
    assert main(argv[:-4] + ["--decode-memory-gib", "1,lots", "--out", str(tmp_path)]) != 0


def test_codec_bench_fidelity_compares_the_timed_decode_with_fp32_eager(tmp_path) -> None:
    """``--fidelity``: each row gives its pixels' PSNR against an fp32 eager decode of the same payloads
    and whether the entropy-decoded latents are identical. fp32 is that reference itself (identical
    pixels: +inf dB); bf16 differs from it but stays close; both decode the same latents (float64)."""
    argv = ["bench", "--mode", "codec", "--model", "ditic-test", "--sizes", "128x96", "--dtypes", "fp32,bf16",
            "--batch-sizes", "2", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1",
            "--no-stages", "--fidelity", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    fp32, bf16 = json.loads((tmp_path / "bench-codec.json").read_text())
    assert (fp32["dtype"], bf16["dtype"]) == ("fp32", "bf16")
    assert fp32["fidelity_psnr_db_min"] == float("inf") and fp32["fidelity_latents_exact"] is True
    assert 25.0 < bf16["fidelity_psnr_db_min"] < float("inf") and bf16["fidelity_latents_exact"] is True
    assert bf16["fidelity_psnr_db_mean"] >= bf16["fidelity_psnr_db_min"]
    assert "whole" in bf16["fidelity_reference"]  # the reference's plan: the whole decode fits
    table = (tmp_path / "bench-codec.md").read_text()
    assert "Fidelity:" in table
    assert "ditic-test bf16 128x96 batch 2: PSNR against the fp32 eager decode (" in table


def test_pipeline_bench_scales_over_simulated_gpu_counts(tmp_path) -> None:
    """``--mode pipeline --simulate-gpus 1,2``: one run per count, each on a fresh local Ray declaring
    that many GPUs, with ``--items`` images per GPU; the rows give their rates over the 1-GPU run and
    the table and plot say so. In a child process: the scaling runs shut down and start local Rays,
    which must not touch the Ray other tests in this process share."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": str(repo)}
    argv = [sys.executable, "-m", "jobs.cli", "bench", "--mode", "pipeline", "--model", "ditic-test",
            "--sizes", "96x64", "--batch-sizes", "2", "--items", "6", "--repeats", "1", "--warmup", "0",
            "--simulate-gpus", "1,2", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = json.loads((tmp_path / "bench-pipeline.json").read_text())
    assert (one["gpus"], two["gpus"]) == (1, 2) and (one["simulated_gpus"], two["simulated_gpus"]) == (1, 2)
    assert (one["items"], two["items"]) == (6, 12) and one["ok"] == 6 and two["ok"] == 12
    assert (one["actors"], two["actors"]) == (1, 2)
    assert one["scaling_base_gpus"] == two["scaling_base_gpus"] == 1 and one["scaling_steady"] == 1.0
    assert two["scaling_steady"] == two["steady_images_per_s"] / one["steady_images_per_s"] > 0
    table = (tmp_path / "bench-pipeline.md").read_text()
    assert "| steady × over fewest GPUs |" in table and "(over 1) |" in table
    assert (tmp_path / "bench-pipeline.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--mode", "codec", "--gpus", "1,2"], "--gpus is for --mode pipeline"),
     (["--mode", "pipeline", "--gpus", "1", "--simulate-gpus", "2"], "pick one"),
     (["--mode", "pipeline", "--gpus", "0,1"], "at least 1"),
     (["--mode", "pipeline", "--gpus", "1,two"], "whole numbers")],
)  # fmt: skip
def test_bench_refuses_gpu_counts_it_cannot_run(tmp_path, capsys, extra: list[str], message: str) -> None:
    code = None
    try:
        code = main(["bench", "--model", "ditic-test", "--device", "cpu", "--out", str(tmp_path), *extra])
    except SystemExit as exit_:  # argparse's own refusal of a malformed value
        code = exit_.code
    assert code not in (0, None) and message in capsys.readouterr().err
    assert not (tmp_path / "bench-pipeline.json").exists()
